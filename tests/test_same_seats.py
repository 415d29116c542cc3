"""A season ticket on the hold path: requests sharing a ``same_seats`` key sit on the same plan
seats at each of their performances, when there are such seats together; else each performance
is seated on its own, as any request. On SQLite and PostgreSQL.

The plan is :func:`tests.test_provision.rich_document` with three performances: C1 is block A
(rows 1-3 of 10 seats), C2 block B with the reseller contingent RESQ's 5 worst seats. Every
choice is compared with :func:`~billetterie.inventory.seating.best_common` (or, for the
fallback, :func:`~billetterie.inventory.seating.best_available`) over a fresh read of the
database's free seats.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.inventory import db
from billetterie.inventory.errors import Busy, NotAvailable
from billetterie.inventory.seat_indexes import PerformanceSeats, SeatIndexes, propose_same
from billetterie.inventory.seating import FreeSeat, best_available, best_common
from billetterie.inventory.services import Hold, PlaceRequest
from billetterie.shared.db import read
from tests.factories import import_document
from tests.test_holds import Box, check_invariants
from tests.test_provision import load_shop, rich_document
from tests.test_seat_indexes import hold, seats_of

SEASON = ("SH01", "SH02", "SH03")


@pytest.fixture
async def box(scratch_engine: AsyncEngine) -> AsyncIterator[Box]:
    await import_document(scratch_engine, rich_document(performances=3))
    async with read(scratch_engine) as conn:
        ids = {r.key: r.id for r in (await conn.execute(sa.select(db.stock))).all()}
    yield Box(scratch_engine, await load_shop(scratch_engine), ids)


def season(
    box: Box, category: str, quantity: int, performances: tuple[str, ...] = SEASON
) -> list[PlaceRequest]:
    return [
        dataclasses.replace(box.seats(category, quantity, performance=p), same_seats=1)
        for p in performances
    ]


def stock_groups(box: Box, category: str, performance: str, channel: str) -> list[list[int]]:
    """The stocks the hold path proposes from, in its order: the contingent, the pool, both."""
    pool = box.stock(category, performance=performance)
    if channel == "RES" and category == "C2":
        contingent = box.stock(category, "RESQ", performance=performance)
        return [[contingent], [pool], [contingent, pool]]
    return [[pool]]


async def free_seats(box: Box, stock_ids: list[int]) -> dict[int, FreeSeat]:
    """The free seats of these stocks, by plan seat id, as the database has them now."""
    ps = db.performance_seat.c
    async with read(box.engine) as conn:
        rows = (
            await conn.execute(
                sa.select(ps.id, ps.seat_id, ps.block_id, ps.row_order, ps.position, ps.rank).where(
                    ps.stock_id.in_(stock_ids), ps.state == "FREE"
                )
            )
        ).all()
    return {r.seat_id: FreeSeat(r.id, r.block_id, r.row_order, r.position, r.rank) for r in rows}


async def common(
    box: Box,
    category: str,
    quantity: int,
    performances: tuple[str, ...] = SEASON,
    channel: str = "WEB",
) -> list[list[int]] | None:
    """What a fresh read chooses for the same seats: per performance its seat ids, sorted."""
    groups = [stock_groups(box, category, p, channel) for p in performances]
    for level in range(len(groups[0])):
        found = best_common([await free_seats(box, per[level]) for per in groups], quantity)
        if found is not None:
            return [sorted(ids) for ids in found]
    return None


async def alone(box: Box, category: str, quantity: int, performance: str) -> list[int] | None:
    found = best_available(
        (await free_seats(box, [box.stock(category, performance=performance)])).values(), quantity
    )
    return None if found is None else sorted(found)


async def by_performance(box: Box, made: Hold) -> dict[int, list[Any]]:
    """The hold's seats per performance id: their rows, by position."""
    ps = db.performance_seat.c
    async with read(box.engine) as conn:
        rows = (
            await conn.execute(
                sa.select(db.performance_seat)
                .where(ps.id.in_(seats_of(made)))
                .order_by(ps.performance_id, ps.position)
            )
        ).all()
    found: dict[int, list[Any]] = {}
    for row in rows:
        found.setdefault(row.performance_id, []).append(row)
    return found


