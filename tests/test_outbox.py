"""The outbox: written in the caller's transaction, drained after commit by leasing dispatchers,
retried with bounded backoff, final errors kept; several dispatchers never run a row twice."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog import db as catalog_db
from billetterie.shared import outbox
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import create_engine, read, transaction
from billetterie.shared.outbox import Backoff, Dispatcher, FinalError, Job, RetryLater
from tests.conftest import NOW, Backend


async def new_institution(engine: AsyncEngine, code: str = "OBX") -> int:
    async with transaction(engine) as conn:
        return int(
            (
                await conn.execute(
                    sa.insert(catalog_db.institution)
                    .values(code=code, name={"en": code}, currency="EUR")
                    .returning(catalog_db.institution.c.id)
                )
            ).scalar_one()
        )


async def rows(engine: AsyncEngine) -> list[sa.Row[tuple[object, ...]]]:
    async with read(engine) as conn:
        return list(
            (await conn.execute(sa.select(outbox.outbox).order_by(outbox.outbox.c.id))).all()
        )


async def enqueue(engine: AsyncEngine, institution_id: int, topic: str, **payload: object) -> int:
    async with transaction(engine) as conn:
        row_id = await outbox.enqueue(
            conn, institution_id=institution_id, topic=topic, payload=payload, now=NOW
        )
    assert row_id is not None
    return row_id


async def test_enqueue_is_part_of_the_callers_transaction(scratch_engine: AsyncEngine) -> None:
    institution_id = await new_institution(scratch_engine)
    with pytest.raises(RuntimeError):
        async with transaction(scratch_engine) as conn:
            await outbox.enqueue(
                conn, institution_id=institution_id, topic="t", payload={"id": 1}, now=NOW
            )
            raise RuntimeError("the use case failed")
    assert await rows(scratch_engine) == []
    row_id = await enqueue(scratch_engine, institution_id, "t", id=1)
    (row,) = await rows(scratch_engine)
    assert (row.id, row.topic, row.payload, row.state, row.attempts) == (
        row_id,
        "t",
        {"id": 1},
        "PENDING",
        0,
    )
    assert row.available_at == NOW


async def test_a_key_deduplicates(scratch_engine: AsyncEngine) -> None:
    institution_id = await new_institution(scratch_engine)
    other = await new_institution(scratch_engine, "OBY")
    async with transaction(scratch_engine) as conn:
        first = await outbox.enqueue(
            conn, institution_id=institution_id, topic="t", payload={}, now=NOW, key="k1"
        )
        again = await outbox.enqueue(
            conn, institution_id=institution_id, topic="t", payload={}, now=NOW, key="k1"
        )
        other_topic = await outbox.enqueue(
            conn, institution_id=institution_id, topic="u", payload={}, now=NOW, key="k1"
        )
        other_institution = await outbox.enqueue(
            conn, institution_id=other, topic="t", payload={}, now=NOW, key="k1"
        )
    assert first is not None and again is None
    assert other_topic is not None and other_institution is not None
    assert len(await rows(scratch_engine)) == 3


async def test_done_retry_with_backoff_and_final(scratch_engine: AsyncEngine) -> None:
    institution_id = await new_institution(scratch_engine)
    clock = FixedClock(NOW)
    calls: list[tuple[str, int]] = []

    async def ok(job: Job) -> None:
        calls.append(("ok", job.attempt))

    async def flaky(job: Job) -> None:
        calls.append(("flaky", job.attempt))
        if job.attempt < 3:
            raise RetryLater("HTTP 503")

    async def refused(job: Job) -> None:
        calls.append(("refused", job.attempt))
        raise FinalError("HTTP 404")

    dispatcher = Dispatcher(
        scratch_engine,
        clock,
        handlers={"ok": ok, "flaky": flaky, "refused": refused},
        backoff=Backoff(base_seconds=10, maximum_seconds=100),
    )
    ids = {t: await enqueue(scratch_engine, institution_id, t) for t in ("ok", "flaky", "refused")}
    outcomes = {o.job_id: o.state for o in await dispatcher.drain()}
    assert outcomes == {ids["ok"]: "DONE", ids["flaky"]: "PENDING", ids["refused"]: "FAILED"}
    by_id = {r.id: r for r in await rows(scratch_engine)}
    flaky_row = by_id[ids["flaky"]]
    # equal jitter: between half and all of base * 2**0
    assert NOW + timedelta(seconds=5) <= flaky_row.available_at <= NOW + timedelta(seconds=10)
    assert (flaky_row.attempts, flaky_row.last_error, flaky_row.claim) == (1, "HTTP 503", None)
    assert by_id[ids["refused"]].last_error == "HTTP 404"
    assert by_id[ids["ok"]].finished_at == NOW
    assert await dispatcher.drain() == []  # not due yet

    clock.set(NOW + timedelta(seconds=10))
    assert [o.state for o in await dispatcher.drain()] == ["PENDING"]
    second = {r.id: r for r in await rows(scratch_engine)}[ids["flaky"]]
    assert NOW + timedelta(seconds=20) <= second.available_at <= NOW + timedelta(seconds=30)
    clock.set(NOW + timedelta(seconds=30))
    assert [o.state for o in await dispatcher.drain()] == ["DONE"]
    assert calls == [
        ("ok", 1),
        ("flaky", 1),
        ("refused", 1),
        ("flaky", 2),
        ("flaky", 3),
    ]
    states = {r.id: (r.state, r.attempts) for r in await rows(scratch_engine)}
    assert states == {
        ids["ok"]: ("DONE", 1),
        ids["flaky"]: ("DONE", 3),
        ids["refused"]: ("FAILED", 1),
    }


async def test_attempts_are_bounded_and_unexpected_errors_retry(
    scratch_engine: AsyncEngine,
) -> None:
    institution_id = await new_institution(scratch_engine)
    clock = FixedClock(NOW)

    async def broken(job: Job) -> None:
        raise KeyError("a bug")

    dispatcher = Dispatcher(
        scratch_engine,
        clock,
        handlers={"broken": broken},
        max_attempts=3,
        backoff=Backoff(base_seconds=1, maximum_seconds=1),
    )
    row_id = await enqueue(scratch_engine, institution_id, "broken")
    states = []
    for step in range(4):
        clock.set(NOW + timedelta(seconds=2 * step))
        states += [o.state for o in await dispatcher.drain()]
    assert states == ["PENDING", "PENDING", "FAILED"]
    (row,) = await rows(scratch_engine)
    assert (row.id, row.state, row.attempts, row.last_error) == (row_id, "FAILED", 3, "'a bug'")


async def test_retry_after_is_honoured_within_the_bound(scratch_engine: AsyncEngine) -> None:
    institution_id = await new_institution(scratch_engine)

    async def limited(job: Job) -> None:
        raise RetryLater("HTTP 429", retry_after=50)

    dispatcher = Dispatcher(
        scratch_engine,
        FixedClock(NOW),
        handlers={"limited": limited},
        backoff=Backoff(base_seconds=1, maximum_seconds=40),
    )
    await enqueue(scratch_engine, institution_id, "limited")
    await dispatcher.drain()
    (row,) = await rows(scratch_engine)
    assert row.available_at == NOW + timedelta(seconds=40)


def test_backoff_is_bounded_and_jittered() -> None:
    backoff = Backoff(base_seconds=2, maximum_seconds=60)
    rng = random.Random(7)
    for attempt in range(1, 60):
        full = min(60, 2 * 2 ** (attempt - 1))
        delays = [backoff.delay(attempt, rng) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1


async def test_only_known_topics_are_claimed(scratch_engine: AsyncEngine) -> None:
    institution_id = await new_institution(scratch_engine)
    await enqueue(scratch_engine, institution_id, "someone.elses")

    async def mine(job: Job) -> None: ...

    dispatcher = Dispatcher(scratch_engine, FixedClock(NOW), handlers={"mine": mine})
    assert await dispatcher.drain() == []
    assert [r.state for r in await rows(scratch_engine)] == ["PENDING"]


async def test_an_expired_lease_is_taken_over_and_the_late_finisher_loses(
    scratch_engine: AsyncEngine,
) -> None:
    institution_id = await new_institution(scratch_engine)
    clock = FixedClock(NOW)
    seen: list[int] = []

    async def handler(job: Job) -> None:
        seen.append(job.attempt)

    first = Dispatcher(scratch_engine, clock, handlers={"t": handler}, lease_seconds=30)
    second = Dispatcher(scratch_engine, clock, handlers={"t": handler}, lease_seconds=30)
    await enqueue(scratch_engine, institution_id, "t")
    ((stuck_job, stuck_token),) = await first.claim()  # then this process freezes
    assert await second.claim() == []  # the lease holds
    clock.set(NOW + timedelta(seconds=31))
    (outcome,) = await second.drain()
    assert (outcome.state, seen) == ("DONE", [2])
    # the frozen dispatcher wakes up and tries to report: its claim is gone, nothing changes
    late = await first.run_job(stuck_job, stuck_token)
    assert late.state == "LOST" and seen == [2, 1]
    (row,) = await rows(scratch_engine)
    assert (row.state, row.attempts, row.finished_at) == ("DONE", 2, NOW + timedelta(seconds=31))


async def test_the_dispatcher_loop_drains_and_stops(scratch_engine: AsyncEngine) -> None:
    institution_id = await new_institution(scratch_engine)
    done = asyncio.Event()

    async def handler(job: Job) -> None:
        done.set()

    dispatcher = Dispatcher(
        scratch_engine, FixedClock(NOW), handlers={"t": handler}, poll_seconds=0.05
    )
    stop = asyncio.Event()
    loop = asyncio.create_task(dispatcher.run(stop))
    await asyncio.sleep(0.1)
    await enqueue(scratch_engine, institution_id, "t")
    await asyncio.wait_for(done.wait(), 5)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert [r.state for r in await rows(scratch_engine)] == ["DONE"]


async def test_notify_wakes_a_listening_dispatcher(
    scratch_engine: AsyncEngine, backend: Backend
) -> None:
    if backend.name != "postgresql":
        pytest.skip("NOTIFY is PostgreSQL's")
    institution_id = await new_institution(scratch_engine)
    done = asyncio.Event()

    async def handler(job: Job) -> None:
        done.set()

    # a poll far longer than the wait below: only the NOTIFY can wake it in time
    dispatcher = Dispatcher(
        scratch_engine, FixedClock(NOW), handlers={"t": handler}, poll_seconds=60
    )
    stop = asyncio.Event()
    loop = asyncio.create_task(dispatcher.run(stop))
    await asyncio.sleep(0.5)  # the first (empty) drain is over and LISTEN is in place
    started = time.monotonic()
    await enqueue(scratch_engine, institution_id, "t")
    await asyncio.wait_for(done.wait(), 10)
    assert time.monotonic() - started < 10
    stop.set()
    await asyncio.wait_for(loop, 5)


async def test_concurrent_dispatchers_never_run_a_row_twice(
    scratch_engine: AsyncEngine, backend: Backend
) -> None:
    """Four dispatchers on four engines (connection pools, as four processes would have) drain
    200 rows at once; each row runs exactly once and never on two dispatchers together."""
    if backend.name != "postgresql":
        pytest.skip("the race is PostgreSQL's (SQLite serialises writers)")
    institution_id = await new_institution(scratch_engine)
    async with transaction(scratch_engine) as conn:
        for n in range(200):
            await outbox.enqueue(
                conn, institution_id=institution_id, topic="race", payload={"n": n}, now=NOW
            )
    running: set[int] = set()
    runs: Counter[int] = Counter()
    by_dispatcher: Counter[int] = Counter()
    overlaps: list[int] = []
    shared = asyncio.Event()
    active: Counter[int] = Counter()
    most_active: Counter[int] = Counter()

    def handler_of(index: int) -> outbox.Handler:
        async def handler(job: Job) -> None:
            if job.id in running:
                overlaps.append(job.id)
            running.add(job.id)
            runs[job.id] += 1
            by_dispatcher[index] += 1
            active[index] += 1
            most_active[index] = max(most_active[index], active[index])
            if len(by_dispatcher) >= 2:
                shared.set()
            # the first jobs wait (a while) for a second dispatcher: were claims exclusive
            # of each other, none would ever come
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shared.wait(), 5)
            await asyncio.sleep(random.uniform(0.001, 0.01))
            active[index] -= 1
            running.discard(job.id)

        return handler

    engines = [create_engine(backend.scratch_url) for _ in range(4)]
    stop = asyncio.Event()
    try:
        dispatchers = [
            Dispatcher(
                e,
                FixedClock(NOW),
                handlers={"race": handler_of(i)},
                batch_size=7,
                poll_seconds=0.01,
            )
            for i, e in enumerate(engines)
        ]
        loops = [asyncio.create_task(d.run(stop)) for d in dispatchers]
        for _ in range(600):
            if sum(runs.values()) >= 200 and not running:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # a row run twice would show up now
        stop.set()
        await asyncio.wait_for(asyncio.gather(*loops), 10)
    finally:
        for engine in engines:
            await engine.dispose()
    assert overlaps == []
    assert len(runs) == 200 and set(runs.values()) == {1}
    assert len(by_dispatcher) >= 2  # the work was really shared
    assert max(most_active.values()) <= 7  # no claim handed out more than its batch
    assert {r.state for r in await rows(scratch_engine)} == {"DONE"}


async def test_finishing_writes_ride_out_transient_database_errors() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise sa.exc.OperationalError("UPDATE outbox", {}, Exception("server closed"))
        return "written"

    assert await outbox.with_retries(flaky) == "written" and calls == 3

    async def wrong() -> str:
        raise sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(sa.exc.IntegrityError):  # a faulty statement is not retried
        await outbox.with_retries(wrong)
    assert outbox.transient_database_error(ConnectionRefusedError())
    assert not outbox.transient_database_error(ValueError())
