"""Webhook subscriptions, events, URL placeholders, filters and signatures (no framework).

Signature (see ``docs/api/webhooks.md``): ``Billetterie-Signature: t=<unix seconds>,v1=<hex>``
where ``<hex>`` is HMAC-SHA256, keyed with the subscription's secret, of the bytes
``"<t>." + body``. Receivers recompute it, compare in constant time and refuse a ``t`` too far
from their clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import quote


class Event(StrEnum):
    ORDER_CLOSED = "order.closed"
    ORDER_CANCELLED = "order.cancelled"
    CONTACT_CREATED = "contact.created"
    CONTACT_UPDATED = "contact.updated"


ORDER_EVENTS = frozenset({Event.ORDER_CLOSED, Event.ORDER_CANCELLED})
CONTACT_EVENTS = frozenset({Event.CONTACT_CREATED, Event.CONTACT_UPDATED})

# Which placeholder names the subject of an event.
SUBJECT_PLACEHOLDER = {
    Event.ORDER_CLOSED: "orderId",
    Event.ORDER_CANCELLED: "orderId",
    Event.CONTACT_CREATED: "contactNumber",
    Event.CONTACT_UPDATED: "contactNumber",
}
# Placeholders every event offers besides its subject.
COMMON_PLACEHOLDERS = frozenset({"event", "deliveryId"})
PLACEHOLDER = re.compile(r"\$\{([A-Za-z]+)\}")


class PayloadMode(StrEnum):
    PING = "ping"  # the URL (with placeholders) is called, the body is empty
    FULL = "full"  # the event's full JSON document is POSTed


class Method(StrEnum):
    GET = "GET"
    POST = "POST"


class AttemptStatus(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    RETRYING = "RETRYING"  # failed, another attempt is scheduled
    FAILED = "FAILED"  # failed for good (4xx, attempts exhausted, nothing to send)


@dataclass(frozen=True)
class Filter:
    """Only subjects touching one of ``products`` (codes) and one of ``product_families``;
    an empty list does not restrict."""

    products: frozenset[str] = frozenset()
    product_families: frozenset[str] = frozenset()

    @property
    def is_empty(self) -> bool:
        return not self.products and not self.product_families

    def matches(self, facts: SubjectFacts) -> bool:
        if self.products and not self.products & facts.product_codes:
            return False
        return not (self.product_families and not self.product_families & facts.product_families)


@dataclass(frozen=True)
class SubjectFacts:
    """What filters look at: the products (codes) and product families of an order."""

    product_codes: frozenset[str] = frozenset()
    product_families: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Subscription:
    id: int
    institution_id: int
    point_of_sale_id: int
    code: str
    events: tuple[Event, ...]
    url: str
    method: Method
    payload: PayloadMode
    secret: str
    enabled: bool = True
    filter: Filter = field(default_factory=Filter)


def placeholders(url: str) -> set[str]:
    return set(PLACEHOLDER.findall(url))


def allowed_placeholders(events: list[Event]) -> set[str]:
    """The placeholders a URL may use: the common ones, plus the subject placeholder shared
    by every one of ``events``."""
    subjects = {SUBJECT_PLACEHOLDER[e] for e in events}
    allowed = set(COMMON_PLACEHOLDERS)
    if len(subjects) == 1:
        allowed |= subjects
    return allowed


def render_url(url: str, event: Event, subject: str, delivery_id: str) -> str:
    """Replace the placeholders (values are percent-encoded)."""
    values = {"event": event.value, "deliveryId": delivery_id, SUBJECT_PLACEHOLDER[event]: subject}

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if name not in values:
            raise ValueError(f"placeholder ${{{name}}} is not available for {event.value}")
        return quote(values[name], safe="")

    return PLACEHOLDER.sub(replace, url)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Billetterie-Signature`` header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now: int, tolerance_seconds: int = 300
) -> bool:
    """The receiver's check: a ``v1`` matches and ``t`` is within ``tolerance_seconds``."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        timestamp = int(parts.get("t", [""])[0])
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", []))