def plan_seats(rows: list[Any]) -> list[int]:
    return sorted(r.seat_id for r in rows)


async def hold_given(box: Box, indexes: SeatIndexes, performance: str, rows: list[Any]) -> Hold:
    return await hold(
        box,
        indexes,
        box.seats("C1", len(rows), performance=performance, seat_ids=[r.id for r in rows]),
    )


async def test_a_season_ticket_sits_on_the_same_seats_at_every_performance(box: Box) -> None:
    indexes = SeatIndexes()
    # the best pair goes at SH01 only, then the pair SH01 would now offer goes at SH03
    first = await hold(box, indexes, box.seats("C1", 2))
    best = {r.seat_id for r in (await by_performance(box, first))[box.shop.performances["SH01"]]}
    second_best = await alone(box, "C1", 2, "SH01")
    assert second_best is not None
    plan_of = {r.id: r.seat_id for r in await box.seat_rows(stock_id=box.stock("C1"))}
    sh03 = [
        r
        for r in await box.seat_rows(stock_id=box.stock("C1", performance="SH03"))
        if r.seat_id in {plan_of[s] for s in second_best}
    ]
    await hold_given(box, indexes, "SH03", sh03)
    # on its own, SH02 would still give the best pair
    at_sh02 = await alone(box, "C1", 2, "SH02")
    assert at_sh02 is not None
    assert {r.seat_id for r in await box.seat_rows() if r.id in at_sh02} == best

    want = await common(box, "C1", 2)
    assert want is not None
    before = await box.sequence()
    made = await hold(box, indexes, *season(box, "C1", 2))
    assert await box.sequence() == before + 1
    assert sorted(seats_of(made)) == sorted(s for ids in want for s in ids)
    rows = await by_performance(box, made)
    assert len(rows) == 3
    plans = [plan_seats(rows[box.shop.performances[p]]) for p in SEASON]
    assert plans[0] == plans[1] == plans[2]  # the same plan seats
    assert not set(plans[0]) & best and not set(plans[0]) & {r.seat_id for r in sh03}
    for performance_rows in rows.values():  # side by side, the same row and numbers
        assert len({(r.block_id, r.row) for r in performance_rows}) == 1
        assert [r.position for r in performance_rows] == [
            performance_rows[0].position + i for i in range(2)
        ]
    labels = {
        tuple((r.row, r.number) for r in performance_rows) for performance_rows in rows.values()
    }
    assert len(labels) == 1
    # the movements' seats as the buyer reads them: the same at every performance
    assert len({(p.row, p.number) for p in made.places}) == 2
    await check_invariants(box.engine)


async def test_without_common_seats_each_performance_is_seated_on_its_own(box: Box) -> None:
    indexes = SeatIndexes()
    sh01 = await box.seat_rows(stock_id=box.stock("C1"))
    sh02 = await box.seat_rows(stock_id=box.stock("C1", performance="SH02"))
    # rows 1 and 2 gone at SH01, row 3 at SH02: no seat is free at both
    await hold_given(box, indexes, "SH01", [r for r in sh01 if r.row in ("1", "2")])
    await hold_given(box, indexes, "SH02", [r for r in sh02 if r.row == "3"])
    assert await common(box, "C1", 2, SEASON[:2]) is None
    want = [await alone(box, "C1", 2, p) for p in SEASON[:2]]
    made = await hold(box, indexes, *season(box, "C1", 2, SEASON[:2]))
    rows = await by_performance(box, made)
    got = [sorted(r.id for r in rows[box.shop.performances[p]]) for p in SEASON[:2]]
    assert got == want
    assert plan_seats(rows[box.shop.performances["SH01"]]) != plan_seats(
        rows[box.shop.performances["SH02"]]
    )
    await check_invariants(box.engine)


