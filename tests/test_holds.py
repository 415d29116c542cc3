"""Holds: hold, confirm, release and expire places — the contract, step by step, and its
invariants under concurrent load on SQLite and PostgreSQL.

The plan is :func:`tests.test_provision.rich_document`: SH01 and SH02 of SHOW with C1 (block A,
30 seats), C2 (block B: 25 pool seats and the reseller contingent RESQ's 5 worst seats), the
non-numbered zone C3 (42 pool places, 8 for RESQ); the pass items DAY (unlimited), CAP (20) and
SLOT (timeslots of 40 and 15). WEB sells the pools; RES (contingent RESQ) its contingent first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.inventory import db
from billetterie.inventory.errors import (
    Busy,
    HoldClosed,
    InvalidQuantity,
    NotAvailable,
    UnknownHold,
    UnknownInventory,
)
from billetterie.inventory.provision import stock_key
from billetterie.inventory.seat_indexes import SeatIndexes
from billetterie.inventory.services import (
    MAX_QUANTITY,
    Hold,
    PlaceRequest,
    confirm_hold,
    expire_holds,
    hold_places,
    in_transaction,
    release_hold,
)
from billetterie.shared.audit import audit_entry
from billetterie.shared.db import read
from tests.conftest import NOW
from tests.factories import import_document
from tests.test_provision import Shop, load_shop, rich_document

LATER = NOW + timedelta(minutes=15)


@dataclass
class Box:
    """The ACME box office of :func:`rich_document`, with helpers to call the services."""

    engine: AsyncEngine
    shop: Shop
    stock_ids: dict[str, int]

    @property
    def institution_id(self) -> int:
        return self.shop.institution_id

    def stock(self, category: str, contingent: str | None = None, performance: str = "SH01") -> int:
        return self.stock_ids[self.shop.stock_key(performance, category, contingent)]

    def item_stock(self, code: str, timeslot: int | None = None) -> int:
        return self.stock_ids[
            stock_key(product_item_id=self.shop.items[code], timeslot_id=timeslot)
        ]

    def seats(
        self, category: str, quantity: int, *, performance: str = "SH01", seat_ids: Any = ()
    ) -> PlaceRequest:
        return PlaceRequest(
            quantity,
            performance_id=self.shop.performances[performance],
            seat_category_id=self.shop.categories[category],
            seat_ids=tuple(seat_ids),
        )

    def item(self, code: str, quantity: int, timeslot: int | None = None) -> PlaceRequest:
        return PlaceRequest(quantity, product_item_id=self.shop.items[code], timeslot_id=timeslot)

    async def hold(
        self,
        *requests: PlaceRequest,
        channel: str = "WEB",
        now: datetime = NOW,
        expires_at: datetime | None = None,
        split: bool = False,
        cart: str = "cart",
        indexes: SeatIndexes | None = None,
    ) -> Hold:
        return await hold_places(
            self.engine,
            institution_id=self.institution_id,
            sales_channel_id=self.shop.channels[channel],
            contingent_ids=[self.shop.contingents["RESQ"]] if channel == "RES" else [],
            cart=cart,
            requests=list(requests),
            expires_at=now + timedelta(minutes=15) if expires_at is None else expires_at,
            now=now,
            split_allowed=split,
            seat_indexes=indexes,
        )

    async def confirm(
        self, hold_id: int, now: datetime = NOW, indexes: SeatIndexes | None = None
    ) -> None:
        await confirm_hold(
            self.engine,
            institution_id=self.institution_id,
            hold_id=hold_id,
            now=now,
            seat_indexes=indexes,
        )

    async def release(
        self, hold_id: int, now: datetime = NOW, indexes: SeatIndexes | None = None
    ) -> None:
        await release_hold(
            self.engine,
            institution_id=self.institution_id,
            hold_id=hold_id,
            now=now,
            seat_indexes=indexes,
        )

    async def counts(self, stock_id: int) -> tuple[int, int]:
        s = db.stock.c
        async with read(self.engine) as conn:
            row = (await conn.execute(sa.select(s.held, s.sold).where(s.id == stock_id))).one()
        return row.held, row.sold

    async def seat_rows(self, **where: Any) -> list[Any]:
        ps = db.performance_seat.c
        query = sa.select(db.performance_seat).order_by(ps.id)
        for column, value in where.items():
            query = query.where(ps[column] == value)
        async with read(self.engine) as conn:
            return list((await conn.execute(query)).all())

    async def hold_state(self, hold_id: int) -> str:
        async with read(self.engine) as conn:
            state: str = (
                await conn.execute(sa.select(db.hold.c.state).where(db.hold.c.id == hold_id))
            ).scalar_one()
        return state

    async def sequence(self) -> int:
        q = db.inventory_sequence.c
        async with read(self.engine) as conn:
            return int(
                (
                    await conn.execute(
                        sa.select(q.value).where(q.institution_id == self.institution_id)
                    )
                ).scalar_one()
            )

    async def assert_logged(self, before: int, expected: dict[int, tuple[int, int]]) -> None:
        """The call after ``before`` wrote one change: the next sequence, one row per touched
        stock with its counters (held, sold) after the change."""
        c = db.inventory_change.c
        async with read(self.engine) as conn:
            rows = (
                await conn.execute(
                    sa.select(db.inventory_change, db.stock.c.capacity.label("now_capacity"))
                    .join(db.stock, db.stock.c.id == c.stock_id)
                    .where(c.institution_id == self.institution_id, c.sequence > before)
                )
            ).all()
        assert {r.sequence for r in rows} == {before + 1}
        assert {r.stock_id: (r.held, r.sold) for r in rows} == expected
        assert all(r.capacity == r.now_capacity for r in rows)
        assert await self.sequence() == before + 1


@pytest.fixture
async def box(scratch_engine: AsyncEngine) -> AsyncIterator[Box]:
    await import_document(scratch_engine, rich_document())
    async with read(scratch_engine) as conn:
        ids = {r.key: r.id for r in (await conn.execute(sa.select(db.stock))).all()}
    yield Box(scratch_engine, await load_shop(scratch_engine), ids)


async def snapshot(engine: AsyncEngine) -> dict[str, Any]:
    """Everything a hold could write, to assert that a refused call wrote nothing."""
    s, ps, h = db.stock.c, db.performance_seat.c, db.hold.c
    async with read(engine) as conn:

        async def count(table: sa.Table) -> int:
            return int(
                (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            )

        return {
            "stock": (
                await conn.execute(
                    sa.select(s.id, s.capacity, s.held, s.sold, s.blocked).order_by(s.id)
                )
            ).all(),
            "seats": (
                await conn.execute(
                    sa.select(ps.id, ps.stock_id, ps.state, ps.hold_id).order_by(ps.id)
                )
            ).all(),
            "holds": (await conn.execute(sa.select(h.id, h.state).order_by(h.id))).all(),
            "hold": await count(db.hold),
            "hold_line": await count(db.hold_line),
            "inventory_change": await count(db.inventory_change),
            "audit_entry": await count(audit_entry),
            "sequence": (await conn.execute(sa.select(db.inventory_sequence))).all(),
        }


@contextlib.asynccontextmanager
async def snapshot_read(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read transaction that sees one snapshot (REPEATABLE READ on PostgreSQL)."""
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":  # one snapshot for every statement
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield conn


