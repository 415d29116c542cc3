"""Places of a sale: what a confirmed hold sold, and giving sold places back.

A cancelled sale returns its places to inventory: its seats go from SOLD to FREE and its
counters lose what they had sold, under the contract of :mod:`billetterie.inventory.services`
(seats by id, then stock rows by id, then the sequence row; the change logged in the same
transaction). Only places a hold really sold can be returned, each once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.inventory import db
from billetterie.inventory.errors import HoldClosed, InvalidQuantity
from billetterie.inventory.models import HeldPlace, HoldState, SeatState
from billetterie.inventory.seat_indexes import indexes_of
from billetterie.inventory.services import (
    _apply_own,
    _current_afterwards,
    _lock_stocks,
    _move_counts,
    log_changes,
)
from billetterie.shared import audit


async def held_places(conn: AsyncConnection, hold_ids: Sequence[int]) -> list[HeldPlace]:
    """Every place of these holds, one per seat or per unit, in hold, stock and seat order."""
    if not hold_ids:
        return []
    s, line, ps = db.stock.c, db.hold_line.c, db.performance_seat.c
    stocks = {
        r.id: r
        for r in (
            await conn.execute(
                sa.select(db.stock).where(
                    s.id.in_(sa.select(line.stock_id).where(line.hold_id.in_(sorted(hold_ids))))
                )
            )
        ).all()
    }
    seats: dict[tuple[int, int], list[Any]] = {}
    for r in (
        await conn.execute(
            sa.select(ps.hold_id, ps.stock_id, ps.id, ps.block_id, ps.row, ps.number)
            .where(ps.hold_id.in_(sorted(hold_ids)))
            .order_by(ps.id)
        )
    ).all():
        seats.setdefault((r.hold_id, r.stock_id), []).append(r)
    places: list[HeldPlace] = []
    lines = (
        await conn.execute(
            sa.select(line.hold_id, line.stock_id, line.quantity)
            .where(line.hold_id.in_(sorted(hold_ids)))
            .order_by(line.hold_id, line.stock_id)
        )
    ).all()
    for hold_id, stock_id, quantity in lines:
        stock = stocks[stock_id]
        if stock.numbered:
            places.extend(
                HeldPlace.of_stock(
                    hold_id, stock, seat_id=r.id, block_id=r.block_id, row=r.row, number=r.number
                )
                for r in seats.get((hold_id, stock_id), [])
            )
        else:
            places.extend(HeldPlace.of_stock(hold_id, stock) for _ in range(quantity))
    return places


async def _all_in_state(
    conn: AsyncConnection, institution_id: int, hold_ids: list[int], state: HoldState
) -> bool:
    """Whether every one of these holds is the institution's and in ``state``."""
    h = db.hold.c
    found = (
        await conn.execute(
            sa.select(sa.func.count()).where(
                h.id.in_(hold_ids), h.institution_id == institution_id, h.state == state.value
            )
        )
    ).scalar_one()
    return int(found) == len(hold_ids)


class _Freed(NamedTuple):
    seats: dict[int, list[int]]  # by performance
    by_stock: dict[int, list[int]]

    def places(self) -> int:
        return sum(len(ids) for ids in self.seats.values())


async def _free_seats(
    conn: AsyncConnection, seat_ids: list[int], hold_ids: list[int], state: SeatState
) -> _Freed:
    """Free the seats still in ``state`` for these holds; the freed ones."""
    freed = _Freed({}, {})
    if not seat_ids:
        return freed
    ps = db.performance_seat.c
    rows = (
        await conn.execute(
            sa.update(db.performance_seat)
            .where(ps.id.in_(seat_ids), ps.state == state.value, ps.hold_id.in_(hold_ids))
            .values(state=SeatState.FREE.value, hold_id=None)
            .returning(ps.id, ps.performance_id, ps.stock_id)
        )
    ).all()
    for seat_id, performance_id, stock_id in rows:
        freed.seats.setdefault(performance_id, []).append(seat_id)
        freed.by_stock.setdefault(stock_id, []).append(seat_id)
    return freed


async def _log_freed(
    conn: AsyncConnection,
    institution_id: int,
    stock_ids: set[int],
    freed: _Freed,
    now: datetime,
) -> None:
    """Log the counters and the freed seats, and once committed tell this process's seat
    indexes which seats are free again (other processes read it in the change log)."""
    await log_changes(conn, institution_id, stock_ids, now, freed=freed.by_stock)
    indexes = indexes_of(conn.engine)
    _current_afterwards(required=False).committed.append(
        lambda: _apply_own(indexes, freed=freed.seats)
    )