async def test_common_seats_not_together_fall_back_too(box: Box) -> None:
    """Free seats in common, but never two side by side at both: the pair is seated together
    at each performance on its own rather than apart on the same seats."""
    indexes = SeatIndexes()
    sh01 = await box.seat_rows(stock_id=box.stock("C1"))
    sh02 = await box.seat_rows(stock_id=box.stock("C1", performance="SH02"))
    await hold_given(box, indexes, "SH01", [r for r in sh01 if r.position % 3 == 0])
    await hold_given(box, indexes, "SH02", [r for r in sh02 if r.position % 3 == 1])
    free = [await free_seats(box, [box.stock("C1", performance=p)]) for p in SEASON[:2]]
    assert set(free[0]) & set(free[1])
    assert await common(box, "C1", 2, SEASON[:2]) is None
    want = [await alone(box, "C1", 2, p) for p in SEASON[:2]]
    assert None not in want
    made = await hold(box, indexes, *season(box, "C1", 2, SEASON[:2]))
    rows = await by_performance(box, made)
    assert [sorted(r.id for r in rows[box.shop.performances[p]]) for p in SEASON[:2]] == want
    await check_invariants(box.engine)


async def test_a_lost_race_at_one_performance_proposes_another_common_set(box: Box) -> None:
    mine, other = SeatIndexes(), SeatIndexes()
    await hold(box, mine, *season(box, "C1", 1, SEASON[:2]))  # builds both indexes
    entry = mine.get(box.shop.performances["SH02"])
    assert entry is not None
    stale = await common(box, "C1", 2, SEASON[:2])
    assert stale is not None
    # another process takes the pair at SH02 only; this process's index misses it
    taken = await hold(box, other, box.seats("C1", 2, performance="SH02", seat_ids=stale[1]))
    entry.advance(await box.sequence())
    entry.mark_free(seats_of(taken))
    want = await common(box, "C1", 2, SEASON[:2])
    assert want is not None and want != stale
    before = await box.sequence()
    made = await hold(box, mine, *season(box, "C1", 2, SEASON[:2]))
    assert await box.sequence() == before + 1  # one transaction
    assert mine.lost_races == 1
    assert seats_of(made) == sorted(s for ids in want for s in ids)
    # the half of the first proposal claimed at SH01 was given back
    at_sh01 = {r.id: r for r in await box.seat_rows(stock_id=box.stock("C1"))}
    assert all(at_sh01[s].state == "FREE" and at_sh01[s].hold_id is None for s in stale[0])
    assert not any(entry.index.is_free(s) for s in seats_of(taken))  # learnt from the race
    await check_invariants(box.engine)


async def test_the_reseller_sits_on_the_same_seats_of_its_contingent(box: Box) -> None:
    indexes = SeatIndexes()
    # the contingent's best seat goes at SH02 only
    await hold(box, indexes, box.seats("C2", 1, performance="SH02"), channel="RES")
    want = await common(box, "C2", 2, SEASON, channel="RES")
    assert want is not None
    made = await hold(box, indexes, *season(box, "C2", 2), channel="RES")
    assert seats_of(made) == sorted(s for ids in want for s in ids)
    rows = await by_performance(box, made)
    contingents = {box.stock("C2", "RESQ", performance=p) for p in SEASON}
    assert all(r.stock_id in contingents for per in rows.values() for r in per)
    assert len({tuple(plan_seats(per)) for per in rows.values()}) == 1
    await check_invariants(box.engine)