async def check_invariants(engine: AsyncEngine) -> None:
    """What must hold in every committed state, read in one snapshot."""
    ps, h, line = db.performance_seat.c, db.hold.c, db.hold_line.c
    async with snapshot_read(engine) as conn:
        stocks = {r.id: r for r in (await conn.execute(sa.select(db.stock))).all()}
        holds = {r.id: r.state for r in (await conn.execute(sa.select(h.id, h.state))).all()}
        seats = (await conn.execute(sa.select(ps.id, ps.stock_id, ps.state, ps.hold_id))).all()
        lines = (await conn.execute(sa.select(line.hold_id, line.stock_id, line.quantity))).all()
        changes = (
            await conn.execute(
                sa.select(db.inventory_change).order_by(db.inventory_change.c.sequence)
            )
        ).all()
        sequences = {
            r.institution_id: r.value
            for r in (await conn.execute(sa.select(db.inventory_sequence))).all()
        }

    # stock counters are within bounds
    for row in stocks.values():
        assert row.held >= 0 and row.sold >= 0, row
        assert row.capacity is None or row.held + row.sold + row.blocked <= row.capacity, row
        assert not row.numbered or row.capacity is not None, row

    # seats: a HELD seat belongs to one active hold, a SOLD seat to one confirmed hold
    seat_states: Counter[tuple[int, str]] = Counter()
    seats_of_line: Counter[tuple[int, int]] = Counter()
    for seat in seats:
        seat_states[(seat.stock_id, seat.state)] += 1
        seat_states[(seat.stock_id, "ALL")] += 1
        if seat.state == "FREE":
            assert seat.hold_id is None, seat
            continue
        assert seat.state in ("HELD", "SOLD"), seat
        expected = "ACTIVE" if seat.state == "HELD" else "CONFIRMED"
        assert holds.get(seat.hold_id) == expected, (seat, holds.get(seat.hold_id))
        seats_of_line[(seat.hold_id, seat.stock_id)] += 1
    for stock_id, row in stocks.items():
        if row.numbered:
            assert row.capacity == seat_states[(stock_id, "ALL")], row
            assert row.held == seat_states[(stock_id, "HELD")], row
            assert row.sold == seat_states[(stock_id, "SOLD")], row

    # hold lines: active lines add up to held, confirmed ones to sold; a line's seats are its
    # quantity, so no seat counts in two holds
    held_lines: Counter[int] = Counter()
    sold_lines: Counter[int] = Counter()
    line_places: Counter[tuple[int, int]] = Counter()
    for r in lines:
        assert r.quantity >= 1, r
        line_places[(r.hold_id, r.stock_id)] += r.quantity
        state = holds[r.hold_id]
        if state == "ACTIVE":
            held_lines[r.stock_id] += r.quantity
        elif state == "CONFIRMED":
            sold_lines[r.stock_id] += r.quantity
    for (hold_id, stock_id), places in line_places.items():
        numbered = stocks[stock_id].numbered and holds[hold_id] in ("ACTIVE", "CONFIRMED")
        assert seats_of_line[(hold_id, stock_id)] == (places if numbered else 0), (
            hold_id,
            stock_id,
            places,
        )
    assert set(seats_of_line) <= set(line_places)
    for stock_id, row in stocks.items():
        assert (row.held, row.sold) == (held_lines[stock_id], sold_lines[stock_id]), row

    # the change log: per institution the sequences 1..value without gap, the last change of
    # each stock shows its counters
    by_institution: dict[int, set[int]] = {}
    last: dict[int, Any] = {}
    for change in changes:
        by_institution.setdefault(change.institution_id, set()).add(change.sequence)
        last[change.stock_id] = change
    for institution_id, value in sequences.items():
        assert by_institution.get(institution_id, set()) == set(range(1, value + 1))
    for stock_id, change in last.items():
        if stock_id in stocks:
            row = stocks[stock_id]
            assert (change.held, change.sold, change.blocked, change.capacity) == (
                row.held,
                row.sold,
                row.blocked,
                row.capacity,
            ), (change, row)


def together(seats: list[Any]) -> bool:
    """Side by side in one row."""
    positions = sorted(s.position for s in seats)
    return len({(s.block_id, s.row_order) for s in seats}) == 1 and positions == list(
        range(positions[0], positions[0] + len(seats))
    )


# --- hold, confirm, release ------------------------------------------------------------------


