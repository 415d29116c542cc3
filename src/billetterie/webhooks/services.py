"""Webhook use cases: subscriptions from the setup file, ``emit`` from sales and contacts,
the registries other contexts fill at app build, and the operator's delivery log.

Contracts:

- :func:`emit` runs inside the caller's transaction and only writes outbox rows (one per
  enabled subscription of the point of sale listening to the event and whose filter matches);
  the delivery happens after commit (:mod:`billetterie.webhooks.tasks`). The row carries ids.
- A payload renderer ``async fn(conn, institution_id, subject_id) -> dict`` renders the full
  document of an event at delivery time (the subject is reloaded, never copied into the row);
  it raises :class:`LookupError` when the subject no longer exists.
- A facts provider ``async fn(conn, institution_id, subject_id) -> SubjectFacts`` tells
  filters which products an order touches; without one (and without ``facts=`` given to
  ``emit``), a subscription with a filter does not match.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.shared import audit, outbox
from billetterie.shared.db import engine_cache
from billetterie.webhooks import db
from billetterie.webhooks.errors import InvalidCursor, UnknownEvent, UnknownSubscription
from billetterie.webhooks.models import (
    AttemptStatus,
    Event,
    Filter,
    Method,
    PayloadMode,
    SubjectFacts,
    Subscription,
)

TOPIC = "webhooks.deliver"
MAX_PAGE = 200

PayloadRenderer = Callable[[AsyncConnection, int, Any], Awaitable[dict[str, Any]]]
FactsProvider = Callable[[AsyncConnection, int, Any], Awaitable[SubjectFacts]]
_renderers: dict[Event, PayloadRenderer] = {}
_facts: dict[Event, FactsProvider] = {}


def _event(event: str | Event) -> Event:
    try:
        return Event(event)
    except ValueError:
        raise UnknownEvent(f"unknown webhook event {event}") from None


def register_payload_renderer(event: str | Event, fn: PayloadRenderer) -> None:
    """Sales registers ``order.*`` and contacts ``contact.*`` renderers at app build."""
    _renderers[_event(event)] = fn


def payload_renderer(event: Event) -> PayloadRenderer | None:
    return _renderers.get(event)


def register_subject_facts(event: str | Event, fn: FactsProvider) -> None:
    """What filters see of an event's subject (sales: the order's product codes/families)."""
    _facts[_event(event)] = fn


# --- subscriptions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionSpec:
    code: str
    point_of_sale_id: int
    events: tuple[str, ...]
    url: str
    method: str
    payload: str
    secret: str | None  # None: keep the current one (a new subscription gets a random one)
    enabled: bool
    products: tuple[str, ...] = ()
    product_families: tuple[str, ...] = ()


def _values(spec: SubscriptionSpec) -> dict[str, Any]:
    values: dict[str, Any] = {
        "point_of_sale_id": spec.point_of_sale_id,
        "events": [_event(e).value for e in spec.events],
        "url": spec.url,
        "method": Method(spec.method).value,
        "payload": PayloadMode(spec.payload).value,
        "filter": {"products": list(spec.products), "productFamilies": list(spec.product_families)},
        "enabled": spec.enabled,
    }
    if spec.secret is not None:
        values["secret"] = spec.secret
    return values


async def sync_subscriptions(
    conn: AsyncConnection, institution_id: int, specs: Sequence[SubscriptionSpec]
) -> int:
    """Make the institution's subscriptions those of ``specs`` (matched by code; the others
    are deleted; ids of kept codes stay). Returns how many rows changed. The caller (the setup
    import) owns the transaction and writes the audit entry."""
    w = db.webhook_subscription.c
    existing = {
        r.code: r
        for r in (
            await conn.execute(
                sa.select(db.webhook_subscription).where(w.institution_id == institution_id)
            )
        ).all()
    }
    changes = 0
    for spec in specs:
        values = _values(spec)
        row = existing.pop(spec.code, None)
        if row is None:
            values.setdefault("secret", secrets.token_urlsafe(32))
            await conn.execute(
                sa.insert(db.webhook_subscription).values(
                    institution_id=institution_id, code=spec.code, **values
                )
            )
            changes += 1
        elif any(getattr(row, column) != value for column, value in values.items()):
            await conn.execute(
                sa.update(db.webhook_subscription).where(w.id == row.id).values(**values)
            )
            changes += 1
    if existing:
        ids = [r.id for r in existing.values()]
        await conn.execute(sa.delete(db.webhook_subscription).where(w.id.in_(ids)))
        changes += len(ids)
    return changes


def _subscription(row: Any) -> Subscription:
    data = row.filter or {}
    return Subscription(
        id=row.id,
        institution_id=row.institution_id,
        point_of_sale_id=row.point_of_sale_id,
        code=row.code,
        events=tuple(Event(e) for e in row.events),
        url=row.url,
        method=Method(row.method),
        payload=PayloadMode(row.payload),
        secret=row.secret,
        enabled=row.enabled,
        filter=Filter(
            frozenset(data.get("products", ())), frozenset(data.get("productFamilies", ()))
        ),
    )


async def list_subscriptions(conn: AsyncConnection, institution_id: int) -> list[Subscription]:
    w = db.webhook_subscription.c
    rows = (
        await conn.execute(
            sa.select(db.webhook_subscription)
            .where(w.institution_id == institution_id)
            .order_by(w.id)
        )
    ).all()
    return [_subscription(r) for r in rows]


async def subscription(
    conn: AsyncConnection, institution_id: int, subscription_id: int
) -> Subscription | None:
    w = db.webhook_subscription.c
    row = (
        await conn.execute(
            sa.select(db.webhook_subscription).where(
                w.institution_id == institution_id, w.id == subscription_id
            )
        )
    ).first()
    return None if row is None else _subscription(row)


async def signing_secret(
    conn: AsyncConnection,
    institution_id: int,
    code: str,
    *,
    rotate: bool = False,
    now: datetime | None = None,
    actor: str = "cli",
) -> str:
    """The signing secret of subscription ``code``; ``rotate`` replaces it with a random one
    (audited; the caller owns the transaction). Raises :class:`UnknownSubscription`."""
    w = db.webhook_subscription.c
    row = (
        await conn.execute(
            sa.select(w.id, w.secret).where(w.institution_id == institution_id, w.code == code)
        )
    ).first()
    if row is None:
        raise UnknownSubscription(f"no webhook {code}")
    if not rotate:
        return str(row.secret)
    if now is None:
        raise ValueError("rotating needs now")
    secret = secrets.token_urlsafe(32)
    await conn.execute(
        sa.update(db.webhook_subscription).where(w.id == row.id).values(secret=secret)
    )
    await audit.record(
        conn,
        institution_id=institution_id,
        action="webhooks.secret.rotated",
        actor=actor,
        at=now,
        code=code,
    )
    return secret


# --- emitting --------------------------------------------------------------------------------


async def _enabled(
    conn: AsyncConnection, institution_id: int, point_of_sale_id: int, setup_version: int
) -> list[Subscription]:
    """The point of sale's enabled subscriptions, by id (kept per setup version, when told)."""
    cache = engine_cache(conn, "webhooks.subscriptions", limit=1024) if setup_version else None
    key = (institution_id, point_of_sale_id, setup_version)
    if cache is not None and key in cache:
        found: list[Subscription] = cache[key]
        return found
    w = db.webhook_subscription.c
    rows = (
        await conn.execute(
            sa.select(db.webhook_subscription)
            .where(
                w.institution_id == institution_id,
                w.point_of_sale_id == point_of_sale_id,
                w.enabled.is_(True),
            )
            .order_by(w.id)
        )
    ).all()
    found = [_subscription(r) for r in rows]
    if cache is not None:
        cache[key] = found
    return found


