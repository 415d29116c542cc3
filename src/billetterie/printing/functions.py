"""Four of the five functions of a WALLET interface (seed 004), each one idempotent run
(feedback is in :mod:`billetterie.printing.feedback`).

- injection: NOT_PRINTED tickets of the interface's products -> ``POST tickets`` in batches;
  a ticket the wallet accepts (CREATED, UPDATED, UNCHANGED) becomes PRINTED and gets its
  ``printing_ticket`` row (the mark "processed by injection"); a refused one stays NOT_PRINTED.
- push cancelled: CANCELLED / INVALIDATED tickets the wallet holds -> ``tickets/delete``, and
  cancelled cards (injected as privileges) -> ``privileges/delete``.
- push controlled: CONTROLLED tickets the wallet holds -> ``tickets/controlled``.
- privileges: NOT_PRINTED membership cards and season cards -> ``POST privileges``.

Injection and privileges injection first register the institution's barcode keys with the
wallet (``PUT barcode-keys``), whose scanner admits only barcodes they verify.

A batch the wallet refuses as a whole (after the client's retries for transient failures)
stops the run with a :class:`WalletError`; what earlier batches did is kept.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog.services import ProductRef, products_by_code
from billetterie.printing import db
from billetterie.printing.documents import (
    EventCache,
    privilege_document,
    spectator,
    ticket_document,
)
from billetterie.printing.models import PRIVILEGE_FAMILIES, Counts, Interface, Progress
from billetterie.printing.wallet import WalletClient
from billetterie.sales.barcode_keys import public_keys
from billetterie.sales.models import TicketState
from billetterie.sales.tickets import PrintableTicket, mark_printed, printable_tickets
from billetterie.shared.clock import Clock
from billetterie.shared.db import read, transaction

ACCEPTED = frozenset({"CREATED", "UPDATED", "UNCHANGED"})
IN_FLIGHT = 2  # batches under way at once during an injection


def _is_privilege(ticket: PrintableTicket, family: str) -> bool:
    """Membership cards, and season tickets' cards (a season ticket's seats, which name a
    performance, are tickets)."""
    return family in PRIVILEGE_FAMILIES and not (
        family == "SEASONTICKET" and ticket.performance_id is not None
    )


async def _products(engine: AsyncEngine, item: Interface) -> dict[int, ProductRef]:
    async with read(engine) as conn:
        found = await products_by_code(conn, item.institution_id, item.products)
    return {p.id: p for p in found.values()}


async def register_keys(engine: AsyncEngine, item: Interface, wallet: WalletClient) -> None:
    """Tell the wallet the institution's barcode keys still verifiable (ACTIVE and PREVIOUS;
    it retires those no longer named), so that its scanner admits only barcodes the box office
    signed. Run before every injection, so a key is known before the first ticket it signed."""
    async with read(engine) as conn:
        keys = await public_keys(conn, institution_id=item.institution_id)
    await wallet.register_keys(
        [
            {"keyId": k.key_id, "publicKey": base64.b64encode(k.public_key).decode("ascii")}
            for k in keys
        ]
    )


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
    await register_keys(engine, item, wallet)
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
                    if "email" in spectator(ticket):
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
                "wallet_owner": spectator(t).get("email", "").lower() or None,
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
    holds and this function has not processed yet. Cancelled cards (injected as privileges)
    are revoked with ``privileges/delete``; the others are tickets."""
    products = await _products(engine, item)
    states = (
        [TicketState.CONTROLLED] if controlled else [TicketState.CANCELLED, TicketState.INVALIDATED]
    )
    p = db.printing_ticket.c
    mark = p.controlled_pushed_at if controlled else p.deletion_pushed_at
    kinds = ["TICKET"] if controlled else ["TICKET", "PRIVILEGE"]
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
            pending = dict(
                (
                    await conn.execute(
                        sa.select(p.ticket_id, p.kind).where(
                            p.interface_id == item.id,
                            p.ticket_id.in_([t.id for t in page]),
                            p.kind.in_(kinds),
                            mark.is_(None),
                            p.deletion_pushed_at.is_(None),
                        )
                    )
                ).all()
            )
        todo = [t for t in page if t.id in pending]
        for kind in kinds:
            for reason in ("CONTROLLED",) if controlled else ("CANCELLED", "INVALIDATED"):
                chosen = [
                    t.id
                    for t in todo
                    if pending[t.id] == kind and (controlled or t.state == reason)
                ]
                for start in range(0, len(chosen), item.batch_size):
                    await _push_batch(
                        engine,
                        wallet,
                        clock,
                        counts,
                        chosen[start : start + item.batch_size],
                        kind=kind,
                        reason=reason,
                    )
                    if progress:
                        progress(counts)


async def _push_batch(
    engine: AsyncEngine,
    wallet: WalletClient,
    clock: Clock,
    counts: Counts,
    batch: list[int],
    *,
    kind: str,
    reason: str,
) -> None:
    """One call of push cancelled / controlled; the items the wallet took are marked
    processed with the status it answered, the others stay for the next run."""
    counts.sent += len(batch)
    names = [str(i) for i in batch]
    if reason == "CONTROLLED":
        results = await wallet.controlled(names)
    elif kind == "PRIVILEGE":
        results = await wallet.delete_privileges(names, reason)
    else:
        results = await wallet.delete(names, reason)
    done: dict[int, str] = {}
    for ticket_id, result in zip(batch, results, strict=True):
        status = str(result.get("status"))
        if status in {"CONTROLLED", "DELETION_PENDING", "DELETED"}:
            done[ticket_id] = status
        else:
            counts.refuse(f"{ticket_id}: {result.get('code')} {result.get('detail', '')}")
    if done:
        p = db.printing_ticket.c
        column = "controlled_pushed_at" if reason == "CONTROLLED" else "deletion_pushed_at"
        async with transaction(engine) as conn:
            await conn.execute(
                sa.update(db.printing_ticket)
                .where(p.ticket_id == sa.bindparam("_id"))
                .values({column: clock.now(), "mobile_status": sa.bindparam("_status")}),
                [{"_id": k, "_status": v} for k, v in done.items()],
            )
    counts.accepted += len(done)


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