async def test_best_available_hold_then_confirm(box: Box) -> None:
    c1 = box.stock("C1")
    before = await box.sequence()
    hold = await box.hold(box.seats("C1", 3))

    assert hold.state == "ACTIVE" and hold.expires_at == LATER and hold.cart == "cart"
    [line] = hold.lines
    assert (line.stock_id, line.quantity, len(line.seat_ids)) == (c1, 3, 3)
    seats = await box.seat_rows(hold_id=hold.id)
    assert [s.id for s in seats] == sorted(line.seat_ids)
    assert together(seats)
    assert all(s.state == "HELD" and s.stock_id == c1 for s in seats)
    # the best seats: block A row 1 (front), around the middle
    assert {(s.row, s.number) for s in seats} == {("1", "5"), ("1", "6"), ("1", "7")}
    assert await box.counts(c1) == (3, 0)
    assert await box.hold_state(hold.id) == "ACTIVE"
    await box.assert_logged(before, {c1: (3, 0)})
    await check_invariants(box.engine)

    before = await box.sequence()
    await box.confirm(hold.id)
    seats = await box.seat_rows(hold_id=hold.id)
    assert [s.id for s in seats] == sorted(line.seat_ids)
    assert all(s.state == "SOLD" for s in seats)
    assert await box.counts(c1) == (0, 3)
    assert await box.hold_state(hold.id) == "CONFIRMED"
    await box.assert_logged(before, {c1: (0, 3)})

    # a confirmed hold is closed for both
    state = await snapshot(box.engine)
    with pytest.raises(HoldClosed):
        await box.confirm(hold.id)
    with pytest.raises(HoldClosed):
        await box.release(hold.id)
    assert await snapshot(box.engine) == state
    await check_invariants(box.engine)


async def test_preferred_blocks_without_seats_fall_back_to_the_best_anywhere(box: Box) -> None:
    """C1 has no seat in block B: preferring it gives the best C1 seats, as without."""
    block_b = next(block_id for block_id, code in box.shop.blocks.items() if code == "B")
    request = dataclasses.replace(box.seats("C1", 3), preferred_blocks=(block_b,))
    hold = await box.hold(request)
    seats = await box.seat_rows(hold_id=hold.id)
    assert {(s.row, s.number) for s in seats} == {("1", "5"), ("1", "6"), ("1", "7")}
    block_a = next(block_id for block_id, code in box.shop.blocks.items() if code == "A")
    again = await box.hold(dataclasses.replace(box.seats("C1", 2), preferred_blocks=(block_a,)))
    assert {box.shop.blocks[s.block_id] for s in await box.seat_rows(hold_id=again.id)} == {"A"}
    await check_invariants(box.engine)


async def test_release_gives_the_places_back_once(box: Box) -> None:
    c1 = box.stock("C1")
    hold = await box.hold(box.seats("C1", 2))
    before = await box.sequence()
    await box.release(hold.id)
    assert await box.seat_rows(hold_id=hold.id) == []
    for seat_id in hold.lines[0].seat_ids:
        [seat] = await box.seat_rows(id=seat_id)
        assert (seat.state, seat.hold_id) == ("FREE", None)
    assert await box.counts(c1) == (0, 0)
    assert await box.hold_state(hold.id) == "RELEASED"
    await box.assert_logged(before, {c1: (0, 0)})

    state = await snapshot(box.engine)
    await box.release(hold.id)  # idempotent: nothing happens, nothing is logged
    assert await snapshot(box.engine) == state
    with pytest.raises(HoldClosed):
        await box.confirm(hold.id)
    assert await snapshot(box.engine) == state
    # the same seats can be held again
    again = await box.hold(box.seats("C1", 2))
    assert again.lines[0].seat_ids == hold.lines[0].seat_ids
    await check_invariants(box.engine)


async def test_confirm_after_expiry_is_refused(box: Box) -> None:
    c1 = box.stock("C1")
    expires = NOW + timedelta(minutes=1)
    hold = await box.hold(box.seats("C1", 2), expires_at=expires)
    state = await snapshot(box.engine)
    with pytest.raises(HoldClosed):
        await box.confirm(hold.id, now=expires)  # expiry is exclusive
    with pytest.raises(HoldClosed):
        await box.confirm(hold.id, now=expires + timedelta(seconds=1))
    assert await snapshot(box.engine) == state
    assert await box.counts(c1) == (2, 0)

    before = await box.sequence()
    assert await expire_holds(box.engine, now=expires) == 1
    assert await box.hold_state(hold.id) == "EXPIRED"
    assert await box.counts(c1) == (0, 0)
    assert await box.seat_rows(hold_id=hold.id) == []
    await box.assert_logged(before, {c1: (0, 0)})
    state = await snapshot(box.engine)
    with pytest.raises(HoldClosed):
        await box.confirm(hold.id, now=NOW)
    await box.release(hold.id)  # already given back: nothing to do
    assert await snapshot(box.engine) == state
    assert await expire_holds(box.engine, now=expires + timedelta(hours=1)) == 0
    assert await snapshot(box.engine) == state


async def test_unknown_holds(box: Box) -> None:
    state = await snapshot(box.engine)
    with pytest.raises(UnknownHold):
        await box.confirm(424242)
    with pytest.raises(UnknownHold):
        await box.release(424242)
    assert await snapshot(box.engine) == state


# --- given seats -----------------------------------------------------------------------------


async def test_given_seats_are_held_as_given(box: Box) -> None:
    c1 = box.stock("C1")
    free = await box.seat_rows(stock_id=c1)
    wanted = [free[0].id, free[17].id]  # not together: given seats need not be
    hold = await box.hold(box.seats("C1", 2, seat_ids=wanted))
    assert hold.lines[0].seat_ids == tuple(sorted(wanted))
    assert [s.id for s in await box.seat_rows(hold_id=hold.id)] == sorted(wanted)
    assert await box.counts(c1) == (2, 0)

    state = await snapshot(box.engine)
    for seat_ids in ([wanted[0]], [free[1].id, wanted[1]]):  # taken, partly taken
        with pytest.raises(NotAvailable) as refused:
            await box.hold(box.seats("C1", len(seat_ids), seat_ids=seat_ids))
        assert refused.value.code == "error.order.availability"
        assert await snapshot(box.engine) == state
    await check_invariants(box.engine)


