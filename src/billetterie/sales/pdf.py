"""PDF tickets: one A4 page per ticket with its QR code (reportlab, QR by segno).

``render_tickets(tickets, language=...)`` takes :class:`TicketView` values the sales context
fills in (names already in the buyer's language, the performance start with the organization's
time zone) and answers the PDF's bytes. Labels exist in English, French and German; another
language falls back to English. The QR code is drawn as vector squares, 60 mm wide with the
four-module quiet zone, at error correction M; the barcode's text is printed under it.

Text uses DejaVu Sans when the system has it (Debian's fonts-dejavu), else the Bitstream Vera
font reportlab ships; both are embedded, so the text can be extracted and searched.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import segno
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

QR_SIZE = 60 * mm
QR_BORDER = 4  # modules of quiet zone (ISO/IEC 18004)

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "ticket": "Ticket",
        "date": "Date",
        "venue": "Venue",
        "seat": "Seat",
        "unnumbered": "Unnumbered",
        "area": "Area",
        "block": "Block",
        "row": "Row",
        "place": "Seat",
        "category": "Category",
        "tariff": "Tariff",
        "price": "Price",
        "holder": "Holder",
        "order": "Order",
        "number": "Ticket no.",
        "notice": "Show this code at the entrance. Each code opens the door once.",
    },
    "fr": {
        "ticket": "Billet",
        "date": "Date",
        "venue": "Lieu",
        "seat": "Place",
        "unnumbered": "Placement libre",
        "area": "Zone",
        "block": "Bloc",
        "row": "Rang",
        "place": "Siège",
        "category": "Catégorie",
        "tariff": "Tarif",
        "price": "Prix",
        "holder": "Titulaire",
        "order": "Commande",
        "number": "N° de billet",
        "notice": "Présentez ce code à l'entrée. Chaque code n'ouvre la porte qu'une fois.",
    },
    "de": {
        "ticket": "Eintrittskarte",
        "date": "Datum",
        "venue": "Ort",
        "seat": "Platz",
        "unnumbered": "Freie Platzwahl",
        "area": "Bereich",
        "block": "Block",
        "row": "Reihe",
        "place": "Platz",
        "category": "Kategorie",
        "tariff": "Tarif",
        "price": "Preis",
        "holder": "Inhaber",
        "order": "Bestellung",
        "number": "Ticket-Nr.",
        "notice": "Zeigen Sie diesen Code am Eingang. Jeder Code öffnet die Tür nur einmal.",
    },
}
DAYS = {
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "fr": ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"],
    "de": ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"],
}
MONTHS = {
    "en": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "fr": [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ],
    "de": [
        "Januar",
        "Februar",
        "März",
        "April",
        "Mai",
        "Juni",
        "Juli",
        "August",
        "September",
        "Oktober",
        "November",
        "Dezember",
    ],
}


@dataclass(frozen=True)
class TicketView:
    """What one printed ticket shows. Names are already in the ticket's language.

    ``performance_start`` is timezone-aware (None for tickets without a performance, such as
    passes); it is printed in ``time_zone`` (the organization's IANA zone). Seat fields left
    None print "unnumbered". ``price`` is in thousandths of ``currency``.
    """

    institution_name: str
    organization_name: str
    product_name: str
    performance_start: datetime | None
    time_zone: str
    venue_name: str | None
    space_name: str | None
    area: str | None
    block: str | None
    row: str | None
    seat: str | None
    seat_category: str
    tariff_name: str
    price: int
    currency: str
    order_id: int
    ticket_id: int
    holder_name: str | None
    barcode: str

    @property
    def numbered(self) -> bool:
        return any(part for part in (self.area, self.block, self.row, self.seat))


def _fonts() -> tuple[str, str]:
    """Register (once) and name the regular and bold fonts."""
    if "TicketSans" not in pdfmetrics.getRegisteredFontNames():
        dejavu = Path("/usr/share/fonts/truetype/dejavu")
        regular, bold = dejavu / "DejaVuSans.ttf", dejavu / "DejaVuSans-Bold.ttf"
        if not (regular.exists() and bold.exists()):
            import reportlab

            bundled = Path(reportlab.__file__).parent / "fonts"
            regular, bold = bundled / "Vera.ttf", bundled / "VeraBd.ttf"
        pdfmetrics.registerFont(TTFont("TicketSans", str(regular)))
        pdfmetrics.registerFont(TTFont("TicketSans-Bold", str(bold)))
    return "TicketSans", "TicketSans-Bold"


def format_date(value: datetime, time_zone: str, language: str) -> str:
    """A performance start in the organization's zone, spelled for ``language``."""
    try:
        local = value.astimezone(ZoneInfo(time_zone))
    except (ZoneInfoNotFoundError, ValueError):
        local = value
    day, month = DAYS[language][local.weekday()], MONTHS[language][local.month - 1]
    clock = local.strftime("%H:%M")
    zone = local.strftime("%Z")
    if language == "de":
        return f"{day}, {local.day}. {month} {local.year}, {clock} {zone}"
    return f"{day} {local.day} {month} {local.year}, {clock} {zone}"


def format_price(amount: int, currency: str, language: str) -> str:
    """Thousandths as a price: two decimals (three when the amount needs them)."""
    value = Decimal(amount) / 1000
    places = Decimal("0.001") if amount % 10 else Decimal("0.01")
    text = str(value.quantize(places, rounding=ROUND_HALF_UP))
    if language in {"fr", "de"}:
        text = text.replace(".", ",")
    return f"{text} {currency}"


def _seat_lines(ticket: TicketView, labels: dict[str, str]) -> str:
    if not ticket.numbered:
        return labels["unnumbered"]
    parts = [
        f"{labels[key]} {value}"
        for key, value in (
            ("area", ticket.area),
            ("block", ticket.block),
            ("row", ticket.row),
            ("place", ticket.seat),
        )
        if value
    ]
    return ", ".join(parts)


def _draw_qr(canvas: Canvas, code: str, x: float, y: float, size: float) -> None:
    """The QR code of ``code`` with its quiet zone, ``size`` wide, lower-left at (x, y)."""
    qr = segno.make(code, error="m")
    matrix = qr.matrix
    modules = len(matrix) + 2 * QR_BORDER
    unit = size / modules
    canvas.setFillColorRGB(1, 1, 1)
    canvas.rect(x, y, size, size, stroke=0, fill=1)
    canvas.setFillColorRGB(0, 0, 0)
    for r, line in enumerate(matrix):
        top = y + size - (r + QR_BORDER + 1) * unit
        c = 0
        while c < len(line):  # one rectangle per run of dark modules
            if not line[c]:
                c += 1
                continue
            start = c
            while c < len(line) and line[c]:
                c += 1
            canvas.rect(x + (start + QR_BORDER) * unit, top, (c - start) * unit, unit, 0, 1)


def _wrap(text: str, width: int) -> list[str]:
    return [text[i : i + width] for i in range(0, len(text), width)] or [""]


def _page(canvas: Canvas, ticket: TicketView, language: str) -> None:
    regular, bold = _fonts()
    labels = LABELS[language]
    width, height = A4
    left, top = 20 * mm, height - 22 * mm

    canvas.setFont(regular, 10)
    canvas.drawString(left, top, f"{ticket.institution_name} · {ticket.organization_name}")
    canvas.setFont(bold, 11)
    canvas.drawRightString(width - left, top, labels["ticket"])
    canvas.setFont(bold, 20)
    canvas.drawString(left, top - 14 * mm, ticket.product_name[:60])

    rows: list[tuple[str, str]] = []
    if ticket.performance_start is not None:
        rows.append(
            (labels["date"], format_date(ticket.performance_start, ticket.time_zone, language))
        )
    venue = ", ".join(part for part in (ticket.venue_name, ticket.space_name) if part)
    if venue:
        rows.append((labels["venue"], venue))
    rows += [
        (labels["seat"], _seat_lines(ticket, labels)),
        (labels["category"], ticket.seat_category),
        (labels["tariff"], ticket.tariff_name),
        (labels["price"], format_price(ticket.price, ticket.currency, language)),
    ]
    if ticket.holder_name:
        rows.append((labels["holder"], ticket.holder_name))
    rows += [(labels["order"], str(ticket.order_id)), (labels["number"], str(ticket.ticket_id))]

    y = top - 30 * mm
    for label, value in rows:
        canvas.setFont(regular, 9)
        canvas.setFillColorRGB(0.35, 0.35, 0.35)
        canvas.drawString(left, y, label)
        canvas.setFillColorRGB(0, 0, 0)
        canvas.setFont(bold, 12)
        canvas.drawString(left + 32 * mm, y, value[:70])
        y -= 9 * mm

    qr_x, qr_y = (width - QR_SIZE) / 2, y - QR_SIZE - 6 * mm
    _draw_qr(canvas, ticket.barcode, qr_x, qr_y, QR_SIZE)
    canvas.setFont("Courier", 7)
    line_y = qr_y - 4 * mm
    for line in _wrap(ticket.barcode, 56):
        canvas.drawCentredString(width / 2, line_y, line)
        line_y -= 3.2 * mm
    canvas.setFont(regular, 9)
    canvas.drawCentredString(width / 2, line_y - 4 * mm, labels["notice"])
    canvas.setDash(3, 3)
    canvas.line(left, 18 * mm, width - left, 18 * mm)


def render_tickets(tickets: Sequence[TicketView], *, language: str) -> bytes:
    """A PDF with one page per ticket, in order, labelled in ``language`` (en, fr or de;
    others fall back to en). Pure: no database, no clock. Raises ``ValueError`` when
    ``tickets`` is empty."""
    if not tickets:
        raise ValueError("no tickets to render")
    language = language.lower()[:2]
    if language not in LABELS:
        language = "en"
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, pageCompression=1, invariant=True)
    canvas.setTitle(f"{LABELS[language]['ticket']} {tickets[0].order_id}")
    canvas.setCreator("billetterie")
    for ticket in tickets:
        _page(canvas, ticket, language)
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()