async def emit(
    conn: AsyncConnection,
    *,
    institution_id: int,
    point_of_sale_id: int,
    event: str | Event,
    subject_id: int | str,
    now: datetime,
    facts: SubjectFacts | None = None,
    dedupe_key: str | None = None,
    setup_version: int = 0,
) -> list[str]:
    """Enqueue one delivery per matching subscription, in the caller's transaction.

    Returns the delivery ids (the ``Billetterie-Delivery`` header of each). ``dedupe_key``
    makes a repeated emit of the same occurrence (a retried use case) write nothing new.
    ``setup_version``: the institution's setup version, read in the caller's transaction; the
    subscriptions change only with the setup (the import bumps it), so the process keeps those
    of each version instead of reading them for every emit.
    """
    kind = _event(event)
    subscriptions = [
        s
        for s in await _enabled(conn, institution_id, point_of_sale_id, setup_version)
        if kind in s.events
    ]
    delivery_ids: list[str] = []
    for sub in subscriptions:
        if not sub.filter.is_empty:
            if facts is None:
                provider = _facts.get(kind)
                if provider is None:
                    continue  # nothing tells what the subject holds: a filter cannot match
                facts = await provider(conn, institution_id, subject_id)
            if not sub.filter.matches(facts):
                continue
        delivery_id = uuid.uuid4().hex
        written = await outbox.enqueue(
            conn,
            institution_id=institution_id,
            topic=TOPIC,
            payload={
                "subscription_id": sub.id,
                "event": kind.value,
                "subject_id": subject_id,
                "delivery_id": delivery_id,
                "occurred_at": now.isoformat(),
            },
            now=now,
            key=None if dedupe_key is None else f"{sub.id}:{kind.value}:{dedupe_key}",
        )
        if written is not None:
            delivery_ids.append(delivery_id)
    return delivery_ids


