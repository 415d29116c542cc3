"""Provisioning: the stock counters and performance seats an institution's catalog calls for.

Run in the setup import's transaction. Idempotent: stock rows are matched by ``key`` so their
held and sold counts survive a re-import; performance seats are added for new seats, the free
ones of seats no longer in the plan are removed and free seats follow a change of contingent
allocation to their new stock. A numbered stock's capacity is its number of seats; stock no
longer in the catalog keeps only what is held or sold.

Contingents of numbered plans take the seats of their category in reverse rank order (the
back rows), so the general pool keeps the best seats; on non-numbered zones they take a share of
the zone's capacity.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.catalog.services import InventoryPlan
from billetterie.inventory import db
from billetterie.inventory.models import SeatState
from billetterie.inventory.services import NOTIFY_CHANNEL, log_changes


def stock_key(
    *,
    performance_id: int | None = None,
    seat_category_id: int | None = None,
    contingent_id: int | None = None,
    product_item_id: int | None = None,
    timeslot_id: int | None = None,
) -> str:
    if performance_id is not None:
        return f"p{performance_id}:c{seat_category_id}:q{contingent_id or 0}"
    return f"i{product_item_id}:t{timeslot_id or 0}"


async def provision(
    conn: AsyncConnection, institution_id: int, plan: InventoryPlan, now: datetime
) -> int:
    """Create or update the institution's stock; returns the number of stock rows written."""
    seats_of_configuration: dict[int, list[Any]] = defaultdict(list)
    for seat in plan.seats:
        seats_of_configuration[seat.logical_configuration_id].append(seat)
    zones_of_configuration: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for zone in plan.zones:
        zones_of_configuration[zone.logical_configuration_id][zone.seat_category_id] += (
            zone.capacity
        )
    allocations: dict[tuple[int, int], list[Any]] = defaultdict(list)
    for allocation in plan.allocations:
        allocations[(allocation.performance_id, allocation.seat_category_id)].append(allocation)

    wanted: list[dict[str, Any]] = []
    seat_stock: dict[tuple[int, int], str] = {}  # (performance, seat) -> stock key
    for performance in plan.performances:
        by_category: dict[int, list[Any]] = defaultdict(list)
        for seat in seats_of_configuration[performance.logical_configuration_id]:
            by_category[seat.seat_category_id].append(seat)
        for category_id, seats in by_category.items():
            seats = sorted(seats, key=lambda s: s.rank)
            general = len(seats)
            for allocation in sorted(
                allocations[(performance.id, category_id)], key=lambda a: a.contingent_id
            ):
                taken = seats[max(general - allocation.quantity, 0) : general]
                general -= len(taken)
                key = stock_key(
                    performance_id=performance.id,
                    seat_category_id=category_id,
                    contingent_id=allocation.contingent_id,
                )
                wanted.append(
                    _stock(
                        key, performance, category_id, allocation.contingent_id, True, len(taken)
                    )
                )
                seat_stock.update({(performance.id, s.seat_id): key for s in taken})
            key = stock_key(performance_id=performance.id, seat_category_id=category_id)
            wanted.append(_stock(key, performance, category_id, None, True, general))
            seat_stock.update({(performance.id, s.seat_id): key for s in seats[:general]})
        for category_id, capacity in zones_of_configuration[
            performance.logical_configuration_id
        ].items():
            general = capacity
            for allocation in sorted(
                allocations[(performance.id, category_id)], key=lambda a: a.contingent_id
            ):
                share = min(allocation.quantity, general)
                general -= share
                key = stock_key(
                    performance_id=performance.id,
                    seat_category_id=category_id,
                    contingent_id=allocation.contingent_id,
                )
                wanted.append(
                    _stock(key, performance, category_id, allocation.contingent_id, False, share)
                )
            key = stock_key(performance_id=performance.id, seat_category_id=category_id)
            wanted.append(_stock(key, performance, category_id, None, False, general))
    timeslots_of: dict[int, list[Any]] = defaultdict(list)
    for slot in plan.timeslots:
        timeslots_of[slot.product_item_id].append(slot)
    for item in plan.items:
        slots = timeslots_of.get(item.id, [])
        if slots:
            for slot in slots:
                wanted.append(_item_stock(item, slot.id, slot.quota))
        else:
            wanted.append(_item_stock(item, None, item.capacity))

    ids, changed = await _sync_stock(conn, institution_id, wanted)
    await _sync_seats(conn, institution_id, plan, seats_of_configuration, seat_stock, ids)
    changed |= await _fit_capacities(conn, institution_id, {w["key"] for w in wanted})
    await conn.execute(
        sa.insert(db.inventory_sequence).from_select(
            ["institution_id", "value"],
            sa.select(sa.literal(institution_id), sa.literal(0)).where(
                ~sa.exists().where(db.inventory_sequence.c.institution_id == institution_id)
            ),
        )
    )
    # new or resized stock is a change like any other: boards and feeds follow it
    await log_changes(conn, institution_id, changed, now)
    if conn.dialect.name == "postgresql":  # boards re-read the channels' versions at commit
        await conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, f"{institution_id}:setup")))
    return len(wanted)


