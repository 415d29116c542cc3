"""Inventory reads that go to the database: seat maps, the change feed, updated products.

These never feed the sale path; they answer partners. Seats held by an expired hold read as
free, whether or not the sweeper has released them yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.inventory import db
from billetterie.inventory.models import HoldState, SeatState
from billetterie.shared.statements import constant

MAX_CHANGES = 1000


async def seat_map(
    conn: AsyncConnection,
    *,
    institution_id: int,
    performance_id: int,
    contingents: set[int],
    block_ids: Sequence[int] = (),
    now: datetime,
) -> list[dict[str, Any]]:
    """Every seat of a performance with its place, category and state as this channel sees it:
    seats of other channels' contingents read ``NOT_FOR_SALE``."""
    ps, s, h = db.performance_seat.c, db.stock.c, db.hold.c
    query = (
        sa.select(
            ps.id,
            ps.seat_id,
            ps.block_id,
            ps.row,
            ps.number,
            ps.x,
            ps.y,
            ps.rank,
            ps.state,
            s.seat_category_id,
            s.contingent_id,
            h.expires_at,
        )
        .join(db.stock, s.id == ps.stock_id)
        .outerjoin(db.hold, h.id == ps.hold_id)
        .where(ps.institution_id == institution_id, ps.performance_id == performance_id)
        .order_by(ps.block_id, ps.row_order, ps.position)
    )
    if block_ids:
        query = query.where(ps.block_id.in_(list(block_ids)))
    seats = []
    for r in (await conn.execute(query)).all():
        seats.append(
            {
                "id": r.id,
                "seatId": r.seat_id,
                "blockId": r.block_id,
                "row": r.row,
                "number": r.number,
                "x": r.x,
                "y": r.y,
                "rank": r.rank,
                "seatCategoryId": r.seat_category_id,
                "contingentId": r.contingent_id,
                "state": _state(r, contingents, now),
            }
        )
    return seats


def _state(r: Any, contingents: set[int], now: datetime) -> str:
    state: str = r.state
    if state == SeatState.HELD.value and r.expires_at is not None and r.expires_at <= now:
        state = SeatState.FREE.value
    if r.contingent_id is not None and r.contingent_id not in contingents:
        state = "NOT_FOR_SALE"
    return state


async def block_overview(
    conn: AsyncConnection,
    *,
    institution_id: int,
    performance_id: int,
    contingents: set[int],
    now: datetime,
) -> list[dict[str, Any]]:
    """Each block of a performance's seats, in one aggregate query: its extent in the plan's
    coordinates, its seats, the seats free for this channel (as :func:`seat_map` counts them:
    seats of expired holds are free, seats of other channels' contingents are not) and the
    earliest expiry after ``now`` of a hold on one of its seats (``nextExpiry``: the counts
    hold until then unless the change sequence moves)."""
    ps, s, h = db.performance_seat.c, db.stock.c, db.hold.c
    held = ps.state == SeatState.HELD.value
    allowed: sa.ColumnElement[bool] = s.contingent_id.is_(None)
    if contingents:
        allowed = sa.or_(allowed, s.contingent_id.in_(sorted(contingents)))
    free = sa.and_(
        allowed,
        sa.or_(ps.state == SeatState.FREE.value, sa.and_(held, h.expires_at <= now)),
    )
    query = (
        sa.select(
            ps.block_id,
            sa.func.min(ps.x).label("x0"),
            sa.func.min(ps.y).label("y0"),
            sa.func.max(ps.x).label("x1"),
            sa.func.max(ps.y).label("y1"),
            sa.func.count().label("seats"),
            sa.func.sum(sa.case((free, 1), else_=0)).label("free"),
            sa.func.min(sa.case((sa.and_(held, h.expires_at > now), h.expires_at))).label(
                "next_expiry"
            ),
        )
        .select_from(db.performance_seat)
        .join(db.stock, s.id == ps.stock_id)
        .outerjoin(db.hold, h.id == ps.hold_id)
        .where(ps.institution_id == institution_id, ps.performance_id == performance_id)
        .group_by(ps.block_id)
    )
    return [
        {
            "id": r.block_id,
            "x0": r.x0,
            "y0": r.y0,
            "x1": r.x1,
            "y1": r.y1,
            "seats": int(r.seats),
            "free": int(r.free or 0),
            "nextExpiry": _aware(r.next_expiry),
        }
        for r in (await conn.execute(query)).all()
    ]


def _aware(value: Any) -> datetime | None:
    """An aggregate loses the column's type (SQLite answers text): back to an aware datetime."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, datetime)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def seat_categories(
    conn: AsyncConnection, *, institution_id: int, performance_id: int, seat_ids: Sequence[int]
) -> dict[int, int | None]:
    """The seat category of each of these performance seats (``performance_seat`` ids) that
    belongs to the performance; the others are left out."""
    if not seat_ids:
        return {}
    ps, s = db.performance_seat.c, db.stock.c
    rows = await conn.execute(
        sa.select(ps.id, s.seat_category_id)
        .join(db.stock, s.id == ps.stock_id)
        .where(
            ps.institution_id == institution_id,
            ps.performance_id == performance_id,
            ps.id.in_(list(seat_ids)),
        )
    )
    return {int(r.id): r.seat_category_id for r in rows}


async def changes_since(
    conn: AsyncConnection, *, institution_id: int, since: int, limit: int = MAX_CHANGES
) -> tuple[list[Any], int]:
    """Change rows after sequence ``since`` (whole sequences only), and the cursor to resume."""
    c = db.inventory_change.c
    rows = (
        await conn.execute(
            sa.select(
                db.inventory_change,
                db.stock.c.seat_category_id,
                db.stock.c.contingent_id,
                db.stock.c.product_item_id,
                db.stock.c.timeslot_id,
            )
            .join(db.stock, db.stock.c.id == c.stock_id)
            .where(c.institution_id == institution_id, c.sequence > since)
            .order_by(c.sequence, c.id)
            .limit(limit + 1)
        )
    ).all()
    if len(rows) > limit:  # never cut a sequence in two: stop before the last, partial one
        last = rows[limit].sequence
        rows = [r for r in rows[:limit] if r.sequence != last] or [
            r for r in rows if r.sequence == rows[0].sequence
        ]
    cursor = rows[-1].sequence if rows else since
    return list(rows), cursor


async def current_sequence(conn: AsyncConnection, institution_id: int) -> int:
    q = db.inventory_sequence.c
    value = (
        await conn.execute(sa.select(q.value).where(q.institution_id == institution_id))
    ).scalar_one_or_none()
    return int(value or 0)


async def updated_products(
    conn: AsyncConnection, *, institution_id: int, since: datetime, product_ids: Sequence[int] = ()
) -> list[tuple[int, datetime]]:
    """Products whose availability changed after ``since``, with the time of the last change."""
    c = db.inventory_change.c
    query = (
        sa.select(c.product_id, sa.func.max(c.at))
        .where(c.institution_id == institution_id, c.at > since)
        .group_by(c.product_id)
        .order_by(c.product_id)
    )
    if product_ids:
        query = query.where(c.product_id.in_(list(product_ids)))
    return [(int(r[0]), r[1]) for r in (await conn.execute(query)).all()]


async def has_expired_holds(conn: AsyncConnection, now: datetime) -> bool:
    """Whether the sweeper has work (a cheap read before taking the write lock)."""
    h = db.hold.c
    row = (
        await conn.execute(
            sa.select(h.id)
            .where(h.state == constant(HoldState.ACTIVE.value), h.expires_at <= now)
            .limit(1)
        )
    ).first()
    return row is not None
