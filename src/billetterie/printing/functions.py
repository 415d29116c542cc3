"""Four of the five functions of a WALLET interface (seed 004), each one idempotent run
(feedback is in :mod:`billetterie.printing.feedback`).

- injection: NOT_PRINTED tickets of the interface's products -> ``POST tickets`` in batches;
  a ticket the wallet accepts (CREATED, UPDATED, UNCHANGED) becomes PRINTED and gets its
  ``printing_ticket`` row (the mark "processed by injection"); a refused one stays NOT_PRINTED.
- push cancelled: CANCELLED / INVALIDATED tickets the wallet holds -> ``tickets/delete``.
- push controlled: CONTROLLED tickets the wallet holds -> ``tickets/controlled``.
- privileges: NOT_PRINTED membership cards and season cards -> ``POST privileges``.

A batch the wallet refuses as a whole (after the client's retries for transient failures)
stops the run with a :class:`WalletError`; what earlier batches did is kept.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog.services import ProductRef, products_by_code
from billetterie.printing import db
from billetterie.printing.models import PRIVILEGE_FAMILIES, Counts, Interface, Progress
from billetterie.printing.wallet import WalletClient
from billetterie.sales.models import TicketState
from billetterie.sales.tickets import PrintableTicket, mark_printed, printable_tickets
from billetterie.shared.clock import Clock
from billetterie.shared.db import read, transaction
from billetterie.shared.text import pick

ACCEPTED = frozenset({"CREATED", "UPDATED", "UNCHANGED"})
ACTIVATION_LEAD = timedelta(hours=3)  # rotating codes from three hours before the start
COUNTRY = re.compile(r"^[A-Z]{2}$")
IN_FLIGHT = 2  # batches under way at once during an injection


def _is_privilege(ticket: PrintableTicket, family: str) -> bool:
    """Membership cards, and season tickets' cards (a season ticket's seats, which name a
    performance, are tickets)."""
    return family in PRIVILEGE_FAMILIES and not (
        family == "SEASONTICKET" and ticket.performance_id is not None
    )


def _spectator(ticket: PrintableTicket) -> dict[str, Any]:
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
        "spectatorDetails": _spectator(ticket),
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
        "spectatorDetails": _spectator(ticket),
    }


async def _products(engine: AsyncEngine, item: Interface) -> dict[int, ProductRef]:
    async with read(engine) as conn:
        found = await products_by_code(conn, item.institution_id, item.products)
    return {p.id: p for p in found.values()}


async def _send_new(
    engine: AsyncEngine,
    item: Interface,
    wallet: WalletClient,
    clock: Clock,
    counts: Counts,
    progress: Progress | None,
    *,
    privileges: bool,
) -> None:
    """Injection and privileges injection: page through NOT_PRINTED tickets by id. Up to
    ``IN_FLIGHT`` batches are under way at once (the next page is read and built while the
    wallet takes the previous one); each ticket is in one batch only."""
    products = await _products(engine, item)
    after = 0
    kind = "PRIVILEGE" if privileges else "TICKET"
    build = privilege_document if privileges else ticket_document
    send = wallet.privileges if privileges else wallet.inject
    running: set[asyncio.Task[None]] = set()
    events = EventCache()

    async def process(batch: list[PrintableTicket], documents: list[dict[str, Any]]) -> None:
        results = await send(documents)
        accepted: list[PrintableTicket] = []
        for ticket, result in zip(batch, results, strict=True):
            if result.get("status") in ACCEPTED:
                accepted.append(ticket)
            else:
                counts.refuse(f"{ticket.id}: {result.get('code')} {result.get('detail', '')}")
        if accepted:
            await _store_injected(engine, item, accepted, kind, clock.now())
        counts.accepted += len(accepted)
        if progress:
            progress(counts)

    async def settle(limit: int) -> None:
        while len(running) > limit:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            running.difference_update(done)
            for task in done:
                task.result()  # a failed batch stops the run

    try:
        while True:
            async with read(engine) as conn:
                page = await printable_tickets(
                    conn,
                    item.institution_id,
                    product_ids=list(products),
                    states=[TicketState.NOT_PRINTED],
                    after_id=after,
                    limit=item.batch_size * 2,
                )
            if not page:
                break
            after = page[-1].id
            chosen = [
                t for t in page if _is_privilege(t, products[t.product_id].family) == privileges
            ]
            for start in range(0, len(chosen), item.batch_size):
                batch = []
                for ticket in chosen[start : start + item.batch_size]:
                    if "email" in _spectator(ticket):
                        batch.append(ticket)
                    else:
                        counts.refuse(f"{ticket.id}: no email for the wallet owner")
                if not batch:
                    continue
                documents = [build(t, products[t.product_id], events) for t in batch]
                counts.sent += len(documents)
                await settle(IN_FLIGHT - 1)
                running.add(asyncio.create_task(process(batch, documents)))
        await settle(0)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def _store_injected(
    engine: AsyncEngine,
    item: Interface,
    tickets: list[PrintableTicket],
    kind: str,
    now: datetime,
) -> None:
    p = db.printing_ticket.c
    ids = [t.id for t in tickets]
    async with transaction(engine) as conn:
        await mark_printed(conn, item.institution_id, ids, now=now, actor=f"printing:{item.code}")
        known = set(
            (await conn.execute(sa.select(p.ticket_id).where(p.ticket_id.in_(ids)))).scalars()
        )
        rows = [
            {
                "ticket_id": t.id,
                "institution_id": item.institution_id,
                "interface_id": item.id,
                "kind": kind,
                "injected_at": now,
                "mobile_status": "INJECTED",
                "wallet_owner": _spectator(t).get("email", "").lower() or None,
                "transfer_count": 0,
            }
            for t in tickets
            if t.id not in known
        ]
        if rows:
            await conn.execute(sa.insert(db.printing_ticket), rows)


async def inject_tickets(
    engine: AsyncEngine,
    item: Interface,
    wallet: WalletClient,
    clock: Clock,
    counts: Counts,
    progress: Progress | None = None,
) -> None:
    await _send_new(engine, item, wallet, clock, counts, progress, privileges=False)


async def inject_privileges(
    engine: AsyncEngine,
    item: Interface,
    wallet: WalletClient,
    clock: Clock,
    counts: Counts,
    progress: Progress | None = None,
) -> None:
    await _send_new(engine, item, wallet, clock, counts, progress, privileges=True)


async def _push(
    engine: AsyncEngine,
    item: Interface,
    wallet: WalletClient,
    clock: Clock,
    counts: Counts,
    progress: Progress | None,
    *,
    controlled: bool,
) -> None:
    """Push cancelled / controlled: the interface's tickets in those states that the wallet
    holds and this function has not processed yet."""
    products = await _products(engine, item)
    states = (
        [TicketState.CONTROLLED] if controlled else [TicketState.CANCELLED, TicketState.INVALIDATED]
    )
    p = db.printing_ticket.c
    mark = p.controlled_pushed_at if controlled else p.deletion_pushed_at
    after = 0
    while True:
        async with read(engine) as conn:
            page = await printable_tickets(
                conn,
                item.institution_id,
                product_ids=list(products),
                states=states,
                after_id=after,
                limit=5000,
            )
            if not page:
                return
            after = page[-1].id
            pending = set(
                (
                    await conn.execute(
                        sa.select(p.ticket_id).where(
                            p.interface_id == item.id,
                            p.ticket_id.in_([t.id for t in page]),
                            p.kind == "TICKET",
                            mark.is_(None),
                            p.deletion_pushed_at.is_(None),
                        )
                    )
                ).scalars()
            )
        todo = [t for t in page if t.id in pending]
        for reason in ("CONTROLLED",) if controlled else ("CANCELLED", "INVALIDATED"):
            chosen = [t.id for t in todo if controlled or t.state == reason]
            for start in range(0, len(chosen), item.batch_size):
                batch = chosen[start : start + item.batch_size]
                counts.sent += len(batch)
                names = [str(i) for i in batch]
                if controlled:
                    results = await wallet.controlled(names)
                else:
                    results = await wallet.delete(names, reason)
                done: dict[int, str] = {}
                for ticket_id, result in zip(batch, results, strict=True):
                    status = str(result.get("status"))
                    if status in {"CONTROLLED", "DELETION_PENDING", "DELETED"}:
                        done[ticket_id] = status
                    else:
                        counts.refuse(
                            f"{ticket_id}: {result.get('code')} {result.get('detail', '')}"
                        )
                if done:
                    now = clock.now()
                    column = "controlled_pushed_at" if controlled else "deletion_pushed_at"
                    async with transaction(engine) as conn:
                        await conn.execute(
                            sa.update(db.printing_ticket)
                            .where(p.ticket_id == sa.bindparam("_id"))
                            .values({column: now, "mobile_status": sa.bindparam("_status")}),
                            [{"_id": k, "_status": v} for k, v in done.items()],
                        )
                counts.accepted += len(done)
                if progress:
                    progress(counts)


async def push_cancelled(
    engine: AsyncEngine,
    item: Interface,
    wallet: WalletClient,
    clock: Clock,
    counts: Counts,
    progress: Progress | None = None,
) -> None:
    await _push(engine, item, wallet, clock, counts, progress, controlled=False)


async def push_controlled(
    engine: AsyncEngine,
    item: Interface,
    wallet: WalletClient,
    clock: Clock,
    counts: Counts,
    progress: Progress | None = None,
) -> None:
    await _push(engine, item, wallet, clock, counts, progress, controlled=True)