async def test_given_seats_of_another_stock_are_not_available(box: Box) -> None:
    c2_seat = (await box.seat_rows(stock_id=box.stock("C2")))[0].id
    resq_seat = (await box.seat_rows(stock_id=box.stock("C2", "RESQ")))[0].id
    sh02_seat = (await box.seat_rows(stock_id=box.stock("C1", performance="SH02")))[0].id
    state = await snapshot(box.engine)
    for request, channel in (
        (box.seats("C1", 1, seat_ids=[c2_seat]), "WEB"),  # another category
        (box.seats("C1", 1, seat_ids=[sh02_seat]), "WEB"),  # another performance
        (box.seats("C2", 1, seat_ids=[resq_seat]), "WEB"),  # the contingent, not for the web
        (box.seats("C2", 1, seat_ids=[424242]), "WEB"),  # no such seat
    ):
        with pytest.raises(NotAvailable):
            await box.hold(request, channel=channel)
        assert await snapshot(box.engine) == state
    # the reseller may take a contingent seat by number
    hold = await box.hold(box.seats("C2", 1, seat_ids=[resq_seat]), channel="RES")
    assert hold.lines[0].stock_id == box.stock("C2", "RESQ")
    assert await box.counts(box.stock("C2", "RESQ")) == (1, 0)


async def test_given_seats_must_match_the_quantity(box: Box) -> None:
    seats = await box.seat_rows(stock_id=box.stock("C1"))
    state = await snapshot(box.engine)
    for request in (
        box.seats("C1", 2, seat_ids=[seats[0].id]),
        box.seats("C1", 2, seat_ids=[seats[0].id, seats[0].id]),
        PlaceRequest(1, product_item_id=box.shop.items["CAP"], seat_ids=(seats[0].id,)),
    ):
        with pytest.raises(InvalidQuantity):
            await box.hold(request)
        assert await snapshot(box.engine) == state


# --- sold out ------------------------------------------------------------------------------


async def test_sold_out(box: Box) -> None:
    c1 = box.stock("C1")
    hold = await box.hold(box.seats("C1", 30), split=True)
    assert await box.counts(c1) == (30, 0)
    await box.confirm(hold.id)
    assert await box.counts(c1) == (0, 30)
    state = await snapshot(box.engine)
    for split in (False, True):
        with pytest.raises(NotAvailable) as refused:
            await box.hold(box.seats("C1", 1), split=split)
        assert refused.value.code == "error.order.availability"
    assert await snapshot(box.engine) == state
    # other performances and categories are untouched
    await box.hold(box.seats("C1", 1, performance="SH02"))
    await check_invariants(box.engine)


async def test_no_seats_together_without_split(box: Box) -> None:
    c1 = box.stock("C1")
    # leave two free seats in each row of block A, apart from each other
    for row in await box.seat_rows(stock_id=c1):
        if row.number not in ("1", "10"):
            await box.hold(box.seats("C1", 1, seat_ids=[row.id]))
    state = await snapshot(box.engine)
    with pytest.raises(NotAvailable):
        await box.hold(box.seats("C1", 2))
    assert await snapshot(box.engine) == state
    hold = await box.hold(box.seats("C1", 2), split=True)  # the two best of them
    assert await box.counts(c1) == (26, 0)
    assert len(hold.lines[0].seat_ids) == 2


async def test_all_or_nothing_across_requests(box: Box) -> None:
    await box.hold(box.item("CAP", 18))
    state = await snapshot(box.engine)
    with pytest.raises(NotAvailable):
        await box.hold(box.seats("C1", 2), box.item("DAY", 3), box.item("CAP", 3))
    assert await snapshot(box.engine) == state
    hold = await box.hold(box.seats("C1", 2), box.item("DAY", 3), box.item("CAP", 2))
    assert sorted((line.stock_id, line.quantity) for line in hold.lines) == sorted(
        [(box.stock("C1"), 2), (box.item_stock("DAY"), 3), (box.item_stock("CAP"), 2)]
    )
    await check_invariants(box.engine)


# --- contingents ---------------------------------------------------------------------------


async def test_reseller_takes_its_contingent_first(box: Box) -> None:
    resq, pool = box.stock("C2", "RESQ"), box.stock("C2")
    taken: list[int] = []
    for quantity, held in ((2, 2), (2, 4), (1, 5)):
        hold = await box.hold(box.seats("C2", quantity), channel="RES")
        assert [(line.stock_id, line.quantity) for line in hold.lines] == [(resq, quantity)]
        taken.extend(hold.lines[0].seat_ids)
        assert await box.counts(resq) == (held, 0)
        assert await box.counts(pool) == (0, 0)
    assert sorted(taken) == [s.id for s in await box.seat_rows(stock_id=resq)]
    # the contingent is used up: the pool follows
    hold = await box.hold(box.seats("C2", 2), channel="RES")
    assert [(line.stock_id, line.quantity) for line in hold.lines] == [(pool, 2)]
    assert together(await box.seat_rows(hold_id=hold.id))
    assert await box.counts(pool) == (2, 0)
    await check_invariants(box.engine)


async def test_reseller_prefers_seats_together_to_its_contingent(box: Box) -> None:
    resq, pool = box.stock("C2", "RESQ"), box.stock("C2")
    by_place = {(s.row, s.number): s.id for s in await box.seat_rows(stock_id=resq)}
    taken = [by_place[("2", "9")], by_place[("2", "10")], by_place[("3", "10")]]
    await box.hold(box.seats("C2", 3, seat_ids=taken), channel="RES")
    # left in the contingent: row 1 seat 10 and row 3 seat 9, apart
    for split in (True, False):
        hold = await box.hold(box.seats("C2", 2), channel="RES", split=split)
        assert [line.stock_id for line in hold.lines] == [pool]
        assert together(await box.seat_rows(hold_id=hold.id))
    hold = await box.hold(box.seats("C2", 1), channel="RES")
    assert [line.stock_id for line in hold.lines] == [resq]


