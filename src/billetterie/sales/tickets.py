"""Tickets after the sale: their holder, printing, and control at the gate.

A ticket is NOT_PRINTED when issued; it becomes PRINTED when its PDF is delivered or an
external printing system (the wallet) takes it, CONTROLLED when scanned at the gate, CANCELLED
when its movement is cancelled and INVALIDATED when it is replaced. Only these moves exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.catalog.offers import ticket_names
from billetterie.sales import db
from billetterie.sales.barcode_keys import KeyVault, barcode_revocation, revoke, verification_keys
from billetterie.sales.barcodes import verify
from billetterie.sales.carts import load_order
from billetterie.sales.closing import issue_tickets_in, set_barcodes_in
from billetterie.sales.errors import (
    InvalidOperation,
    NotCancellable,
    RevokedTicket,
    UnknownMovement,
    UnknownTicket,
)
from billetterie.sales.models import MovementState, Seller, TicketState
from billetterie.sales.pdf import TicketView, render_tickets
from billetterie.shared import audit
from billetterie.shared.db import transaction
from billetterie.shared.text import pick

HOLDER_FIELDS = ("contactNumber", "firstName", "lastName", "email")


async def set_holder(
    engine: AsyncEngine,
    seller: Seller,
    order_id: int,
    movement_id: int,
    holder: dict[str, Any],
    *,
    now: datetime,
) -> None:
    """Name a movement's ticket holder: a contact number, or a first and last name."""
    holder = {k: str(v).strip() for k, v in holder.items() if k in HOLDER_FIELDS and v}
    if not holder.get("contactNumber") and not (holder.get("firstName") and holder.get("lastName")):
        raise InvalidOperation("a holder is a contactNumber, or a firstName and a lastName")
    if "email" in holder and "@" not in holder["email"]:
        raise InvalidOperation("the holder's email is not an email address")
    m = db.movement.c
    async with transaction(engine) as conn:
        order = await load_order(conn, seller, order_id)
        updated = await conn.execute(
            sa.update(db.movement)
            .where(
                m.id == movement_id,
                m.order_id == order.id,
                m.state.in_([MovementState.RESERVED.value, MovementState.SOLD.value]),
            )
            .values(holder=holder)
        )
        if updated.rowcount != 1:
            raise UnknownMovement(f"no valid movement {movement_id} in order {order_id}")
        await audit.record(
            conn,
            institution_id=seller.institution_id,
            action="sales.movement.holder_set",
            actor=seller.actor,
            at=now,
            order_id=order_id,
            movement_id=movement_id,
        )


async def print_tickets(
    engine: AsyncEngine,
    *,
    order: Any,
    organization_id: int,
    vault: KeyVault,
    language: str | None,
    ticket_id: int | None = None,
    now: datetime,
    actor: str,
) -> bytes:
    """The order's valid tickets as a PDF (one page each; only ``ticket_id`` when given), in
    ``language`` or the order's. Tickets issued without a barcode get one now; NOT_PRINTED ones
    become PRINTED. Raises UnknownMovement when there is nothing to print."""
    t, m = db.ticket.c, db.movement.c
    async with transaction(engine) as conn:
        query = (
            sa.select(db.ticket, db.movement.c.labels, db.movement.c.amount, db.movement.c.holder)
            .join(db.movement, m.id == t.movement_id)
            .where(
                t.order_id == order.id,
                t.state.in_(
                    [
                        TicketState.NOT_PRINTED.value,
                        TicketState.PRINTED.value,
                        TicketState.CONTROLLED.value,
                    ]
                ),
            )
            .order_by(t.id)
        )
        if ticket_id is not None:
            query = query.where(t.id == ticket_id)
        rows = (await conn.execute(query)).all()
        if not rows:
            raise UnknownMovement("no valid ticket to print in this order")
        names = await ticket_names(conn, order.institution_id, organization_id)
        barcodes = {r.id: r.barcode for r in rows}
        missing = [r for r in rows if r.barcode is None]
        if missing:
            movements = {
                mv.id: mv
                for mv in (
                    await conn.execute(
                        sa.select(db.movement).where(m.id.in_([r.movement_id for r in missing]))
                    )
                ).all()
            }
            barcodes |= await set_barcodes_in(
                conn,
                order.institution_id,
                organization_id,
                [(r.id, movements[r.movement_id]) for r in missing],
                vault,
                now,
            )
        language = (language or order.language or names.main_language)[:2]
        views = [_view(r, barcodes[r.id], order, names, language) for r in rows]
        printed = [r.id for r in rows if r.state == TicketState.NOT_PRINTED.value]
        if printed:
            await conn.execute(
                sa.update(db.ticket)
                .where(t.id.in_(printed), t.state == TicketState.NOT_PRINTED.value)
                .values(state=TicketState.PRINTED.value, printed_at=now)
            )
            await audit.record(
                conn,
                institution_id=order.institution_id,
                action="sales.tickets.printed",
                actor=actor,
                at=now,
                order_id=order.id,
                tickets=printed,
            )
    return render_tickets(views, language=language)


