"""What the box office sends the wallet of a ticket: the event parts shared by a performance's
tickets are built once per run, and a ticket whose labels differ gets its own."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from billetterie.catalog.services import ProductRef
from billetterie.printing.documents import EventCache, ticket_document
from billetterie.sales.tickets import PrintableTicket
from tests.conftest import NOW

PRODUCT = ProductRef(
    id=1,
    code="SHOW",
    family="SINGLE_ENTRY",
    name={"en": "Show"},
    season_start=NOW,
    season_end=NOW + timedelta(days=200),
)


def printable(ticket_id: int, performance_id: int | None = 7, **labels: Any) -> PrintableTicket:
    return PrintableTicket(
        id=ticket_id,
        order_id=100 + ticket_id,
        product_id=1,
        performance_id=performance_id,
        barcode=f"CODE{ticket_id}",
        state="NOT_PRINTED",
        issued_at=NOW + timedelta(minutes=ticket_id),
        amount=4500,
        currency="CHF",
        labels={
            "product": {"en": "Show", "fr": "Spectacle"},
            "start": (NOW + timedelta(days=10)).isoformat(),
            "duration": 7200,
            "venue": {"en": "Hall"},
            "address": {"city": "Genève", "zip": "1204", "countryCode": "CH"},
            "row": str(ticket_id),
            "number": "4",
            **labels,
        },
        holder={},
        purchaser={"firstName": "Ada", "lastName": "L", "email": f"ada{ticket_id}@example.org"},
        contact_number=None,
        language="fr",
    )


def test_cached_documents_equal_the_documents_built_alone() -> None:
    tickets = [
        printable(1),
        printable(2),
        printable(3, start=(NOW + timedelta(days=11)).isoformat()),  # another start
        printable(4, start="not a time"),  # falls back on its issue time
        printable(5, start="not a time"),
        printable(6, performance_id=None, end=(NOW + timedelta(days=30)).isoformat()),
        printable(7, venue={"en": "Other hall"}),
        printable(8, address={"city": "Lausanne", "countryCode": "ch"}),
    ]
    cache = EventCache()
    cached = [ticket_document(t, PRODUCT, cache) for t in tickets]
    assert cached == [ticket_document(t, PRODUCT) for t in tickets]
    events = [d["event"] for d in cached]
    assert events[0] is events[1]  # built once for the performance
    assert len({id(e) for e in events}) == 7
    assert events[0]["name"] == "Spectacle" and events[0]["address"]["site"] == "Hall"
    assert events[3]["startTime"] == tickets[3].issued_at.isoformat()
    assert events[4]["startTime"] == tickets[4].issued_at.isoformat()
    assert events[5]["id"] == "PROD-SHOW"
    assert "countryCode" not in events[7]["address"]  # not two upper-case letters
    assert [d["purchaseDetails"]["seat"]["row"] for d in cached] == [str(i) for i in range(1, 9)]
    assert [d["spectatorDetails"]["email"] for d in cached] == [
        f"ada{i}@example.org" for i in range(1, 9)
    ]
