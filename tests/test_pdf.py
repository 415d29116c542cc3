"""PDF tickets: one page per ticket, the QR decodes back to exactly the barcode (pypdfium2
renders, pyzbar decodes), and the printed text is in the ticket's language."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pypdfium2 as pdfium
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyzbar import pyzbar

from billetterie.sales.barcodes import BarcodePayload, issue, verify
from billetterie.sales.pdf import TicketView, format_date, format_price, render_tickets

KEY = Ed25519PrivateKey.generate()
START = datetime(2027, 1, 1, 19, 0, tzinfo=UTC)  # 20:00 in Zurich


def code(ticket_id: int) -> str:
    return issue(
        BarcodePayload(
            key_id=1,
            institution_id=2,
            ticket_id=ticket_id,
            performance_id=30,
            issued_at=START - timedelta(days=30),
            valid_until=START + timedelta(hours=6),
        ),
        KEY,
    )


def view(ticket_id: int = 1001, **changes: object) -> TicketView:
    base = TicketView(
        institution_name="Opéra de Lausanne",
        organization_name="Saison lyrique",
        product_name="La Traviata",
        performance_start=START,
        time_zone="Europe/Zurich",
        venue_name="Grand Théâtre",
        space_name="Main hall",
        area="Parterre",
        block="A",
        row="3",
        seat="12",
        seat_category="Cat. 1",
        tariff_name="Plein tarif",
        price=85500,
        currency="CHF",
        order_id=555,
        ticket_id=ticket_id,
        holder_name="Zoë Müller",
        barcode=code(ticket_id),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def pages(pdf: bytes) -> list[pdfium.PdfPage]:
    document = pdfium.PdfDocument(pdf)
    return [document[i] for i in range(len(document))]


def decoded_qr(page: pdfium.PdfPage) -> list[str]:
    """The QR codes on the page. Only QR codes are looked for: zbar's linear symbologies can
    read a short code into the printed text or the artwork (a ``B50B`` was seen once)."""
    image = page.render(scale=2).to_pil()
    found = pyzbar.decode(image, symbols=[pyzbar.ZBarSymbol.QRCODE])
    return [symbol.data.decode("ascii") for symbol in found]


def text_of(page: pdfium.PdfPage) -> str:
    text: str = page.get_textpage().get_text_range()
    return " ".join(text.split())


def test_one_page_per_ticket_and_each_qr_decodes_to_its_barcode() -> None:
    tickets = [view(1001), view(1002, area=None, block=None, row=None, seat=None), view(1003)]
    pdf = render_tickets(tickets, language="en")
    assert pdf.startswith(b"%PDF-")
    rendered = pages(pdf)
    assert len(rendered) == 3
    for page, ticket in zip(rendered, tickets, strict=True):
        assert decoded_qr(page) == [ticket.barcode]
        # and the decoded code is still a valid, signed barcode of that ticket
        payload = verify(decoded_qr(page)[0], {1: KEY.public_key()}, START)
        assert payload.ticket_id == ticket.ticket_id


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        (
            "en",
            [
                "Ticket",
                "Friday 1 January 2027, 20:00 CET",
                "Venue Grand Théâtre, Main hall",
                "Seat Area Parterre, Block A, Row 3, Seat 12",
                "Category Cat. 1",
                "Tariff Plein tarif",
                "Price 85.50 CHF",
                "Holder Zoë Müller",
                "Order 555",
                "Ticket no. 1001",
            ],
        ),
        (
            "fr",
            [
                "Billet",
                "vendredi 1 janvier 2027, 20:00 CET",
                "Lieu Grand Théâtre, Main hall",
                "Place Zone Parterre, Bloc A, Rang 3, Siège 12",
                "Catégorie Cat. 1",
                "Prix 85,50 CHF",
                "Titulaire Zoë Müller",
                "Commande 555",
                "N° de billet 1001",
            ],
        ),
        (
            "de",
            [
                "Eintrittskarte",
                "Freitag, 1. Januar 2027, 20:00 CET",
                "Ort Grand Théâtre, Main hall",
                "Platz Bereich Parterre, Block A, Reihe 3, Platz 12",
                "Kategorie Cat. 1",
                "Preis 85,50 CHF",
                "Inhaber Zoë Müller",
                "Bestellung 555",
                "Ticket-Nr. 1001",
            ],
        ),
    ],
)
def test_text_is_in_the_language(language: str, expected: list[str]) -> None:
    text = text_of(pages(render_tickets([view()], language=language))[0])
    for fragment in expected:
        assert fragment in text, (fragment, text)
    assert "Opéra de Lausanne" in text and "La Traviata" in text


@pytest.mark.parametrize(
    ("language", "word"),
    [("en", "Unnumbered"), ("fr", "Placement libre"), ("de", "Freie Platzwahl")],
)
def test_unnumbered_tickets_say_so(language: str, word: str) -> None:
    ticket = view(area=None, block=None, row=None, seat=None, holder_name=None)
    text = text_of(pages(render_tickets([ticket], language=language))[0])
    assert word in text
    assert "Zoë" not in text


def test_passes_without_performance_or_venue_render() -> None:
    ticket = view(
        performance_start=None,
        venue_name=None,
        space_name=None,
        area=None,
        block=None,
        row=None,
        seat=None,
    )
    page = pages(render_tickets([ticket], language="en"))[0]
    text = text_of(page)
    assert "Date" not in text and "Venue" not in text
    assert decoded_qr(page) == [ticket.barcode]


def test_unknown_language_falls_back_to_english_and_empty_input_is_refused() -> None:
    text = text_of(pages(render_tickets([view()], language="it"))[0])
    assert "Ticket no. 1001" in text
    with pytest.raises(ValueError, match="no tickets"):
        render_tickets([], language="en")


def test_rendering_is_deterministic() -> None:
    tickets = [view(1001)]
    assert render_tickets(tickets, language="fr") == render_tickets(tickets, language="fr")


@pytest.mark.parametrize(
    ("amount", "language", "expected"),
    [
        (4000, "en", "4.00 EUR"),
        (25500, "fr", "25,50 EUR"),
        (1, "de", "0,001 EUR"),
        (0, "en", "0.00 EUR"),
    ],
)
def test_prices(amount: int, language: str, expected: str) -> None:
    assert format_price(amount, "EUR", language) == expected


def test_dates_follow_the_organization_zone() -> None:
    summer = datetime(2027, 7, 14, 18, 30, tzinfo=UTC)
    assert format_date(summer, "Europe/Paris", "fr") == "mercredi 14 juillet 2027, 20:30 CEST"
    assert format_date(summer, "America/New_York", "en") == "Wednesday 14 July 2027, 14:30 EDT"