def _view(row: Any, barcode: str, order: Any, names: Any, language: str) -> TicketView:
    labels = row.labels or {}
    holder = row.holder or {}
    start = labels.get("start")
    return TicketView(
        institution_name=pick(names.institution, language),
        organization_name=pick(names.organization, language),
        product_name=" - ".join(
            part
            for part in (pick(labels.get("product"), language), pick(labels.get("item"), language))
            if part
        ),
        performance_start=datetime.fromisoformat(start) if start else None,
        time_zone=names.time_zone,
        venue_name=pick(labels.get("venue"), language) or None,
        space_name=pick(labels.get("space"), language) or None,
        area=pick(labels.get("area"), language) or None,
        block=pick(labels.get("block"), language) or None,
        row=labels.get("row"),
        seat=labels.get("number"),
        seat_category=pick(labels.get("seatCategory"), language),
        tariff_name=pick(labels.get("tariff"), language),
        price=row.amount,
        currency=order.currency,
        order_id=order.id,
        ticket_id=row.id,
        holder_name=" ".join(
            part for part in (holder.get("firstName"), holder.get("lastName")) if part
        )
        or None,
        barcode=barcode,
    )


async def reissue_ticket(
    engine: AsyncEngine,
    seller: Seller,
    order_id: int,
    movement_id: int,
    *,
    vault: KeyVault,
    now: datetime,
) -> int:
    """Replace a sold movement's ticket (lost, stolen, its barcode compromised): the current
    ticket becomes INVALIDATED and its barcode enters the revocation list, a new NOT_PRINTED
    ticket with a new barcode takes its place, in one transaction. A controlled ticket is not
    replaced. Returns the new ticket's id."""
    m, t = db.movement.c, db.ticket.c
    async with transaction(engine) as conn:
        order = await load_order(conn, seller, order_id, for_update=True)
        movement = (
            await conn.execute(
                sa.select(db.movement).where(
                    m.id == movement_id,
                    m.order_id == order.id,
                    m.state == MovementState.SOLD.value,
                )
            )
        ).first()
        if movement is None:
            raise UnknownMovement(f"no sold movement {movement_id} in order {order_id}")
        current = (
            await conn.execute(
                sa.select(t.id, t.state).where(
                    t.movement_id == movement.id,
                    t.state.in_(
                        [
                            TicketState.NOT_PRINTED.value,
                            TicketState.PRINTED.value,
                            TicketState.CONTROLLED.value,
                        ]
                    ),
                )
            )
        ).first()
        if current is not None and current.state == TicketState.CONTROLLED.value:
            raise NotCancellable("a controlled ticket is not replaced")
        if current is not None:
            await conn.execute(
                sa.update(db.ticket)
                .where(t.id == current.id)
                .values(state=TicketState.INVALIDATED.value, cancelled_at=now)
            )
            await revoke(
                conn,
                institution_id=seller.institution_id,
                ticket_ids=[current.id],
                reason="REISSUED",
                now=now,
            )
        (new_id,) = await issue_tickets_in(conn, seller, [movement], vault, now)
        await audit.record(
            conn,
            institution_id=seller.institution_id,
            action="sales.ticket.reissued",
            actor=seller.actor,
            at=now,
            order_id=order.id,
            movement_id=movement.id,
            invalidated=None if current is None else current.id,
            ticket_id=new_id,
        )
    return new_id


# --- external printing and access control -----------------------------------------------------