async def test_web_cannot_take_contingent_seats(box: Box) -> None:
    resq, pool = box.stock("C2", "RESQ"), box.stock("C2")
    hold = await box.hold(box.seats("C2", 25), split=True)
    assert [(line.stock_id, line.quantity) for line in hold.lines] == [(pool, 25)]
    state = await snapshot(box.engine)
    with pytest.raises(NotAvailable):
        await box.hold(box.seats("C2", 1), split=True)
    assert await snapshot(box.engine) == state
    assert await box.counts(resq) == (0, 0)
    # the reseller still has its 5
    hold = await box.hold(box.seats("C2", 5), channel="RES", split=True)
    assert [(line.stock_id, line.quantity) for line in hold.lines] == [(resq, 5)]
    await check_invariants(box.engine)


async def test_unnumbered_contingent_then_pool(box: Box) -> None:
    share, pool = box.stock("C3", "RESQ"), box.stock("C3")
    hold = await box.hold(box.seats("C3", 5), channel="RES")
    assert [(line.stock_id, line.quantity, line.seat_ids) for line in hold.lines] == [
        (share, 5, ())
    ]
    hold = await box.hold(box.seats("C3", 5), channel="RES")  # 3 left in the share
    assert [(line.stock_id, line.quantity) for line in hold.lines] == [(pool, 5)]
    hold = await box.hold(box.seats("C3", 3), channel="RES")
    assert [(line.stock_id, line.quantity) for line in hold.lines] == [(share, 3)]
    await box.hold(box.seats("C3", 37))  # the web: the pool only
    assert await box.counts(share) == (8, 0)
    assert await box.counts(pool) == (42, 0)
    state = await snapshot(box.engine)
    for channel in ("WEB", "RES"):
        with pytest.raises(NotAvailable):
            await box.hold(box.seats("C3", 1), channel=channel)
    assert await snapshot(box.engine) == state
    await check_invariants(box.engine)


# --- unnumbered stock ------------------------------------------------------------------------


async def test_unnumbered_items_count_only(box: Box) -> None:
    cap = box.item_stock("CAP")
    seats = await snapshot(box.engine)
    before = await box.sequence()
    hold = await box.hold(box.item("CAP", 4))
    assert [(line.stock_id, line.quantity, line.seat_ids) for line in hold.lines] == [(cap, 4, ())]
    assert await box.counts(cap) == (4, 0)
    await box.assert_logged(before, {cap: (4, 0)})
    assert (await snapshot(box.engine))["seats"] == seats["seats"]
    await box.confirm(hold.id)
    assert await box.counts(cap) == (0, 4)
    other = await box.hold(box.item("CAP", 16))
    with pytest.raises(NotAvailable):
        await box.hold(box.item("CAP", 1))
    await box.release(other.id)
    assert await box.counts(cap) == (0, 4)
    await box.hold(box.item("CAP", 16))
    assert await box.counts(cap) == (16, 4)

    slot = box.shop.timeslots[1]
    await box.hold(box.item("SLOT", 15, timeslot=slot))
    with pytest.raises(NotAvailable):
        await box.hold(box.item("SLOT", 1, timeslot=slot))
    await box.hold(box.item("SLOT", 40, timeslot=box.shop.timeslots[0]))
    assert (await snapshot(box.engine))["seats"] == seats["seats"]
    await check_invariants(box.engine)


async def test_an_unlimited_item_is_never_sold_out(box: Box) -> None:
    day = box.item_stock("DAY")
    for _ in range(3):
        hold = await box.hold(box.item("DAY", MAX_QUANTITY))
        await box.confirm(hold.id)
    await box.hold(box.item("DAY", MAX_QUANTITY))
    assert await box.counts(day) == (MAX_QUANTITY, 3 * MAX_QUANTITY)
    await check_invariants(box.engine)


# --- bad input -----------------------------------------------------------------------------


async def test_bad_requests_write_nothing(box: Box) -> None:
    state = await snapshot(box.engine)
    sh01 = box.shop.performances["SH01"]
    bad: list[tuple[type[Exception], dict[str, Any]]] = [
        (InvalidQuantity, {"requests": [box.seats("C1", 0)]}),
        (InvalidQuantity, {"requests": [box.seats("C1", -1)]}),
        (InvalidQuantity, {"requests": [box.seats("C1", MAX_QUANTITY + 1)]}),
        (InvalidQuantity, {"requests": [box.item("DAY", 0)]}),
        (InvalidQuantity, {"requests": [box.item("DAY", 1), box.item("CAP", 0)]}),
        (InvalidQuantity, {"requests": []}),
        (InvalidQuantity, {"requests": [box.seats("C1", 1)], "expires_at": NOW}),
        (
            InvalidQuantity,
            {"requests": [box.seats("C1", 1)], "expires_at": NOW - timedelta(minutes=1)},
        ),
        (InvalidQuantity, {"requests": [PlaceRequest(1)]}),  # neither performance nor item
        (InvalidQuantity, {"requests": [PlaceRequest(1, performance_id=sh01)]}),
        (
            UnknownInventory,
            {"requests": [PlaceRequest(1, performance_id=424242, seat_category_id=1)]},
        ),
        (
            UnknownInventory,
            {"requests": [PlaceRequest(1, performance_id=sh01, seat_category_id=424242)]},
        ),
        (UnknownInventory, {"requests": [PlaceRequest(1, product_item_id=424242)]}),
        (  # a timeslot item needs its timeslot
            UnknownInventory,
            {"requests": [box.item("SLOT", 1)]},
        ),
        (  # a valid request does not make an unknown one pass
            UnknownInventory,
            {"requests": [box.seats("C1", 1), PlaceRequest(1, product_item_id=424242)]},
        ),
    ]
    for error, arguments in bad:
        kwargs: dict[str, Any] = {
            "institution_id": box.institution_id,
            "sales_channel_id": box.shop.channels["WEB"],
            "contingent_ids": [],
            "cart": "cart",
            "expires_at": LATER,
            "now": NOW,
            **arguments,
        }
        with pytest.raises(error):
            await hold_places(box.engine, **kwargs)
        assert await snapshot(box.engine) == state, arguments


