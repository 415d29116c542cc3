"""Oversell races: many buyers at once through the wire surface — carts, closes, abandons and
cancellations after the sale — never sell a seat twice or past capacity, and every count agrees
with every other (seats, counters, movements, tickets). On PostgreSQL (row locks, a lock
timeout) and on SQLite (one writer at a time)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.inventory import db as inventory
from billetterie.sales import db as sales
from billetterie.shared.db import read
from tests.conftest import Backend
from tests.sales_kit import Kit, open_kit

TASKS = 16
ROUNDS = 12
ORDERS = "externalOrderService"


@pytest.fixture
async def kit(scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path) -> AsyncIterator[Kit]:
    async with open_kit(scratch_engine, backend.scratch_url, tmp_path) as kit:
        yield kit


async def buyer(kit: Kit, seed: int, seen: Counter[str]) -> list[int]:
    """Random carts in C1 (30 seats) and C2 of SH01; returns the orders it saw closed and kept."""
    rng = random.Random(seed)
    kept: list[int] = []
    for _ in range(ROUNDS):
        category = rng.choice(["C1", "C1", "C2"])
        body = await kit.cart(kit.seats(category, rng.randint(1, 3)))
        seen[f"cart {body['statusCode']}"] += 1
        if body["statusCode"] != "success":
            continue
        order = body["orderUpdateData"]
        roll = rng.random()
        if roll < 0.15:
            movements = [m["movementId"] for m in order["movementDataUpdates"]]
            answer = await kit.rpc(
                ORDERS, "abandonMovements", {"orderId": order["orderId"], "movementIds": movements}
            )
            seen[f"abandon {answer['statusCode']}"] += 1
            continue
        closed = await kit.close(order["orderId"], [("CASH", order["totalAmount"])])
        seen[f"close {closed['statusCode']}"] += 1
        if closed["statusCode"] != "success":
            continue
        if roll > 0.8:
            operation = closed["orderData"]["operations"][0]["operationId"]
            answer = await kit.rpc(
                ORDERS,
                "cancelOperations",
                {"orderId": order["orderId"], "operationIds": [operation]},
            )
            seen[f"cancel {answer['statusCode']}"] += 1
            if answer["statusCode"] == "success":
                continue
        kept.append(order["orderId"])
    return kept


async def test_concurrent_buyers_never_oversell(kit: Kit) -> None:
    seen: Counter[str] = Counter()
    results = await asyncio.gather(*(buyer(kit, seed, seen) for seed in range(TASKS)))
    kept = {order_id for orders in results for order_id in orders}
    assert seen["cart success"] > 0 and seen["close success"] > 0
    assert seen["cart error.order.availability"] > 0, seen  # the plan really sold out
    unexpected = {k for k in seen if not k.endswith(("success", "error.order.availability"))}
    assert unexpected <= {"cart error.inventory.busy"}, seen

    ps, st, m, t, o = (
        inventory.performance_seat.c,
        inventory.stock.c,
        sales.movement.c,
        sales.ticket.c,
        sales.sales_order.c,
    )
    async with read(kit.engine) as conn:
        sold_movements = (
            await conn.execute(
                sa.select(m.performance_seat_id, m.order_id).where(m.state == "SOLD")
            )
        ).all()
        seat_ids = [r.performance_seat_id for r in sold_movements]
        assert len(seat_ids) == len(set(seat_ids)), "a seat was sold twice"
        sold_seats = {
            r.id for r in (await conn.execute(sa.select(ps.id).where(ps.state == "SOLD"))).all()
        }
        assert sold_seats == set(seat_ids)
        held_seats = (
            await conn.execute(sa.select(sa.func.count()).where(ps.state == "HELD"))
        ).scalar_one()
        counters = (
            await conn.execute(
                sa.select(
                    sa.func.sum(st.sold), sa.func.sum(st.held), sa.func.sum(st.capacity)
                ).where(st.numbered.is_(True))
            )
        ).one()
        assert (counters[0], counters[1]) == (len(sold_seats), held_seats)
        assert counters[0] <= counters[2]
        valid_tickets = (
            await conn.execute(
                sa.select(t.movement_id).where(t.state.in_(["NOT_PRINTED", "PRINTED"]))
            )
        ).all()
        assert len(valid_tickets) == len(sold_movements)
        barcodes = (await conn.execute(sa.select(t.barcode))).all()
        assert len({b.barcode for b in barcodes}) == len(barcodes)
        # the orders the buyers kept are exactly the closed ones with something sold
        closed = {
            r.id
            for r in (
                await conn.execute(
                    sa.select(o.id).where(o.state == "CLOSED", o.order_type == "SALE")
                )
            ).all()
        }
        assert closed == kept == {r.order_id for r in sold_movements}
        # every order's paid amount is what its sold movements cost
        paid: dict[int, Any] = {
            r.id: r.paid
            for r in (await conn.execute(sa.select(o.id, o.paid).where(o.id.in_(closed)))).all()
        }
        cost = Counter[int]()
        for r in (
            await conn.execute(sa.select(m.order_id, m.amount).where(m.state == "SOLD"))
        ).all():
            cost[r.order_id] += r.amount
        assert paid == dict(cost)