@dataclass(frozen=True)
class PrintableTicket:
    """What an external printing system (the wallet) is sent of one ticket: its signed barcode,
    the place as sold (``labels`` of its movement), the holder and the order's purchaser."""

    id: int
    order_id: int
    product_id: int
    performance_id: int | None
    barcode: str
    state: str
    issued_at: datetime
    amount: int
    currency: str
    labels: dict[str, Any]
    holder: dict[str, Any]
    purchaser: dict[str, Any]
    contact_number: str | None
    language: str


def _printable(row: Any, movement: Any, order: Any) -> PrintableTicket:
    return PrintableTicket(
        id=row.id,
        order_id=row.order_id,
        product_id=row.product_id,
        performance_id=row.performance_id,
        barcode=row.barcode,
        state=row.state,
        issued_at=row.issued_at,
        amount=movement.amount,
        currency=order.currency,
        labels=dict(movement.labels or {}),
        holder=dict(movement.holder or {}),
        purchaser=dict(order.purchaser or {}),
        contact_number=order.contact_number,
        language=order.language,
    )


async def _rows_by_id(
    conn: AsyncConnection,
    table: sa.Table,
    columns: Sequence[sa.ColumnElement[Any]],
    institution_id: int,
    ids: set[int],
) -> dict[int, Any]:
    found: dict[int, Any] = {}
    chosen = sorted(ids)
    for start in range(0, len(chosen), 1000):
        rows = await conn.execute(
            sa.select(table.c.id, *columns).where(
                table.c.institution_id == institution_id,
                table.c.id.in_(chosen[start : start + 1000]),
            )
        )
        found.update({r.id: r for r in rows})
    return found


async def printable_tickets(
    conn: AsyncConnection,
    institution_id: int,
    *,
    product_ids: Sequence[int],
    states: Sequence[TicketState],
    after_id: int = 0,
    limit: int = 1000,
) -> list[PrintableTicket]:
    """The institution's tickets of ``product_ids`` in ``states`` that carry a barcode, by id,
    after ``after_id``, at most ``limit`` (a page; pass the last id back for the next one).

    On PostgreSQL, three reads: the page of tickets, then their movements and orders by id.
    Joined in one statement before the limit, PostgreSQL without statistics yet (a bulk sale,
    before autovacuum) joined every remaining ticket for each page (222 ms a page at 100,000
    tickets, against 6 ms analyzed; the page alone costs at worst a walk of the ticket index,
    26 ms). SQLite's planner follows the ids either way, and one statement costs it less."""
    if not product_ids:
        return []
    t, m, o = db.ticket.c, db.movement.c, db.sales_order.c
    ticket_columns = (
        t.id,
        t.order_id,
        t.movement_id,
        t.product_id,
        t.performance_id,
        t.barcode,
        t.state,
        t.issued_at,
    )
    movement_columns = (m.amount, m.labels, m.holder)
    order_columns = (o.currency, o.purchaser, o.contact_number, o.language)
    conditions = (
        t.institution_id == institution_id,
        t.product_id.in_(list(product_ids)),
        t.state.in_([s.value for s in states]),
        t.barcode.is_not(None),
        t.id > after_id,
    )
    if conn.dialect.name != "postgresql":
        rows = await conn.execute(
            sa.select(*ticket_columns, *movement_columns, *order_columns)
            .join(db.movement, m.id == t.movement_id)
            .join(db.sales_order, o.id == t.order_id)
            .where(*conditions)
            .order_by(t.id)
            .limit(limit)
        )
        return [_printable(r, r, r) for r in rows]
    tickets = (
        await conn.execute(
            sa.select(*ticket_columns).where(*conditions).order_by(t.id).limit(limit)
        )
    ).all()
    movements = await _rows_by_id(
        conn, db.movement, movement_columns, institution_id, {r.movement_id for r in tickets}
    )
    orders = await _rows_by_id(
        conn, db.sales_order, order_columns, institution_id, {r.order_id for r in tickets}
    )
    return [_printable(r, movements[r.movement_id], orders[r.order_id]) for r in tickets]