# --- expiry --------------------------------------------------------------------------------


async def test_expire_holds_releases_seats_and_counters(box: Box) -> None:
    c1, cap = box.stock("C1"), box.item_stock("CAP")
    soon = NOW + timedelta(minutes=1)
    seated = await box.hold(box.seats("C1", 4), expires_at=soon)
    counted = await box.hold(box.item("CAP", 5), expires_at=soon)
    kept = await box.hold(box.seats("C1", 2), box.item("CAP", 1))  # expires later
    assert await expire_holds(box.engine, now=soon - timedelta(seconds=1)) == 0
    assert await box.counts(c1) == (6, 0)

    before = await box.sequence()
    assert await expire_holds(box.engine, now=soon) == 2
    assert await box.hold_state(seated.id) == "EXPIRED"
    assert await box.hold_state(counted.id) == "EXPIRED"
    assert await box.hold_state(kept.id) == "ACTIVE"
    assert await box.seat_rows(hold_id=seated.id) == []
    assert len(await box.seat_rows(hold_id=kept.id)) == 2
    assert await box.counts(c1) == (2, 0)
    assert await box.counts(cap) == (1, 0)
    await box.assert_logged(before, {c1: (2, 0), cap: (1, 0)})
    await check_invariants(box.engine)


async def test_a_new_hold_releases_expired_holds_of_its_stock(box: Box) -> None:
    c1 = box.stock("C1")
    soon = NOW + timedelta(minutes=1)
    old = await box.hold(box.seats("C1", 3), expires_at=soon)
    before = await box.sequence()
    new = await box.hold(box.seats("C1", 3), now=soon + timedelta(seconds=1))
    assert await box.hold_state(old.id) == "EXPIRED"
    # the best seats again: the ones the expired hold gave back
    assert new.lines[0].seat_ids == old.lines[0].seat_ids
    assert await box.counts(c1) == (3, 0)
    await box.assert_logged(before, {c1: (3, 0)})
    assert await expire_holds(box.engine, now=soon + timedelta(seconds=1)) == 0
    await check_invariants(box.engine)


async def test_a_hold_looks_for_expired_holds_at_most_once_a_second(box: Box) -> None:
    soon = NOW + timedelta(minutes=1)
    old = await box.hold(box.seats("C1", 2), expires_at=soon)
    # this one looks (nothing is due yet); the next, within the second, does not
    await box.hold(box.seats("C1", 1), now=soon - timedelta(milliseconds=500))
    await box.hold(box.seats("C1", 1), now=soon + timedelta(milliseconds=200))
    assert await box.hold_state(old.id) == "ACTIVE"
    # a second after the last look, a hold looks again and frees the expired one's seats
    new = await box.hold(box.seats("C1", 2), now=soon + timedelta(milliseconds=600))
    assert await box.hold_state(old.id) == "EXPIRED"
    assert new.lines[0].seat_ids == old.lines[0].seat_ids
    await check_invariants(box.engine)


async def test_an_inventory_transaction_waits_3_s_for_a_lock_and_runs_generic_plans(
    box: Box,
) -> None:
    if box.engine.dialect.name != "postgresql":
        pytest.skip("transaction settings are PostgreSQL's")

    async def settings(conn: AsyncConnection) -> tuple[str, str]:
        timeout = (await conn.execute(sa.text("SHOW lock_timeout"))).scalar_one()
        plans = (await conn.execute(sa.text("SHOW plan_cache_mode"))).scalar_one()
        return str(timeout), str(plans)

    assert await in_transaction(box.engine, settings) == ("3s", "force_generic_plan")
    async with read(box.engine) as conn:  # the settings end with the transaction
        assert await settings(conn) == ("0", "auto")


async def test_sequences_follow_every_change(box: Box) -> None:
    c1, c2, cap = box.stock("C1"), box.stock("C2"), box.item_stock("CAP")
    start = await box.sequence()
    first = await box.hold(box.seats("C1", 2), box.seats("C2", 2), box.item("CAP", 3))
    await box.assert_logged(start, {c1: (2, 0), c2: (2, 0), cap: (3, 0)})
    second = await box.hold(box.item("CAP", 2))
    await box.assert_logged(start + 1, {cap: (5, 0)})
    await box.confirm(first.id)
    await box.assert_logged(start + 2, {c1: (0, 2), c2: (0, 2), cap: (2, 3)})
    await box.release(second.id)
    await box.assert_logged(start + 3, {cap: (0, 3)})
    await box.release(second.id)  # nothing changes, nothing logged
    assert await box.sequence() == start + 4
    await check_invariants(box.engine)


async def test_sequences_are_per_institution(box: Box) -> None:
    await import_document(box.engine, rich_document("BETA"))
    async with read(box.engine) as conn:
        box.stock_ids = {r.key: r.id for r in (await conn.execute(sa.select(db.stock))).all()}
    beta = Box(box.engine, await load_shop(box.engine, "BETA"), box.stock_ids)
    acme_start, beta_start = await box.sequence(), await beta.sequence()
    soon = NOW + timedelta(minutes=1)
    await box.hold(box.seats("C1", 2), expires_at=soon)
    await beta.hold(beta.seats("C1", 2), expires_at=soon)
    await beta.hold(beta.item("CAP", 2), expires_at=soon)
    assert (await box.sequence(), await beta.sequence()) == (acme_start + 1, beta_start + 2)
    # the sweeper logs each institution's changes under its own sequence
    assert await expire_holds(box.engine, now=soon) == 3
    await box.assert_logged(acme_start + 1, {box.stock("C1"): (0, 0)})
    await beta.assert_logged(
        beta_start + 2, {beta.stock("C1"): (0, 0), beta.item_stock("CAP"): (0, 0)}
    )
    await check_invariants(box.engine)


