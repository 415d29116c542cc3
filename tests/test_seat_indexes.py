"""Seat indexes on the hold path (``billetterie.inventory.seat_indexes``): the index proposes,
the database decides, and several server processes (one registry each here) stay correct.

Every best-available hold below is compared with what a fresh read of the database's free
seats and the plain :func:`~billetterie.inventory.seating.best_available` would choose at that
moment, so an index that lags the database, or forgets a seat, fails the comparison.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from billetterie.inventory import db
from billetterie.inventory.errors import NotAvailable
from billetterie.inventory.seat_indexes import PerformanceSeats, SeatIndexes, indexes_of, refresh
from billetterie.inventory.seating import FreeSeat, best_available
from billetterie.inventory.services import (
    Hold,
    PlaceRequest,
    confirm_hold,
    expire_holds,
    hold_places,
    in_transaction,
    release_hold,
    seats_lacking,
)
from billetterie.shared.db import read
from tests.conftest import NOW
from tests.factories import import_document
from tests.test_holds import Box, box, check_invariants
from tests.test_provision import rich_document

__all__ = ["box"]


async def hold(
    box: Box,
    indexes: SeatIndexes,
    *requests: PlaceRequest,
    channel: str = "WEB",
    split: bool = False,
    now: Any = NOW,
    minutes: int = 15,
) -> Hold:
    return await hold_places(
        box.engine,
        institution_id=box.institution_id,
        sales_channel_id=box.shop.channels[channel],
        contingent_ids=[box.shop.contingents["RESQ"]] if channel == "RES" else [],
        cart="cart",
        requests=list(requests),
        expires_at=now + timedelta(minutes=minutes),
        now=now,
        split_allowed=split,
        seat_indexes=indexes,
    )


def seats_of(hold: Hold) -> list[int]:
    return sorted(seat for line in hold.lines for seat in line.seat_ids)


async def expected(
    box: Box, category: str, quantity: int, *, channel: str = "WEB", split: bool = False
) -> list[int] | None:
    """What a fresh read of every free seat would choose: the channel's contingent, then the
    pool, then both together; seats together before split seats (the hold path's order)."""
    stock_ids = [box.stock(category)]
    if channel == "RES" and category == "C2":
        stock_ids.insert(0, box.stock("C2", "RESQ"))
    ps = db.performance_seat.c
    async with read(box.engine) as conn:
        rows = (
            await conn.execute(
                sa.select(ps.id, ps.stock_id, ps.block_id, ps.row_order, ps.position, ps.rank)
                .where(ps.stock_id.in_(stock_ids), ps.state == "FREE")
                .order_by(ps.id)
            )
        ).all()
    groups = [
        [
            FreeSeat(r.id, r.block_id, r.row_order, r.position, r.rank)
            for r in rows
            if r.stock_id == stock_id
        ]
        for stock_id in stock_ids
    ]
    if len(groups) > 1:
        groups.append([seat for group in groups for seat in group])
    for allow_split in (False, True) if split else (False,):
        for group in groups:
            picked = best_available(group, quantity, split_allowed=allow_split)
            if picked is not None:
                return sorted(picked)
    return None


async def test_processes_learn_each_others_holds_and_releases(box: Box) -> None:
    first, second = SeatIndexes(), SeatIndexes()
    want = await expected(box, "C1", 2)
    a = await hold(box, first, box.seats("C1", 2))
    assert seats_of(a) == want
    # the second process builds its index now, after the first hold
    want = await expected(box, "C1", 2)
    b = await hold(box, second, box.seats("C1", 2))
    assert seats_of(b) == want and not set(seats_of(a)) & set(seats_of(b))
    # the first one's index never saw b: it learns it from the change log
    want = await expected(box, "C1", 3)
    c = await hold(box, first, box.seats("C1", 3))
    assert seats_of(c) == want and not set(seats_of(c)) & set(seats_of(b))
    # a release in one process is offered again by the other
    await release_hold(
        box.engine, institution_id=box.institution_id, hold_id=a.id, now=NOW, seat_indexes=first
    )
    want = await expected(box, "C1", 2)
    assert want == seats_of(a)  # the best seats again
    d = await hold(box, second, box.seats("C1", 2))
    assert seats_of(d) == want
    assert (first.builds, second.builds) == (1, 1)
    await check_invariants(box.engine)


async def test_a_lost_race_takes_the_next_best_block_in_the_same_hold(box: Box) -> None:
    mine, other = SeatIndexes(), SeatIndexes()
    await hold(box, mine, box.seats("C1", 1))  # builds the index
    entry = mine.get(box.shop.performances["SH01"])
    assert entry is not None
    best = await expected(box, "C1", 2)
    assert best is not None
    taken = await hold(box, other, box.seats("C1", 2))
    assert seats_of(taken) == best
    # make the index miss that hold, as if it committed just after the index caught up
    entry.advance(await box.sequence())
    entry.mark_free(best)
    assert all(entry.index.is_free(seat) for seat in best)
    before = await box.sequence()
    want = await expected(box, "C1", 2)
    got = await hold(box, mine, box.seats("C1", 2))
    assert seats_of(got) == want and not set(want) & set(best)
    assert await box.sequence() == before + 1  # one transaction
    assert not any(entry.index.is_free(seat) for seat in best)  # learnt from the lost race
    await check_invariants(box.engine)


async def free_seats(box: Box, category: str) -> list[int]:
    return sorted(
        s.id for s in await box.seat_rows(stock_id=box.stock(category)) if s.state == "FREE"
    )


async def test_seats_lost_to_a_claim_that_rolled_back_are_read_again(box: Box) -> None:
    """A seat lost to another process's claim is taken in the index; when that claim rolls
    back, no change tells it: the index reads its suspect seats again before it says "sold
    out", and only those."""
    indexes = SeatIndexes()
    await hold(box, indexes, box.seats("C1", 1))  # builds the index
    entry = indexes.get(box.shop.performances["SH01"])
    assert entry is not None
    free = await free_seats(box, "C1")
    want = await expected(box, "C1", 2)
    # as if other processes' claims had got every free seat, then rolled back
    entry.mark_lost(free)
    assert entry.suspects_of([box.stock("C1")]) == free
    assert entry.propose([box.stock("C1")], 2, split_allowed=False) is None
    got = await hold(box, indexes, box.seats("C1", 2))
    assert seats_of(got) == want
    assert not entry.suspect  # read again: free, or held by this hold
    # a seat taken without a lost race (this process's commit, or the log) is not suspect
    entry.mark_taken(await free_seats(box, "C1"))
    with pytest.raises(NotAvailable):
        await hold(box, indexes, box.seats("C1", 1))
    await check_invariants(box.engine)


async def test_a_group_reads_its_suspect_seats_before_declining_a_cart(box: Box) -> None:
    """``seats_lacking`` (a cart group's check before it writes) reads the suspect seats again
    too: seats lost to a claim that rolled back do not decline a cart."""
    indexes = indexes_of(box.engine)
    indexes.clear()
    await hold(box, indexes, box.seats("C1", 1))
    entry = indexes.get(box.shop.performances["SH01"])
    assert entry is not None
    free = await free_seats(box, "C1")

    async def lacking(request: PlaceRequest) -> bool:
        async def work(conn: Any) -> bool:
            return await seats_lacking(
                conn,
                institution_id=box.institution_id,
                sales_channel_id=box.shop.channels["WEB"],
                contingent_ids=[],
                requests=[request],
                now=NOW,
            )

        return await in_transaction(box.engine, work)

    entry.mark_lost(free)
    assert not await lacking(box.seats("C1", 2))
    assert entry.index.is_free(free[0]) and not entry.suspect
    entry.mark_taken(free)  # as a change read from the log would
    assert await lacking(box.seats("C1", 2))


async def test_the_log_settles_a_suspect_seat(box: Box) -> None:
    """A seat lost to a claim that committed is no longer suspect once the log tells it."""
    mine, other = SeatIndexes(), SeatIndexes()
    await hold(box, mine, box.seats("C1", 1))
    entry = mine.get(box.shop.performances["SH01"])
    assert entry is not None
    taken = await hold(box, other, box.seats("C1", 2))
    entry.mark_lost(seats_of(taken))
    async with read(box.engine) as conn:
        await refresh(conn, entry)
    assert not entry.suspect
    assert not any(entry.index.is_free(seat) for seat in seats_of(taken))


async def test_a_refused_hold_leaves_the_index_as_the_database(box: Box) -> None:
    indexes = SeatIndexes()
    await hold(box, indexes, box.seats("C1", 2))
    # the first request is taken, then the second one fails: all of it rolls back
    with pytest.raises(NotAvailable):
        await hold(box, indexes, box.seats("C1", 4), box.seats("C1", 40))
    want = await expected(box, "C1", 4)
    got = await hold(box, indexes, box.seats("C1", 4))
    assert seats_of(got) == want
    await check_invariants(box.engine)


async def test_seats_of_expired_holds_are_offered_by_the_next_hold(box: Box) -> None:
    indexes, sweeper = SeatIndexes(), SeatIndexes()
    first = await hold(box, indexes, box.seats("C1", 3), minutes=1)
    later = NOW + timedelta(minutes=5)
    # the lazy expiry inside the next hold frees them in its own transaction
    got = await hold(box, indexes, box.seats("C1", 3), now=later)
    assert seats_of(got) == seats_of(first)
    # the sweeper of another process expires the hold; this process learns it from the log
    evening = NOW + timedelta(hours=1)
    assert await expire_holds(box.engine, now=evening, seat_indexes=sweeper) == 1
    want = await expected(box, "C1", 3)
    assert want == seats_of(first)
    again = await hold(box, indexes, box.seats("C1", 3), now=evening)
    assert seats_of(again) == want
    await check_invariants(box.engine)


async def test_a_setup_import_that_moves_seats_rebuilds_the_index(box: Box) -> None:
    indexes = SeatIndexes()
    await hold(box, indexes, box.seats("C2", 1), channel="RES")
    assert indexes.builds == 1
    # the contingent shrinks from 5 seats to 3: two free seats move to the pool
    data = rich_document()
    data["products"][0]["event"]["allocations"][0]["quantity"] = 3
    await import_document(box.engine, data)
    want = await expected(box, "C2", 2, channel="RES")
    got = await hold(box, indexes, box.seats("C2", 2), channel="RES")
    assert seats_of(got) == want
    assert indexes.builds == 2
    # the web channel never gets the contingent's seats, moved or not
    contingent = {s.id for s in await box.seat_rows(stock_id=box.stock("C2", "RESQ"))}
    web = await hold(box, indexes, box.seats("C2", 20), split=True)
    assert not set(seats_of(web)) & contingent
    await check_invariants(box.engine)


async def test_a_hold_covers_several_performances(box: Box) -> None:
    """A season ticket takes one place in each of its performances, all or nothing."""
    indexes = SeatIndexes()
    both = [box.seats("C1", 1, performance=p) for p in ("SH01", "SH02")]
    season = await hold(box, indexes, *both)
    assert sorted(line.stock_id for line in season.lines) == sorted(
        [box.stock("C1"), box.stock("C1", performance="SH02")]
    )
    assert all(line.quantity == 1 for line in season.lines)
    await confirm_hold(
        box.engine,
        institution_id=box.institution_id,
        hold_id=season.id,
        now=NOW,
        seat_indexes=indexes,
    )
    assert await box.counts(box.stock("C1")) == (0, 1)
    assert await box.counts(box.stock("C1", performance="SH02")) == (0, 1)
    # SH02 sold out: nothing is held in SH01 either
    await hold(box, indexes, box.seats("C1", 29, performance="SH02"), split=True)
    with pytest.raises(NotAvailable):
        await hold(box, indexes, *both)
    assert await box.counts(box.stock("C1")) == (0, 1)
    await check_invariants(box.engine)


@pytest.mark.parametrize("seed", [1, 2])
async def test_three_processes_choose_as_a_fresh_read_would(box: Box, seed: int) -> None:
    """Seeded random holds, releases, confirmations and expiries, one at a time, spread over
    three registries: every best-available choice equals a fresh read's."""
    rng = random.Random(seed)
    processes = [SeatIndexes() for _ in range(3)]
    holds: list[tuple[Hold, SeatIndexes]] = []
    now = NOW
    compared = refused = 0
    for _ in range(60):
        indexes = rng.choice(processes)
        operation = rng.choices(["hold", "release", "confirm", "expire"], [6, 2, 1, 1])[0]
        if operation != "hold" and not holds:
            operation = "hold"
        if operation == "hold":
            category = rng.choice(("C1", "C2"))
            channel = rng.choice(("WEB", "RES"))
            quantity = rng.randint(1, 4)
            split = rng.random() < 0.3
            want = await expected(box, category, quantity, channel=channel, split=split)
            try:
                made = await hold(
                    box,
                    indexes,
                    box.seats(category, quantity),
                    channel=channel,
                    split=split,
                    now=now,
                    minutes=rng.choice((1, 15)),
                )
            except NotAvailable:
                assert want is None
                refused += 1
                continue
            assert seats_of(made) == want
            compared += 1
            holds.append((made, indexes))
        elif operation == "expire":
            now += timedelta(minutes=2)
            await expire_holds(box.engine, now=now, seat_indexes=indexes)
        else:
            made, _ = holds.pop(rng.randrange(len(holds)))
            if operation == "release":
                await release_hold(
                    box.engine,
                    institution_id=box.institution_id,
                    hold_id=made.id,
                    now=now,
                    seat_indexes=indexes,
                )
            else:
                try:
                    await confirm_hold(
                        box.engine,
                        institution_id=box.institution_id,
                        hold_id=made.id,
                        now=now,
                        seat_indexes=indexes,
                    )
                except Exception as exc:  # only an expired hold may be refused
                    assert made.expires_at <= now, exc
    assert compared >= 10
    assert all(p.builds == 1 for p in processes if len(p))
    await check_invariants(box.engine)


async def test_failed_bookkeeping_never_fails_a_committed_hold(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    indexes = SeatIndexes()
    await hold(box, indexes, box.seats("C1", 1))
    assert len(indexes) == 1

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("bookkeeping bug")

    monkeypatch.setattr(PerformanceSeats, "apply_own", broken)
    before = await box.sequence()
    made = await hold(box, indexes, box.seats("C1", 2))
    assert await box.sequence() == before + 1 and len(seats_of(made)) == 2
    assert len(indexes) == 0  # dropped: rebuilt by the next hold
    monkeypatch.undo()
    want = await expected(box, "C1", 2)
    assert seats_of(await hold(box, indexes, box.seats("C1", 2))) == want
    assert indexes.builds == 2
    await check_invariants(box.engine)


def test_preferred_blocks_are_proposed_first_and_only_there() -> None:
    """``blocks`` (a buyer's preferred areas) restricts a proposal to those blocks' seats, even
    when better-ranked seats are free elsewhere; None when they have none together."""
    from billetterie.inventory.seat_indexes import PerformanceSeats

    # two blocks of one row of 6 each, one stock; block 1's seats rank best
    seats = [
        (block * 100 + position, 7, block, 0, position, (block - 1) * 10 + position, True)
        for block in (1, 2)
        for position in range(6)
    ]
    entry = PerformanceSeats(1, 1, seats, watermark=0, stock_ids=[7])
    assert entry.propose([7], 2, split_allowed=False) == [100, 101]
    assert entry.propose([7], 2, split_allowed=False, blocks=[2]) == [200, 201]
    assert entry.propose([7], 2, split_allowed=False, blocks=[3]) is None
    entry.mark_taken([200, 201, 202, 203, 204])
    assert entry.propose([7], 2, split_allowed=False, blocks=[2]) is None
    assert entry.propose([7], 1, split_allowed=False, blocks=[2]) == [205]


async def test_a_refresh_answered_after_a_newer_one_leaves_the_index_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two transactions of one process refresh an index at once; the one whose statement read
    the log first (an older head) is answered last. The index stays (it is ahead of that
    answer), not rebuilt; a head behind the watermark read by a refresh begun after the
    watermark moved means the log went back (the database was replaced): stale."""
    import asyncio

    from billetterie.inventory import seat_indexes

    seats = [(100 + position, 7, 1, 0, position, position, True) for position in range(6)]
    entry = PerformanceSeats(1, 1, seats, watermark=10, stock_ids=[7])
    answers: dict[str, asyncio.Future[list[Any]]] = {}

    async def rows(_conn: Any, **params: Any) -> list[Any]:
        name = f"refresh {len(answers) + 1}"
        answers[name] = asyncio.get_running_loop().create_future()
        return await answers[name]

    monkeypatch.setattr(seat_indexes._CHANGES_AFTER, "rows", rows)
    older = asyncio.create_task(seat_indexes.refresh(None, entry))  # type: ignore[arg-type]
    newer = asyncio.create_task(seat_indexes.refresh(None, entry))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    # the newer statement saw seat 101 taken at sequence 12
    answers["refresh 2"].set_result([(12, 12, 7, {"taken": [101], "freed": []})])
    await newer
    assert entry.watermark == 12 and not entry.index.is_free(101)
    # the older one saw the log at sequence 11 only: nothing to apply, nothing stale
    answers["refresh 1"].set_result([(11, None, None, None)])
    await older
    assert entry.watermark == 12 and not entry.stale and not entry.index.is_free(101)
    # a refresh begun now sees at least sequence 12, unless the log went back
    later = asyncio.create_task(seat_indexes.refresh(None, entry))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    answers["refresh 3"].set_result([(3, None, None, None)])
    await later
    assert entry.stale