async def ticket_states(
    conn: AsyncConnection, institution_id: int, ticket_ids: Sequence[int]
) -> dict[int, str]:
    """The current state of each of the institution's ``ticket_ids`` (unknown ids left out)."""
    t = db.ticket.c
    states: dict[int, str] = {}
    ids = sorted(set(ticket_ids))
    for start in range(0, len(ids), 500):
        rows = await conn.execute(
            sa.select(t.id, t.state).where(
                t.institution_id == institution_id, t.id.in_(ids[start : start + 500])
            )
        )
        states |= {r.id: r.state for r in rows}
    return states


async def mark_printed(
    conn: AsyncConnection,
    institution_id: int,
    ticket_ids: Sequence[int],
    *,
    now: datetime,
    actor: str,
) -> int:
    """NOT_PRINTED tickets among ``ticket_ids`` become PRINTED (others are left as they are: a
    ticket cancelled meanwhile stays CANCELLED). In the caller's transaction; returns how many
    moved."""
    if not ticket_ids:
        return 0
    t = db.ticket.c
    moved = 0
    ids = sorted(set(ticket_ids))
    for start in range(0, len(ids), 500):
        result = await conn.execute(
            sa.update(db.ticket)
            .where(
                t.institution_id == institution_id,
                t.id.in_(ids[start : start + 500]),
                t.state == TicketState.NOT_PRINTED.value,
            )
            .values(state=TicketState.PRINTED.value, printed_at=now)
        )
        moved += result.rowcount
    if moved:
        await audit.record(
            conn,
            institution_id=institution_id,
            action="sales.tickets.printed",
            actor=actor,
            at=now,
            tickets=len(ids),
            moved=moved,
        )
    return moved


@dataclass(frozen=True)
class ControlledTicket:
    ticket_id: int
    order_id: int
    performance_id: int | None
    controlled_at: datetime
    first_control: bool


async def control_ticket(
    engine: AsyncEngine, institution_id: int, barcode: str, now: datetime, *, actor: str = "gate"
) -> ControlledTicket:
    """Admit the holder of ``barcode`` at the gate: the barcode must verify under one of the
    institution's keys (:func:`billetterie.sales.barcodes.verify`), not be on the revocation
    list, and name a NOT_PRINTED or PRINTED ticket of this institution, which becomes
    CONTROLLED. Controlling a CONTROLLED ticket again answers it with ``first_control`` False
    (nothing written). Raises a :class:`~billetterie.sales.barcodes.BarcodeError`,
    :class:`RevokedTicket` or :class:`UnknownTicket`; nothing is written then."""
    t = db.ticket.c
    async with transaction(engine) as conn:
        keys = await verification_keys(conn, institution_id=institution_id)
        payload = verify(barcode, keys, now)
        if payload.institution_id != institution_id:
            raise UnknownTicket("this barcode is not one of this institution's tickets")
        revoked = (
            await conn.execute(
                sa.select(barcode_revocation.c.ticket_id).where(
                    barcode_revocation.c.institution_id == institution_id,
                    barcode_revocation.c.ticket_id == payload.ticket_id,
                )
            )
        ).first()
        if revoked is not None:
            raise RevokedTicket(f"ticket {payload.ticket_id} was cancelled or replaced")
        row = (
            await conn.execute(
                sa.select(t.id, t.order_id, t.performance_id, t.state, t.controlled_at, t.barcode)
                .where(t.institution_id == institution_id, t.id == payload.ticket_id)
                .with_for_update()
            )
        ).first()
        if row is None or row.barcode != barcode.strip().upper():
            raise UnknownTicket("no ticket carries this barcode")
        if row.state == TicketState.CONTROLLED.value:
            return ControlledTicket(
                row.id, row.order_id, row.performance_id, row.controlled_at, False
            )
        if row.state not in (TicketState.NOT_PRINTED.value, TicketState.PRINTED.value):
            raise RevokedTicket(f"ticket {row.id} is {row.state.lower()}")
        await conn.execute(
            sa.update(db.ticket)
            .where(t.id == row.id)
            .values(state=TicketState.CONTROLLED.value, controlled_at=now)
        )
        await audit.record(
            conn,
            institution_id=institution_id,
            action="sales.ticket.controlled",
            actor=actor,
            at=now,
            ticket_id=row.id,
        )
    return ControlledTicket(row.id, row.order_id, row.performance_id, now, True)