async def test_racing_closes_close_a_hold_once(box: Box) -> None:
    """Confirms, releases and sweeps of the same holds at once: each hold closes once."""
    c1, cap = box.stock("C1"), box.item_stock("CAP")
    soon = NOW + timedelta(minutes=1)
    holds = [
        await box.hold(box.seats("C1", 2), box.item("CAP", 2), expires_at=soon) for _ in range(5)
    ]

    async def attempt(call: Any) -> str:
        try:
            await call
        except HoldClosed:
            return "closed"
        return "ok"

    calls = []
    for hold in holds:
        calls += [
            attempt(box.confirm(hold.id)),
            attempt(box.confirm(hold.id)),
            attempt(box.release(hold.id)),
            attempt(box.release(hold.id)),
            attempt(expire_holds(box.engine, now=soon)),
        ]
    await asyncio.gather(*calls)
    states = Counter([await box.hold_state(hold.id) for hold in holds])
    assert sum(states.values()) == 5 and "ACTIVE" not in states
    sold = 2 * states["CONFIRMED"]
    assert await box.counts(c1) == (0, sold)
    assert await box.counts(cap) == (0, sold)
    await check_invariants(box.engine)


# --- concurrency -----------------------------------------------------------------------------


TASKS = 16
OPERATIONS = 25
SEEDS = (1, 2, 3)
TTLS = (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=15))


@dataclass
class Clock:
    now: datetime = NOW


@dataclass
class Tally:
    operations: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    busy: Counter[str] = field(default_factory=Counter)
    confirmed: Counter[int] = field(default_factory=Counter)  # stock id -> places sold
    confirmed_holds: set[int] = field(default_factory=set)
    refused_confirms: set[int] = field(default_factory=set)
    released_holds: set[int] = field(default_factory=set)
    open_holds: set[int] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    checks: int = 0


async def _own_view(box: Box, hold: Hold, request_seats: set[int] | None, tally: Tally) -> None:
    """Right after a hold: its seats are held by it (unless it expired since)."""
    ps = db.performance_seat.c
    async with snapshot_read(box.engine) as conn:
        state = (
            await conn.execute(sa.select(db.hold.c.state).where(db.hold.c.id == hold.id))
        ).scalar_one()
        rows = (
            await conn.execute(sa.select(ps.id, ps.state, ps.stock_id).where(ps.hold_id == hold.id))
        ).all()
    numbered = {seat for line in hold.lines for seat in line.seat_ids}
    if request_seats is not None and numbered != request_seats:
        tally.failures.append(f"hold {hold.id} took {numbered}, asked {request_seats}")
    if state == "ACTIVE" and (
        {r.id for r in rows} != numbered or any(r.state != "HELD" for r in rows)
    ):
        tally.failures.append(f"hold {hold.id} is not what it says: {rows} vs {hold.lines}")
    if state not in ("ACTIVE", "EXPIRED"):
        tally.failures.append(f"hold {hold.id} is {state} right after it was made")


async def _lowest_free(box: Box, stock_ids: list[int], first: int, last: int) -> int:
    """The fewest places free in ``stock_ids`` together in any committed state from sequence
    ``first`` to ``last``, replayed from the change log."""
    c = db.inventory_change.c
    async with read(box.engine) as conn:
        rows = (
            await conn.execute(
                sa.select(c.sequence, c.stock_id, c.capacity, c.held, c.sold, c.blocked)
                .where(
                    c.institution_id == box.institution_id,
                    c.stock_id.in_(stock_ids),
                    c.sequence <= last,
                )
                .order_by(c.sequence)
            )
        ).all()
    free: dict[int, int] = {}
    totals: list[tuple[int, int]] = []  # (sequence, places free after it)
    for sequence, changes in itertools.groupby(rows, key=lambda r: r.sequence):
        for r in changes:
            free[r.stock_id] = r.capacity - r.held - r.sold - r.blocked
        totals.append((sequence, sum(free.values())))
    assert len(free) == len(stock_ids), "every stock is logged from its import on"
    as_of_first = [total for sequence, total in totals if sequence <= first][-1:]
    return min(as_of_first + [total for sequence, total in totals if sequence > first])


