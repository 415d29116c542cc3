"""The shop's own words in English, French and German (catalog texts come translated)."""

from __future__ import annotations

from billetterie.shared.i18n import LANGUAGES, localized, lookup

__all__ = ["LANGUAGES", "WORDS", "localized", "word"]

WORDS: dict[str, tuple[str, str, str]] = {
    "catalog": ("What's on", "Programme", "Programm"),
    "all": ("All", "Tout", "Alle"),
    "search": ("Search", "Rechercher", "Suchen"),
    "search_results": ("Search results", "Résultats de la recherche", "Suchergebnisse"),
    "nothing_found": ("Nothing matches.", "Aucun résultat.", "Keine Treffer."),
    "cart": ("Cart", "Panier", "Warenkorb"),
    "account": ("My account", "Mon compte", "Mein Konto"),
    "book": ("Book", "Réserver", "Buchen"),
    "dates": ("Dates", "Dates", "Termine"),
    "prices": ("Prices", "Tarifs", "Preise"),
    "from": ("from", "dès", "ab"),
    "available": ("Available", "Disponible", "Verfügbar"),
    "limited": ("Few places left", "Bientôt complet", "Wenige Plätze frei"),
    "sold_out": ("Sold out", "Complet", "Ausverkauft"),
    "choose_seats": ("Choose your seats", "Choisissez vos places", "Plätze wählen"),
    "best_available": ("Best available", "Meilleures places", "Beste verfügbare Plätze"),
    "seat_map": ("Seat map", "Plan de salle", "Saalplan"),
    "choose_block": (
        "Choose a block, then your seats.",
        "Choisissez un bloc, puis vos places.",
        "Wählen Sie einen Block, dann Ihre Plätze.",
    ),
    "block": ("Block", "Bloc", "Block"),
    "category": ("Category", "Catégorie", "Kategorie"),
    "tariff": ("Tariff", "Tarif", "Tarif"),
    "quantity": ("Quantity", "Quantité", "Anzahl"),
    "add_to_cart": ("Add to cart", "Ajouter au panier", "In den Warenkorb"),
    "timeslot": ("Time slot", "Créneau", "Zeitfenster"),
    "selected_seats": ("Selected seats", "Places choisies", "Gewählte Plätze"),
    "free": ("free", "libre", "frei"),
    "taken": ("taken", "occupée", "belegt"),
    "your_cart": ("Your cart", "Votre panier", "Ihr Warenkorb"),
    "empty_cart": ("Your cart is empty.", "Votre panier est vide.", "Ihr Warenkorb ist leer."),
    "expires_in": (
        "Your places are held for",
        "Vos places sont réservées pendant",
        "Ihre Plätze sind reserviert für",
    ),
    "expired": (
        "Your cart has expired: its places were released.",
        "Votre panier a expiré : ses places ont été libérées.",
        "Ihr Warenkorb ist abgelaufen: die Plätze wurden freigegeben.",
    ),
    "remove": ("Remove", "Retirer", "Entfernen"),
    "total": ("Total", "Total", "Summe"),
    "checkout": ("Checkout", "Commander", "Zur Kasse"),
    "continue_shopping": ("Continue shopping", "Continuer mes achats", "Weiter einkaufen"),
    "sign_in": ("Sign in", "Se connecter", "Anmelden"),
    "register": ("Create an account", "Créer un compte", "Konto erstellen"),
    "guest": ("Continue as a guest", "Continuer sans compte", "Als Gast fortfahren"),
    "first_name": ("First name", "Prénom", "Vorname"),
    "last_name": ("Last name", "Nom", "Nachname"),
    "email": ("Email", "Courriel", "E-Mail"),
    "continue": ("Continue", "Continuer", "Weiter"),
    "payment": ("Payment", "Paiement", "Zahlung"),
    "pay_card": ("Pay by card", "Payer par carte", "Mit Karte bezahlen"),
    "pay_voucher": (
        "Pay with a gift voucher",
        "Payer avec un bon cadeau",
        "Mit Geschenkgutschein bezahlen",
    ),
    "voucher_code": ("Voucher code", "Code du bon", "Gutscheincode"),
    "pay_credit": (
        "Pay with my credit balance",
        "Payer avec mon avoir",
        "Mit meinem Guthaben bezahlen",
    ),
    "voucher_rest": (
        "A voucher worth less than the total pays its part; you pay the rest with another "
        "voucher or by card.",
        "Un bon d'un montant inférieur au total en paie une partie ; vous payez le reste avec un "
        "autre bon ou par carte.",
        "Ein Gutschein unter dem Gesamtbetrag zahlt seinen Teil; den Rest zahlen Sie mit einem "
        "weiteren Gutschein oder mit Karte.",
    ),
    "another_voucher": (
        "Apply another gift voucher",
        "Utiliser un autre bon cadeau",
        "Weiteren Geschenkgutschein einlösen",
    ),
    "use_credit": (
        "Use my credit balance, pay the rest by card",
        "Utiliser mon avoir, payer le reste par carte",
        "Mein Guthaben verwenden, den Rest mit Karte bezahlen",
    ),
    "voucher_applied": (
        "Gift voucher applied",
        "Bon cadeau déduit",
        "Geschenkgutschein angerechnet",
    ),
    "credit_applied": ("Credit balance applied", "Avoir déduit", "Guthaben angerechnet"),
    "rest_to_pay": ("Left to pay", "Reste à payer", "Restbetrag"),
    "pay_rest_card": (
        "Pay the rest by card",
        "Payer le reste par carte",
        "Den Rest mit Karte bezahlen",
    ),
    "confirm_free": ("Confirm the order", "Confirmer la commande", "Bestellung bestätigen"),
    "buyer": ("Buyer", "Acheteur", "Käufer"),
    "confirmation": ("Thank you!", "Merci !", "Vielen Dank!"),
    "order_closed": (
        "Your order is confirmed.",
        "Votre commande est confirmée.",
        "Ihre Bestellung ist bestätigt.",
    ),
    "order_waiting": (
        "Your payment is being confirmed…",
        "Votre paiement est en cours de confirmation…",
        "Ihre Zahlung wird bestätigt…",
    ),
    "order_state": ("Order", "Commande", "Bestellung"),
    "download_tickets": (
        "Download your tickets (PDF)",
        "Télécharger vos billets (PDF)",
        "Tickets herunterladen (PDF)",
    ),
    "my_orders": ("My orders", "Mes commandes", "Meine Bestellungen"),
    "my_tickets": ("My tickets", "Mes billets", "Meine Tickets"),
    "profile": ("My profile", "Mon profil", "Mein Profil"),
    "password": ("Password", "Mot de passe", "Passwort"),
    "current_password": ("Current password", "Mot de passe actuel", "Aktuelles Passwort"),
    "new_password": ("New password", "Nouveau mot de passe", "Neues Passwort"),
    "save": ("Save", "Enregistrer", "Speichern"),
    "saved": ("Saved.", "Enregistré.", "Gespeichert."),
    "no_orders": ("No orders yet.", "Aucune commande pour l'instant.", "Noch keine Bestellungen."),
    "terms": ("Terms of sale", "Conditions générales de vente", "AGB"),
    "privacy": ("Privacy", "Confidentialité", "Datenschutz"),
    "help": ("Help", "Aide", "Hilfe"),
    "contact": ("Contact us", "Nous contacter", "Kontakt"),
    "home": ("Website", "Site web", "Website"),
    "more_on_website": (
        "More on our website",
        "En savoir plus sur notre site",
        "Mehr auf unserer Website",
    ),
    "not_available": ("Not available", "Indisponible", "Nicht verfügbar"),
    "back_to_catalog": ("Back to the programme", "Retour au programme", "Zurück zum Programm"),
    "performance": ("Performance", "Séance", "Vorstellung"),
    "seat": ("Seat", "Place", "Platz"),
    "row": ("Row", "Rang", "Reihe"),
    "language": ("Language", "Langue", "Sprache"),
    "problem": ("Something is not right", "Un problème est survenu", "Etwas stimmt nicht"),
    "minutes": ("min", "min", "Min."),
    "pay_on_page": ("Review and pay", "Vérifier et payer", "Prüfen und bezahlen"),
    "credit_balance": ("Your credit balance", "Votre avoir", "Ihr Guthaben"),
    "card_pending": (
        "A card payment was started for this cart and is not finished.",
        "Un paiement par carte a été commencé pour ce panier et n'est pas terminé.",
        "Eine Kartenzahlung für diesen Warenkorb wurde begonnen und ist nicht abgeschlossen.",
    ),
    "back_to_card": (
        "Back to the card payment",
        "Revenir au paiement par carte",
        "Zurück zur Kartenzahlung",
    ),
    "queue_title": ("Waiting room", "Salle d'attente", "Warteraum"),
    "queue_opens": (
        "The sale opens at {time}.",
        "La vente ouvre le {time}.",
        "Der Verkauf beginnt am {time}.",
    ),
    "queue_draw": (
        "Keep this page open: at the opening, everyone waiting here is let in in an order drawn "
        "at random, so arriving early gives no advantage.",
        "Gardez cette page ouverte : à l'ouverture, chacun ici entre dans un ordre tiré au sort ;"
        " arriver tôt ne donne aucun avantage.",
        "Lassen Sie diese Seite offen: Zur Öffnung werden alle Wartenden in ausgeloster "
        "Reihenfolge eingelassen; früh da zu sein bringt keinen Vorteil.",
    ),
    "queue_position": (
        "Your place in the queue: {position}",
        "Votre place dans la file : {position}",
        "Ihr Platz in der Warteschlange: {position}",
    ),
    "queue_wait": (
        "About {minutes} min to wait.",
        "Environ {minutes} min d'attente.",
        "Etwa {minutes} Min. Wartezeit.",
    ),
    "queue_refresh": (
        "This page refreshes by itself; you will be taken to the product when it is your turn.",
        "Cette page se met à jour toute seule ; vous serez conduit au produit à votre tour.",
        "Diese Seite aktualisiert sich selbst; Sie werden zu Ihrer Zeit zum Angebot geleitet.",
    ),
    "give_up_card": (
        "Give up the card payment and pay another way",
        "Abandonner le paiement par carte et payer autrement",
        "Kartenzahlung abbrechen und anders bezahlen",
    ),
}


def word(key: str, language: str) -> str:
    return lookup(WORDS, key, language)