def _stock(
    key: str,
    performance: Any,
    category_id: int,
    contingent_id: int | None,
    numbered: bool,
    capacity: int,
) -> dict[str, Any]:
    return {
        "key": key,
        "product_id": performance.product_id,
        "performance_id": performance.id,
        "seat_category_id": category_id,
        "contingent_id": contingent_id,
        "product_item_id": None,
        "timeslot_id": None,
        "numbered": numbered,
        "capacity": capacity,
    }


def _item_stock(item: Any, timeslot_id: int | None, capacity: int | None) -> dict[str, Any]:
    return {
        "key": stock_key(product_item_id=item.id, timeslot_id=timeslot_id),
        "product_id": item.product_id,
        "performance_id": None,
        "seat_category_id": None,
        "contingent_id": None,
        "product_item_id": item.id,
        "timeslot_id": timeslot_id,
        "numbered": False,
        "capacity": capacity,
    }


async def _sync_stock(
    conn: AsyncConnection, institution_id: int, wanted: list[dict[str, Any]]
) -> tuple[dict[str, int], set[int]]:
    """Stock rows by key; returns their ids and the ids of the rows created or resized."""
    s = db.stock.c
    existing = {
        r.key: r
        for r in (
            await conn.execute(
                sa.select(s.id, s.key, s.capacity, s.held, s.sold, s.blocked).where(
                    s.institution_id == institution_id
                )
            )
        ).all()
    }
    inserts = [{"institution_id": institution_id, **w} for w in wanted if w["key"] not in existing]
    ids = {key: row.id for key, row in existing.items()}
    changed: set[int] = set()
    if inserts:
        for row in (await conn.execute(sa.insert(db.stock).returning(s.id, s.key), inserts)).all():
            ids[row.key] = row.id
            changed.add(row.id)
    for w in wanted:
        current = existing.get(w["key"])
        if current is not None and current.capacity != w["capacity"]:
            row = current
            # never below what is already held or sold
            floor = row.held + row.sold + row.blocked
            capacity = None if w["capacity"] is None else max(w["capacity"], floor)
            await conn.execute(sa.update(db.stock).where(s.id == row.id).values(capacity=capacity))
            changed.add(row.id)
    return ids, changed