async def _worker(
    box: Box,
    number: int,
    rng: random.Random,
    clock: Clock,
    tally: Tally,
    seats: dict[str, list[int]],
    indexes: SeatIndexes,
) -> None:
    """One task's random operations; ``indexes`` stands for its server process's seat indexes
    (the tasks are spread over two)."""
    mine: list[Hold] = []
    for _ in range(OPERATIONS):
        operation = rng.choices(
            ["best", "given", "item", "mixed", "release", "confirm", "expire", "tick"],
            weights=[6, 3, 3, 1, 4, 2, 1, 1],
        )[0]
        if operation in ("release", "confirm") and not mine:
            operation = "best"
        tally.operations[operation] += 1
        now = clock.now
        expires_at = now + rng.choice(TTLS)
        channel = rng.choice(("WEB", "WEB", "RES"))
        category = rng.choice(("C1", "C2"))
        try:
            if operation == "tick":
                clock.now = max(clock.now, now + timedelta(seconds=rng.randint(1, 20)))
                continue
            if operation == "expire":
                await expire_holds(box.engine, now=now, seat_indexes=indexes)
            elif operation in ("best", "given", "item", "mixed"):
                requests: list[PlaceRequest] = []
                given: set[int] | None = None
                if operation in ("best", "mixed"):
                    requests.append(box.seats(category, rng.randint(1, 4)))
                if operation == "given":
                    pool = seats[category] + (
                        seats["C2/RESQ"] if channel == "RES" and category == "C2" else []
                    )
                    start = rng.randrange(len(pool))
                    given = set(pool[start : start + rng.randint(1, 3)])
                    requests.append(box.seats(category, len(given), seat_ids=sorted(given)))
                if operation in ("item", "mixed"):
                    requests.append(box.item("CAP", rng.randint(1, 4)))
                split = rng.random() < 0.3
                # a refusal must be right: when only the quantity counts (split seats or an
                # item), some state the call may have seen lacked the places
                counted = len(requests) == 1 and (operation == "item" or (split and not given))
                first = await box.sequence() if counted else 0
                try:
                    hold = await box.hold(
                        *requests,
                        channel=channel,
                        now=now,
                        expires_at=expires_at,
                        split=split,
                        cart=f"task{number}",
                        indexes=indexes,
                    )
                except NotAvailable:
                    if counted:
                        stocks = (
                            [box.item_stock("CAP")]
                            if operation == "item"
                            else [box.stock(category)]
                            + (
                                [box.stock("C2", "RESQ")]
                                if channel == "RES" and category == "C2"
                                else []
                            )
                        )
                        lowest = await _lowest_free(box, stocks, first, await box.sequence())
                        if lowest >= requests[0].quantity:
                            tally.failures.append(
                                f"{requests[0]} refused, yet {lowest} places stayed free"
                            )
                        tally.outcomes["refusals checked"] += 1
                    raise
                if sum(line.quantity for line in hold.lines) != sum(r.quantity for r in requests):
                    tally.failures.append(f"hold {hold.id} has {hold.lines} for {requests}")
                mine.append(hold)
                tally.open_holds.add(hold.id)
                await _own_view(box, hold, given, tally)
            else:
                hold = mine.pop(rng.randrange(len(mine)))
                if operation == "confirm":
                    try:
                        await box.confirm(hold.id, now=now, indexes=indexes)
                    except HoldClosed:
                        # only because it expired: by this call's clock or by a later one
                        # that the sweeper or a lazy expiry used
                        if hold.expires_at > clock.now:
                            tally.failures.append(f"confirm of {hold.id} refused before expiry")
                        tally.refused_confirms.add(hold.id)
                        tally.outcomes["confirm refused (expired)"] += 1
                    else:
                        tally.confirmed_holds.add(hold.id)
                        for line in hold.lines:
                            tally.confirmed[line.stock_id] += line.quantity
                else:
                    await box.release(hold.id, now=now, indexes=indexes)
                    tally.released_holds.add(hold.id)
                tally.open_holds.discard(hold.id)
            tally.outcomes[f"{operation} ok"] += 1
        except NotAvailable:
            tally.outcomes[f"{operation} not available"] += 1
        except Busy:
            tally.busy[operation] += 1
            if operation in ("release", "confirm"):
                mine.append(hold)  # still active: try again later
        except Exception as exc:  # anything else is a bug
            tally.failures.append(f"{operation}: {type(exc).__name__}: {exc}")


async def _checker(box: Box, running: asyncio.Event, tally: Tally) -> None:
    while running.is_set():
        try:
            await check_invariants(box.engine)
        except AssertionError as exc:
            tally.failures.append(f"invariant broken mid-run: {exc}")
        tally.checks += 1
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("seed", SEEDS)
async def test_concurrent_holds_keep_the_invariants(box: Box, seed: int) -> None:
    seats = {
        "C1": [s.id for s in await box.seat_rows(stock_id=box.stock("C1"))],
        "C2": [s.id for s in await box.seat_rows(stock_id=box.stock("C2"))],
        "C2/RESQ": [s.id for s in await box.seat_rows(stock_id=box.stock("C2", "RESQ"))],
    }
    clock = Clock()
    tally = Tally()
    processes = [SeatIndexes(), SeatIndexes()]  # two server processes' seat indexes
    running = asyncio.Event()
    running.set()
    started = time.monotonic()
    checker = asyncio.create_task(_checker(box, running, tally))
    try:
        await asyncio.gather(
            *(
                _worker(
                    box, n, random.Random(seed * 1000 + n), clock, tally, seats, processes[n % 2]
                )
                for n in range(TASKS)
            )
        )
    finally:
        running.clear()
        await checker
    elapsed = time.monotonic() - started
    print(
        f"\n[{box.engine.dialect.name} seed {seed}] {sum(tally.operations.values())} operations"
        f" in {elapsed:.1f}s, {tally.checks} invariant checks; busy: {dict(tally.busy)}"
        f" ({sum(tally.busy.values())}); seat races lost: {[p.lost_races for p in processes]};"
        f" outcomes: {dict(sorted(tally.outcomes.items()))}"
    )
    for failure in tally.failures[:12]:
        print("FAILURE", failure[:600])
    assert tally.failures == []
    await check_invariants(box.engine)

    # what the tasks saw agrees with the database
    s = db.stock.c
    async with read(box.engine) as conn:
        sold = {r.id: r.sold for r in (await conn.execute(sa.select(s.id, s.sold))).all()}
        states = {
            r.id: r.state
            for r in (await conn.execute(sa.select(db.hold.c.id, db.hold.c.state))).all()
        }
    assert {k: v for k, v in sold.items() if v} == dict(tally.confirmed)
    assert {states[h] for h in tally.confirmed_holds} <= {"CONFIRMED"}
    assert {states[h] for h in tally.refused_confirms} <= {"ACTIVE", "EXPIRED"}
    assert {states[h] for h in tally.released_holds} <= {"RELEASED", "EXPIRED"}
    assert {states[h] for h in tally.open_holds} <= {"ACTIVE", "EXPIRED"}
    assert tally.outcomes["best ok"] > 0 and tally.outcomes["confirm ok"] > 0
    # Busy (lock timeouts, or lost races past the retries) must stay rare
    assert sum(tally.busy.values()) <= sum(tally.operations.values()) // 20

    # quiescent: every place not sold can be held again, and not one more
    far = clock.now + timedelta(days=1)
    await expire_holds(box.engine, now=far)
    for stock_id, capacity, request in (
        (box.stock("C1"), 30, box.seats("C1", 1)),
        (box.stock("C2"), 25, box.seats("C2", 1)),
        (box.item_stock("CAP"), 20, box.item("CAP", 1)),
    ):
        left = capacity - sold[stock_id]
        if left:
            await box.hold(dataclasses.replace(request, quantity=left), now=far, split=True)
        with pytest.raises(NotAvailable):
            await box.hold(request, now=far, split=True)
    await check_invariants(box.engine)
