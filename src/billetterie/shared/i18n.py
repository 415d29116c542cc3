"""Words of the web pages in English, French and German, and the language a page speaks.

A page's words live in a table of its context (``shop.i18n``, ``identity.i18n``): key ->
(English, French, German). The language is the visitor's choice (``?lang=``, kept in the
``bt_lang`` cookie), one of the point of sale's languages, else the point of sale's first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

LANGUAGES = ("en", "fr", "de")
LANG_COOKIE = "bt_lang"

Words = Mapping[str, tuple[str, str, str]]


def lookup(words: Words, key: str, language: str) -> str:
    """The word in ``language`` (English for a language without words); the key itself when
    the table has no such word."""
    texts = words.get(key)
    if texts is None:
        return key
    index = LANGUAGES.index(language) if language in LANGUAGES else 0
    return texts[index]


def localized(value: Any, language: str) -> str:
    """A wire translation object (or a plain mapping) in ``language``, else English, else the
    first text there is."""
    if not value:
        return ""
    if isinstance(value, dict) and "translations" in value:
        texts = {t["locale"]: t["value"] for t in value["translations"]}
    elif isinstance(value, dict):
        texts = value
    else:
        return str(value)
    for lang in (language, "en"):
        if texts.get(lang):
            return str(texts[lang])
    return str(next(iter(texts.values()), ""))


def choose_language(allowed: Sequence[str], asked: str | None, kept: str | None) -> str:
    """``asked`` (``?lang=``) if offered, else ``kept`` (the cookie) if offered, else the first
    language offered (English when none is)."""
    offered = list(allowed) or ["en"]
    if asked is not None and asked in offered:
        return asked
    if kept is not None and kept in offered:
        return kept
    return offered[0]


# What a refusal means to a visitor, by its stable code, in French and German; English pages
# show the refusal's own detail, which says more.
ERRORS: Words = {
    "error.order.availability": (
        "Not enough places left.",
        "Il ne reste pas assez de places.",
        "Es sind nicht mehr genug Plätze frei.",
    ),
    "error.order.expired": (
        "Your cart has expired.",
        "Votre panier a expiré.",
        "Ihr Warenkorb ist abgelaufen.",
    ),
    "error.order.not_running": (
        "This order can no longer change.",
        "Cette commande ne peut plus être modifiée.",
        "Diese Bestellung kann nicht mehr geändert werden.",
    ),
    "error.order.not_on_sale": (
        "This is not on sale now.",
        "Ce produit n'est pas en vente actuellement.",
        "Dieses Angebot ist derzeit nicht im Verkauf.",
    ),
    "error.order.too_many_seats": (
        "Too many seats for one order.",
        "Trop de places pour une seule commande.",
        "Zu viele Plätze für eine Bestellung.",
    ),
    "error.order.contact_required": (
        "Sign in to buy this.",
        "Connectez-vous pour acheter ce produit.",
        "Melden Sie sich an, um dies zu kaufen.",
    ),
    "error.order.unknown_product": (
        "This product does not exist.",
        "Ce produit n'existe pas.",
        "Dieses Angebot gibt es nicht.",
    ),
    "error.payment.insufficient_funds": (
        "Not enough left on this voucher or balance, or it has expired.",
        "Solde insuffisant sur ce bon ou ce compte, ou il a expiré.",
        "Nicht genug Guthaben auf diesem Gutschein oder Konto, oder es ist abgelaufen.",
    ),
    "error.payment.wrong_total": (
        "The total has changed: please choose how to pay again.",
        "Le total a changé : choisissez à nouveau comment payer.",
        "Der Gesamtbetrag hat sich geändert: bitte wählen Sie erneut, wie Sie bezahlen.",
    ),
    "error.payment.unknown_account": (
        "Unknown voucher code.",
        "Code de bon inconnu.",
        "Unbekannter Gutscheincode.",
    ),
    "error.payment.method_not_allowed": (
        "This payment method is not accepted here.",
        "Ce moyen de paiement n'est pas accepté ici.",
        "Diese Zahlungsart wird hier nicht angenommen.",
    ),
    "error.inventory.busy": (
        "Many people are buying right now; try again in a moment.",
        "Beaucoup d'achats en cours ; réessayez dans un instant.",
        "Gerade kaufen sehr viele; versuchen Sie es gleich noch einmal.",
    ),
    "error.shop.sold_out": ("Sold out.", "Complet.", "Ausverkauft."),
    "error.shop.not_on_sale": (
        "This is not on sale now.",
        "Ce produit n'est pas en vente actuellement.",
        "Dieses Angebot ist derzeit nicht im Verkauf.",
    ),
    "error.shop.unknown_product": (
        "This product does not exist.",
        "Ce produit n'existe pas.",
        "Dieses Angebot gibt es nicht.",
    ),
    "error.shop.unknown_performance": (
        "This date does not exist.",
        "Cette date n'existe pas.",
        "Diesen Termin gibt es nicht.",
    ),
    "error.shop.bad_choice": (
        "Please check your choice.",
        "Veuillez vérifier votre choix.",
        "Bitte prüfen Sie Ihre Auswahl.",
    ),
    "error.shop.applied_twice": (
        "This voucher or your credit balance is applied already.",
        "Ce bon ou votre avoir est déjà déduit.",
        "Dieser Gutschein oder Ihr Guthaben ist bereits angerechnet.",
    ),
    "error.shop.no_cart": (
        "Your cart is empty.",
        "Votre panier est vide.",
        "Ihr Warenkorb ist leer.",
    ),
    "error.shop.sign_in_required": (
        "Please sign in first.",
        "Veuillez d'abord vous connecter.",
        "Bitte melden Sie sich zuerst an.",
    ),
    "error.shop.queue": (
        "Please wait for your turn in the queue.",
        "Veuillez attendre votre tour dans la file.",
        "Bitte warten Sie in der Warteschlange, bis Sie an der Reihe sind.",
    ),
    "error.shop.rate_limited": (
        "Too many requests; try again in a moment.",
        "Trop de requêtes ; réessayez dans un instant.",
        "Zu viele Anfragen; versuchen Sie es gleich noch einmal.",
    ),
    "error.account.csrf": (
        "This form has expired; please send it again.",
        "Ce formulaire a expiré ; veuillez le renvoyer.",
        "Dieses Formular ist abgelaufen; bitte senden Sie es erneut.",
    ),
}


def explained(code: str, detail: str, language: str) -> str:
    """What a refusal says on a page in ``language``: its own detail in English (or when no
    translation is known), the translation of its code otherwise."""
    if language == LANGUAGES[0] or code not in ERRORS:
        return detail
    return lookup(ERRORS, code, language)