# --- the delivery log ------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    id: int
    point_of_sale_id: int
    subscription_id: int
    subscription_code: str
    delivery_id: str
    event: str
    subject_id: str
    attempt: int
    status: AttemptStatus
    url: str
    method: str
    response_code: int | None
    duration_ms: int
    error: str | None
    at: datetime


async def record_attempt(
    conn: AsyncConnection,
    *,
    subscription: Subscription,
    delivery_id: str,
    event: Event,
    subject_id: Any,
    attempt: int,
    status: AttemptStatus,
    url: str,
    response_code: int | None,
    duration_ms: int,
    error: str | None,
    at: datetime,
) -> None:
    await conn.execute(
        sa.insert(db.webhook_attempt).values(
            institution_id=subscription.institution_id,
            point_of_sale_id=subscription.point_of_sale_id,
            subscription_id=subscription.id,
            subscription_code=subscription.code,
            delivery_id=delivery_id,
            event=event.value,
            subject_id=str(subject_id),
            attempt=attempt,
            status=status.value,
            url=url[:2000],
            method=subscription.method.value,
            response_code=response_code,
            duration_ms=duration_ms,
            error=None if error is None else error[:2000],
            at=at,
        )
    )


@dataclass(frozen=True)
class AttemptPage:
    attempts: list[Attempt]
    next_cursor: int | None  # pass as ``before`` to read older attempts


async def list_attempts(
    conn: AsyncConnection,
    institution_id: int,
    *,
    point_of_sale_id: int | None = None,
    event: str | None = None,
    status: str | None = None,
    delivery_id: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> AttemptPage:
    """Newest first, scoped to one institution (and a point of sale when given)."""
    if before is not None and before < 1:
        raise InvalidCursor("before must be a positive attempt id")
    a = db.webhook_attempt.c
    query = sa.select(db.webhook_attempt).where(a.institution_id == institution_id)
    if point_of_sale_id is not None:
        query = query.where(a.point_of_sale_id == point_of_sale_id)
    if event is not None:
        query = query.where(a.event == _event(event).value)
    if status is not None:
        query = query.where(a.status == AttemptStatus(status).value)
    if delivery_id is not None:
        query = query.where(a.delivery_id == delivery_id)
    if before is not None:
        query = query.where(a.id < before)
    limit = max(1, min(limit, MAX_PAGE))
    rows = (await conn.execute(query.order_by(a.id.desc()).limit(limit + 1))).all()
    attempts = [
        Attempt(
            r.id,
            r.point_of_sale_id,
            r.subscription_id,
            r.subscription_code,
            r.delivery_id,
            r.event,
            r.subject_id,
            r.attempt,
            AttemptStatus(r.status),
            r.url,
            r.method,
            r.response_code,
            r.duration_ms,
            r.error,
            r.at,
        )
        for r in rows[:limit]
    ]
    return AttemptPage(attempts, attempts[-1].id if len(rows) > limit else None)