async def return_places_in(
    conn: AsyncConnection,
    *,
    institution_id: int,
    places: Sequence[tuple[int, int, int | None]],
    now: datetime,
    actor: str = "system",
) -> None:
    """Give sold places back to inventory, inside the caller's transaction: ``places`` are
    ``(hold id, stock id, performance seat id or None)``, one per place.

    Every place must belong to a confirmed hold of the institution and still be sold; a seat
    returned twice raises HoldClosed and the caller's transaction rolls back.
    """
    if not places:
        return
    hold_ids = sorted({hold_id for hold_id, _, _ in places})
    if not await _all_in_state(conn, institution_id, hold_ids, HoldState.CONFIRMED):
        raise InvalidQuantity("only places of a confirmed sale can be returned")
    seat_ids = sorted(seat_id for _, _, seat_id in places if seat_id is not None)
    freed = await _free_seats(conn, seat_ids, hold_ids, SeatState.SOLD)
    if freed.places() != len(seat_ids):
        raise HoldClosed("some of these seats were already returned")
    counts: dict[int, tuple[int, int]] = {}
    for _, stock_id, _ in places:
        held, sold = counts.get(stock_id, (0, 0))
        counts[stock_id] = (held, sold - 1)
    await _lock_stocks(conn, set(counts))
    await _move_counts(conn, institution_id, counts, now)
    await audit.record(
        conn,
        institution_id=institution_id,
        action="inventory.places.returned",
        actor=actor,
        at=now,
        holds=hold_ids,
        places=len(places),
    )
    await _log_freed(conn, institution_id, set(counts), freed, now)


async def release_places_in(
    conn: AsyncConnection,
    *,
    institution_id: int,
    places: Sequence[tuple[int, int, int | None]],
    now: datetime,
    actor: str = "system",
) -> None:
    """Give back some places of active holds, inside the caller's transaction: ``places`` are
    ``(hold id, stock id, performance seat id or None)``, one per place. The holds stay active
    with what is left; a place not held by its hold raises HoldClosed."""
    if not places:
        return
    line = db.hold_line.c
    hold_ids = sorted({hold_id for hold_id, _, _ in places})
    if not await _all_in_state(conn, institution_id, hold_ids, HoldState.ACTIVE):
        raise HoldClosed("these places are no longer held")
    seat_ids = sorted(seat_id for _, _, seat_id in places if seat_id is not None)
    freed = await _free_seats(conn, seat_ids, hold_ids, SeatState.HELD)
    if freed.places() != len(seat_ids):
        raise HoldClosed("some of these seats are no longer held")
    per_line: dict[tuple[int, int], int] = {}
    for hold_id, stock_id, _ in places:
        per_line[(hold_id, stock_id)] = per_line.get((hold_id, stock_id), 0) + 1
    for (hold_id, stock_id), quantity in sorted(per_line.items()):
        updated = await conn.execute(
            sa.update(db.hold_line)
            .where(line.hold_id == hold_id, line.stock_id == stock_id, line.quantity >= quantity)
            .values(quantity=line.quantity - quantity)
        )
        if updated.rowcount != 1:
            raise HoldClosed("these places are no longer held")
    counts: dict[int, tuple[int, int]] = {}
    for (_, stock_id), quantity in per_line.items():
        held, sold = counts.get(stock_id, (0, 0))
        counts[stock_id] = (held - quantity, sold)
    await _lock_stocks(conn, set(counts))
    await _move_counts(conn, institution_id, counts, now)
    await audit.record(
        conn,
        institution_id=institution_id,
        action="inventory.places.released",
        actor=actor,
        at=now,
        holds=hold_ids,
        places=len(places),
    )
    await _log_freed(conn, institution_id, set(counts), freed, now)


async def extend_holds_in(
    conn: AsyncConnection, *, institution_id: int, hold_ids: Sequence[int], expires_at: datetime
) -> None:
    """Keep active holds until ``expires_at`` (never shortens one), inside the caller's
    transaction: a buyer on a payment page keeps the places a while longer."""
    if not hold_ids:
        return
    h = db.hold.c
    await conn.execute(
        sa.update(db.hold)
        .where(
            h.id.in_(sorted(hold_ids)),
            h.institution_id == institution_id,
            h.state == HoldState.ACTIVE.value,
            h.expires_at < expires_at,
        )
        .values(expires_at=expires_at)
    )