async def _sync_seats(
    conn: AsyncConnection,
    institution_id: int,
    plan: InventoryPlan,
    seats_of_configuration: dict[int, list[Any]],
    seat_stock: dict[tuple[int, int], str],
    stock_ids: dict[str, int],
) -> None:
    ps = db.performance_seat.c
    existing = {
        (r.performance_id, r.seat_id): r
        for r in (
            await conn.execute(
                sa.select(ps.id, ps.performance_id, ps.seat_id, ps.state, ps.stock_id).where(
                    ps.institution_id == institution_id
                )
            )
        ).all()
    }
    geometry: dict[int, tuple[int, int]] = {}  # seat id -> (row_order, position)
    for seats in seats_of_configuration.values():
        rows: dict[tuple[int, str], list[Any]] = defaultdict(list)
        for seat in seats:
            rows[(seat.block_id, seat.row)].append(seat)
        by_block: dict[int, list[tuple[float, str]]] = defaultdict(list)
        for (block_id, row), row_seats in rows.items():
            by_block[block_id].append((min(s.y for s in row_seats), row))
        for block_id, block_rows in by_block.items():
            for row_order, (_, row) in enumerate(sorted(block_rows)):
                for position, seat in enumerate(
                    sorted(rows[(block_id, row)], key=lambda s: (s.x, s.number))
                ):
                    geometry[seat.seat_id] = (row_order, position)
    inserts = []
    for performance in plan.performances:
        for seat in seats_of_configuration[performance.logical_configuration_id]:
            key = (performance.id, seat.seat_id)
            if key in existing:
                continue
            row_order, position = geometry[seat.seat_id]
            inserts.append(
                {
                    "institution_id": institution_id,
                    "performance_id": performance.id,
                    "stock_id": stock_ids[seat_stock[key]],
                    "seat_id": seat.seat_id,
                    "block_id": seat.block_id,
                    "row": seat.row,
                    "row_order": row_order,
                    "number": seat.number,
                    "position": position,
                    "x": float(seat.x),
                    "y": float(seat.y),
                    "rank": seat.rank,
                    "state": SeatState.FREE.value,
                    "hold_id": None,
                }
            )
    await _insert_seats(conn, inserts)
    stale = [
        r.id
        for key, r in existing.items()
        if key not in seat_stock and r.state == SeatState.FREE.value
    ]
    for start in range(0, len(stale), 500):
        await conn.execute(
            sa.delete(db.performance_seat).where(ps.id.in_(stale[start : start + 500]))
        )
    # free seats whose stock changed (a contingent allocation grew, shrank or went) move; held
    # and sold ones stay where their counters are
    moves: dict[int, list[int]] = defaultdict(list)
    for key, r in existing.items():
        if key in seat_stock and r.state == SeatState.FREE.value:
            stock_id = stock_ids[seat_stock[key]]
            if r.stock_id != stock_id:
                moves[stock_id].append(r.id)
    for stock_id, seat_ids in sorted(moves.items()):
        for start in range(0, len(seat_ids), 500):
            await conn.execute(
                sa.update(db.performance_seat)
                .where(ps.id.in_(sorted(seat_ids)[start : start + 500]))
                .values(stock_id=stock_id)
            )


SEAT_COLUMNS = (
    "institution_id",
    "performance_id",
    "stock_id",
    "seat_id",
    "block_id",
    "row",
    "row_order",
    "number",
    "position",
    "x",
    "y",
    "rank",
    "state",
    "hold_id",
)


COPY_SEATS = True  # bench/provisioning.py turns it off to compare


async def _insert_seats(
    conn: AsyncConnection, rows: list[dict[str, Any]], *, copy: bool | None = None
) -> None:
    """Insert performance seats in bulk: ``COPY`` on PostgreSQL (asyncpg's
    ``copy_records_to_table``, in the import's transaction), batched ``executemany``
    elsewhere or with ``copy=False`` (default: ``COPY_SEATS``)."""
    if not rows:
        return
    if (COPY_SEATS if copy is None else copy) and conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        if driver is not None and hasattr(driver, "copy_records_to_table"):
            await driver.copy_records_to_table(
                db.performance_seat.name,
                records=[tuple(row[c] for c in SEAT_COLUMNS) for row in rows],
                columns=list(SEAT_COLUMNS),
            )
            return
    for start in range(0, len(rows), 5000):
        await conn.execute(sa.insert(db.performance_seat), rows[start : start + 5000])


async def _fit_capacities(
    conn: AsyncConnection, institution_id: int, wanted_keys: set[str]
) -> set[int]:
    """Numbered stock holds as many places as it has seats; stock the catalog no longer calls
    for keeps only what is held or sold. Returns the ids of the stock rows resized."""
    s, ps = db.stock.c, db.performance_seat.c
    seats = (
        sa.select(sa.func.count()).where(ps.stock_id == s.id).correlate(db.stock).scalar_subquery()
    )
    rows = (
        await conn.execute(
            sa.select(s.id, s.key, s.numbered, s.capacity, s.held, s.sold, s.blocked, seats).where(
                s.institution_id == institution_id
            )
        )
    ).all()
    resized: set[int] = set()
    for r in rows:
        if r.numbered:
            capacity = r[-1]
        elif r.key not in wanted_keys:
            capacity = r.held + r.sold + r.blocked
        else:
            continue
        if capacity != r.capacity:
            await conn.execute(sa.update(db.stock).where(s.id == r.id).values(capacity=capacity))
            resized.add(r.id)
    return resized
