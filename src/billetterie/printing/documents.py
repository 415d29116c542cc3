"""What the wallet is sent of a ticket or a card (docs/printing.md, "What a ticket is sent";
docs/wallet/organizer-api.md for the fields)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import orjson

from billetterie.catalog.services import ProductRef
from billetterie.sales.tickets import PrintableTicket
from billetterie.shared.text import pick

ACTIVATION_LEAD = timedelta(hours=3)  # rotating codes from three hours before the start
COUNTRY = re.compile(r"^[A-Z]{2}$")


def spectator(ticket: PrintableTicket) -> dict[str, Any]:
    """The holder when named with an email, else the order's purchaser."""
    person = ticket.holder if ticket.holder.get("email") else ticket.purchaser
    return {
        k: str(person[name])[:100]
        for k, name in (("firstName", "firstName"), ("lastName", "lastName"), ("email", "email"))
        if person.get(name)
    }


def _aware(value: Any) -> datetime | None:
    """An ISO-8601 time with an offset, else None."""
    if value and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is not None:
            return parsed
    return None


def _iso(value: str | None, fallback: datetime) -> datetime:
    return _aware(value) or fallback


EventParts = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]
EVENT_LABELS = ("start", "duration", "end", "address", "venue", "product", "performanceCode")


def _event_parts(ticket: PrintableTicket, product: ProductRef, language: str) -> EventParts:
    """The event, activation parameters and transfer rules of a ticket: what every ticket of
    one performance shares."""
    labels = ticket.labels
    start = _iso(labels.get("start"), ticket.issued_at)
    if ticket.performance_id is not None:
        event_id = f"PERF-{ticket.performance_id}"
        end = start + timedelta(seconds=int(labels.get("duration") or 0))
    else:
        event_id = f"PROD-{product.code}"
        end = _iso(labels.get("end"), product.season_end)
    address = labels.get("address") or {}
    place = {
        "site": pick(labels.get("venue"), language) or None,
        "city": address.get("city"),
        "zip": address.get("zip"),
        "countryCode": address.get("countryCode")
        if COUNTRY.match(str(address.get("countryCode") or ""))
        else None,
    }
    event: dict[str, Any] = {
        "id": event_id,
        "name": (pick(labels.get("product"), language) or product.code)[:300],
        "startTime": start.isoformat(),
        "expirationDate": max(end, start).isoformat(),
        "metadata": {
            "performanceId": ticket.performance_id,
            "performanceCode": labels.get("performanceCode"),
            "productCode": product.code,
        },
    }
    if any(place.values()):
        event["address"] = {k: str(v) for k, v in place.items() if v}
    activation = {
        "groupId": event_id,
        "method": "offline",
        "time": (start - ACTIVATION_LEAD).isoformat(),
    }
    rules = {"transferable": True, "transferDeadline": start.isoformat(), "resaleAllowed": False}
    return event, activation, rules


class EventCache:
    """:func:`_event_parts` once per performance and label set during a run (a batch of 1000
    tickets names a few performances; building their events took a third of the box office's
    time per batch). The key holds every input of the parts, so a ticket sold with other labels
    gets its own; documents share the parts' dicts, which are only serialized."""

    def __init__(self) -> None:
        self._parts: dict[tuple[Any, ...], EventParts] = {}

    def parts(self, ticket: PrintableTicket, product: ProductRef, language: str) -> EventParts:
        labels = ticket.labels
        # The issue time stands in for a missing or unreadable start: part of the key then.
        start_known = _aware(labels.get("start")) is not None
        key = (
            ticket.performance_id,
            product.code,
            product.season_end,
            language,
            None if start_known else ticket.issued_at,
            orjson.dumps([labels.get(k) for k in EVENT_LABELS], option=orjson.OPT_SORT_KEYS),
        )
        found = self._parts.get(key)
        if found is None:
            if len(self._parts) >= 10_000:
                self._parts.clear()
            found = self._parts[key] = _event_parts(ticket, product, language)
        return found


def ticket_document(
    ticket: PrintableTicket, product: ProductRef, events: EventCache | None = None
) -> dict[str, Any]:
    """What ``POST tickets`` is sent of one ticket (docs/wallet/organizer-api.md)."""
    labels, language = ticket.labels, ticket.language[:2] or "en"
    event, activation, rules = (
        events.parts(ticket, product, language)
        if events is not None
        else _event_parts(ticket, product, language)
    )
    seat = {
        k: v
        for k, v in (
            ("block", pick(labels.get("block"), language) or None),
            ("row", labels.get("row")),
            ("seat", labels.get("number")),
        )
        if v
    }
    return {
        "ticketId": str(ticket.id),
        "event": event,
        "purchaseDetails": {
            "orderId": str(ticket.order_id),
            "price": ticket.amount,
            "currency": ticket.currency,
            "tariff": pick(labels.get("tariff"), language),
            "seatCategory": pick(labels.get("seatCategory"), language),
            **({"seat": seat} if seat else {}),
        },
        "security": {"barcode": ticket.barcode},
        "spectatorDetails": spectator(ticket),
        "activationParameters": activation,
        "transferRules": rules,
    }


def privilege_document(
    ticket: PrintableTicket, product: ProductRef, events: EventCache | None = None
) -> dict[str, Any]:
    """What ``POST privileges`` is sent of one membership or season card (``events`` is not
    used: a card names no event)."""
    language = ticket.language[:2] or "en"
    return {
        "privilegeId": str(ticket.id),
        "definition": {
            "id": product.code,
            "name": (pick(product.name, language) or product.code)[:300],
            "type": "MEMBERSHIP" if product.family == "MEMBERSHIP" else "SEASON_CARD",
            "validFrom": product.season_start.isoformat(),
            "validUntil": product.season_end.isoformat(),
            "metadata": {"productCode": product.code},
        },
        "security": {"barcode": ticket.barcode},
        "spectatorDetails": spectator(ticket),
    }