async def test_given_seats_stay_as_given(box: Box) -> None:
    indexes = SeatIndexes()
    sh01 = await box.seat_rows(stock_id=box.stock("C1"))
    worst = max(sh01, key=lambda r: r.rank)
    given = dataclasses.replace(box.seats("C1", 1, seat_ids=[worst.id]), same_seats=1)
    want = await alone(box, "C1", 1, "SH02")
    made = await hold(box, indexes, given, *season(box, "C1", 1, SEASON[1:2]))
    rows = await by_performance(box, made)
    assert [r.id for r in rows[box.shop.performances["SH01"]]] == [worst.id]
    assert [r.id for r in rows[box.shop.performances["SH02"]]] == want
    await check_invariants(box.engine)


def test_performances_of_other_layouts_are_compared_seat_by_seat() -> None:
    """One plan row of 6 seats; a third performance's plan lacks the first seat, so its bits
    stand for other plan seats: the proposal is the same as with equal layouts."""

    def entry(number: int, positions: range, free: set[int]) -> PerformanceSeats:
        seats = [
            (number * 100 + p, 7, 1, 0, p, p, p in free)  # rank = position: left is best
            for p in positions
        ]
        plan = {number * 100 + p: p for p in positions}  # plan seat id = position
        return PerformanceSeats(1, number, seats, watermark=0, stock_ids=[7], plan_seats=plan)

    first = entry(1, range(6), {2, 3, 4, 5})
    second = entry(2, range(6), {0, 1, 2, 3, 4, 5})
    third = entry(3, range(1, 6), {2, 3, 4, 5})
    assert first.layout == second.layout != third.layout
    assert propose_same([first, second], [[7], [7]], 2) == [[102, 103], [202, 203]]
    assert propose_same([first, second, third], [[7]] * 3, 2) == [
        [102, 103],
        [202, 203],
        [302, 303],
    ]
    assert propose_same([first, third], [[7]] * 2, 4) == [
        [102, 103, 104, 105],
        [302, 303, 304, 305],
    ]
    second.mark_taken([203])
    assert propose_same([first, second, third], [[7]] * 3, 2) == [
        [104, 105],
        [204, 205],
        [304, 305],
    ]


@pytest.mark.parametrize("seed", [1, 2])
async def test_concurrent_season_tickets_never_share_a_seat(box: Box, seed: int) -> None:
    """Tasks over two processes' indexes buy season tickets and single seats and give some
    back, all at once: every hold has its places, no seat is in two holds, and a season ticket
    that found common seats has them at each of its performances."""
    processes = [SeatIndexes(), SeatIndexes()]
    outcomes: Counter[str] = Counter()
    failures: list[str] = []

    async def task(number: int) -> None:
        rng = random.Random(seed * 100 + number)
        indexes = processes[number % 2]
        mine: list[Hold] = []
        for _ in range(8):
            operation = rng.choices(["season", "single", "release"], [4, 3, 2])[0]
            if operation == "release" and not mine:
                operation = "season"
            try:
                if operation == "release":
                    await box.release(mine.pop(rng.randrange(len(mine))).id, indexes=indexes)
                elif operation == "single":
                    performance = rng.choice(SEASON)
                    quantity = rng.randint(1, 3)
                    mine.append(
                        await hold(box, indexes, box.seats("C1", quantity, performance=performance))
                    )
                else:
                    performances = SEASON[: rng.randint(2, 3)]
                    quantity = rng.randint(1, 3)
                    made = await hold(
                        box, indexes, *season(box, "C1", quantity, performances), split=True
                    )
                    rows = await by_performance(box, made)
                    if sorted(len(per) for per in rows.values()) != [quantity] * len(performances):
                        failures.append(f"hold {made.id}: {rows}")
                    same = len({tuple(plan_seats(per)) for per in rows.values()}) == 1
                    outcomes["same seats" if same else "seated on its own"] += 1
                    mine.append(made)
                outcomes[f"{operation} ok"] += 1
            except (NotAvailable, Busy) as exc:
                outcomes[f"{operation} {type(exc).__name__}"] += 1

    await asyncio.gather(*(task(number) for number in range(8)))
    assert not failures, failures
    assert outcomes["same seats"] >= 5, outcomes
    await check_invariants(box.engine)
