"""``billetterie worker`` as a real process: it prints its schedules, drains the outbox (a
webhook reaches a local receiver), stops cleanly on SIGTERM; several workers on PostgreSQL
deliver each row exactly once."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog.services import find_point_of_sale, institution_id_by_code
from billetterie.shared import outbox
from billetterie.shared.db import read, transaction
from billetterie.webhooks import services
from tests.conftest import NOW, Backend
from tests.factories import import_document, setup_document
from tests.receiver import Receiver, receiving
from tests.test_webhooks import hooks


async def start_worker(backend: Backend, tmp_path: Path) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "BILLETTERIE_DATABASE_URL": backend.scratch_url,
        "BILLETTERIE_VAR_DIR": str(tmp_path),
        "BILLETTERIE_OUTBOX_POLL_SECONDS": "0.2",
        "COLUMNS": "120",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "billetterie.cli",
        "worker",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def stop_worker(process: asyncio.subprocess.Process) -> tuple[int, str]:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def emit_orders(engine: AsyncEngine, count: int) -> list[str]:
    async with transaction(engine) as conn:
        institution_id = await institution_id_by_code(conn, "ACME")
        pos = await find_point_of_sale(conn, "ACME", "ACMERES")
        ids: list[str] = []
        for order in range(count):
            ids += await services.emit(
                conn,
                institution_id=institution_id,
                point_of_sale_id=pos,
                event="order.closed",
                subject_id=order + 1,
                now=NOW,
            )
    return ids


async def outbox_states(engine: AsyncEngine) -> Counter[str]:
    async with read(engine) as conn:
        return Counter((await conn.execute(sa.select(outbox.outbox.c.state))).scalars())


async def wait_for(receiver: Receiver, count: int, seconds: float = 90) -> None:
    def arrived() -> int:
        return len({r.headers["billetterie-delivery"] for r in receiver.requests})

    for _ in range(int(seconds * 10)):
        if arrived() >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{arrived()} of {count} deliveries arrived")


async def test_the_worker_drains_a_row_and_stops_on_sigterm(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    async with receiving() as receiver:
        await import_document(scratch_engine, setup_document("ACME", webhooks=hooks(receiver.base)))
        (delivery,) = await emit_orders(scratch_engine, 1)
        process = await start_worker(backend, tmp_path)
        try:
            await wait_for(receiver, 1)
            for _ in range(100):  # the DONE mark follows the answer
                if await outbox_states(scratch_engine) == Counter({"DONE": 1}):
                    break
                await asyncio.sleep(0.1)
        finally:
            code, output = await stop_worker(process)
    assert code == 0, output
    (request,) = receiver.requests
    assert request.target == f"/res/{delivery}"
    assert await outbox_states(scratch_engine) == Counter({"DONE": 1})
    for line in (
        "billetterie worker",
        "outbox.dispatcher",
        "inventory.expired_holds",
        "idempotency.expired_keys",
        "database.statistics",
        "worker stopped",
    ):
        assert line in output, output


@pytest.mark.slow
async def test_several_workers_deliver_each_row_once(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    if backend.name != "postgresql":
        pytest.skip("several processes claiming at once is the PostgreSQL case")
    async with receiving() as receiver:
        await import_document(scratch_engine, setup_document("ACME", webhooks=hooks(receiver.base)))
        processes = [await start_worker(backend, tmp_path / str(n)) for n in range(3)]
        try:
            await asyncio.sleep(3)  # let them all start, then give them work at once
            ids = await emit_orders(scratch_engine, 90)
            await wait_for(receiver, 90)
            await asyncio.sleep(1)  # a concurrent duplicate would arrive now
        finally:
            results = [await stop_worker(p) for p in processes]
    assert [code for code, _ in results] == [0, 0, 0], [output for _, output in results]
    arrivals: dict[str, list[float]] = {}
    for request in receiver.requests:
        arrivals.setdefault(request.headers["billetterie-delivery"], []).append(request.at)
    assert set(arrivals) == set(ids)
    # Each row ran once, unless its worker could not record the outcome (the database refusing
    # connections, as a shared server may): then it runs again only after its 60 s lease,
    # never at the same time as the first run.
    again = {d: times for d, times in arrivals.items() if len(times) > 1}
    for times in again.values():
        assert all(later - earlier >= 59 for earlier, later in itertools.pairwise(times))
    if again:
        assert "outbox" in "".join(output for _, output in results)  # the failure was logged
    assert await outbox_states(scratch_engine) == Counter({"DONE": 90})


async def test_server_processes_run_the_same_loops_unless_disabled(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    from billetterie.app import build_app
    from billetterie.shared.clock import FixedClock
    from tests.conftest import settings_for

    async with receiving() as receiver:
        await import_document(scratch_engine, setup_document("ACME", webhooks=hooks(receiver.base)))
        base = settings_for(backend.scratch_url, tmp_path)
        off = build_app(
            base.model_copy(update={"background_tasks": False, "outbox_poll_seconds": 0.1}),
            clock=FixedClock(NOW),
        )
        async with off.router.lifespan_context(off):
            (first,) = await emit_orders(scratch_engine, 1)
            await asyncio.sleep(1.5)
        assert receiver.requests == []
        assert await outbox_states(scratch_engine) == Counter({"PENDING": 1})
        on = build_app(base.model_copy(update={"outbox_poll_seconds": 0.1}), clock=FixedClock(NOW))
        async with on.router.lifespan_context(on):
            await wait_for(receiver, 1, seconds=30)
            for _ in range(100):
                if await outbox_states(scratch_engine) == Counter({"DONE": 1}):
                    break
                await asyncio.sleep(0.1)
    assert [r.target for r in receiver.requests] == [f"/res/{first}"]
    assert await outbox_states(scratch_engine) == Counter({"DONE": 1})
