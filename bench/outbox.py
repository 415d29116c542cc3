"""Benchmark of the outbox: enqueue cost, drain throughput by number of dispatchers, webhook
deliveries to a local receiver, and the wake-up latency from commit to handler.

* **enqueue**: ``--rows`` rows, one transaction each (as a sale writes its row), rows/s;
* **drain**: the same rows drained by 1 and by ``--dispatchers`` dispatchers (each on its own
  engine, as processes would be) with a handler that does nothing: rows/s, and a check that no
  row ran twice (a duplicate aborts the run with exit code 1);
* **webhooks**: ``--deliveries`` signed ping deliveries through ``emit`` to an HTTP receiver on
  127.0.0.1, drained by one dispatcher: deliveries/s;
* **wake-up**: a dispatcher loop polling every 1 s; ``--wakeups`` rows committed one by one, the
  delay from commit to the handler's start (p50, p95). PostgreSQL's NOTIFY makes it
  milliseconds; SQLite waits for the poll (expect ~0.5 s on average).

    .venv/bin/python bench/outbox.py                       # SQLite in a temporary directory
    .venv/bin/python bench/outbox.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/outbox.py --rows 5000 --dispatchers 4 --json figures.json

Figures depend on the machine and its load (printed with them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from billetterie.catalog import db as catalog_db
from billetterie.config import normalize_database_url
from billetterie.migrations import upgrade_async
from billetterie.shared import outbox
from billetterie.shared.clock import SystemClock
from billetterie.shared.db import create_engine, transaction
from billetterie.shared.outbox import Dispatcher, Job
from billetterie.webhooks import db as webhook_db
from billetterie.webhooks import services
from billetterie.webhooks.tasks import WebhookSender

console = Console(width=None if sys.stdout.isatty() else 120)


async def fresh_database(url: str | None) -> tuple[str, Any]:
    """The URL of an empty migrated database and a cleanup coroutine function."""
    if not url or url == "sqlite":
        folder = tempfile.mkdtemp(prefix="outbox-bench-")
        target = f"sqlite+aiosqlite:///{folder}/bench.db"

        async def nothing() -> None:
            return None

        await upgrade_async(target)
        return target, nothing
    import asyncpg  # type: ignore[import-untyped]

    admin = normalize_database_url(url).replace("postgresql+asyncpg://", "postgresql://")
    name = f"billetterie_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    target = "postgresql+asyncpg://" + admin.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    await upgrade_async(target)
    return target, drop


async def institution_and_pos(engine: Any) -> tuple[int, int]:
    async with transaction(engine) as conn:
        institution_id = (
            await conn.execute(
                sa.insert(catalog_db.institution)
                .values(code="BENCH", name={"en": "bench"}, currency="EUR")
                .returning(catalog_db.institution.c.id)
            )
        ).scalar_one()
        organization_id = (
            await conn.execute(
                sa.insert(catalog_db.organization)
                .values(
                    institution_id=institution_id,
                    code="BENCH",
                    name={},
                    time_zone="UTC",
                    main_language="en",
                    languages=["en"],
                )
                .returning(catalog_db.organization.c.id)
            )
        ).scalar_one()
        channel_id = (
            await conn.execute(
                sa.insert(catalog_db.sales_channel)
                .values(
                    institution_id=institution_id,
                    code="WEB",
                    name={},
                    channel_type="INTERNET_B2C",
                    organization_id=organization_id,
                )
                .returning(catalog_db.sales_channel.c.id)
            )
        ).scalar_one()
        pos_id = (
            await conn.execute(
                sa.insert(catalog_db.point_of_sale)
                .values(
                    institution_id=institution_id,
                    sales_channel_id=channel_id,
                    code="WEB",
                    number=1,
                    name={},
                    pos_type="STANDARD",
                    order_abandon_delay=20,
                    seat_selection_mode="BEST_AVAILABLE",
                    split_seating_allowed=False,
                    max_seats_per_performance=10,
                    contact_login_mode="EMAIL_PASSWORD",
                    guest_login_available=False,
                    contact_account_creation_allowed=True,
                    languages=["en"],
                    external_urls={},
                    parameters={},
                )
                .returning(catalog_db.point_of_sale.c.id)
            )
        ).scalar_one()
    return int(institution_id), int(pos_id)


async def bench_enqueue(engine: Any, institution_id: int, rows: int) -> float:
    started = time.perf_counter()
    for n in range(rows):
        async with transaction(engine) as conn:
            await outbox.enqueue(
                conn,
                institution_id=institution_id,
                topic="bench",
                payload={"n": n},
                now=SystemClock().now(),
            )
    return rows / (time.perf_counter() - started)


async def bench_drain(url: str, engine: Any, institution_id: int, rows: int, count: int) -> float:
    async with transaction(engine) as conn:
        await conn.execute(sa.delete(outbox.outbox))
        for n in range(rows):
            await outbox.enqueue(
                conn,
                institution_id=institution_id,
                topic="bench",
                payload={"n": n},
                now=SystemClock().now(),
            )
    runs: Counter[int] = Counter()

    async def handler(job: Job) -> None:
        runs[job.id] += 1

    engines = [create_engine(url) for _ in range(count)]
    try:
        dispatchers = [
            Dispatcher(e, SystemClock(), handlers={"bench": handler}, batch_size=50)
            for e in engines
        ]
        started = time.perf_counter()
        while len(runs) < rows:
            await asyncio.gather(*(d.drain() for d in dispatchers))
        elapsed = time.perf_counter() - started
    finally:
        for e in engines:
            await e.dispose()
    if set(runs.values()) != {1}:
        raise SystemExit(f"a row ran twice: {[k for k, v in runs.items() if v > 1][:5]}")
    return rows / elapsed


async def bench_webhooks(engine: Any, institution_id: int, pos_id: int, deliveries: int) -> float:
    received = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                length = 0
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    if header.lower().startswith(b"content-length:"):
                        length = int(header.split(b":")[1])
                await reader.readexactly(length)
                received += 1
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with transaction(engine) as conn:
        await conn.execute(sa.delete(outbox.outbox))
        await conn.execute(
            sa.insert(webhook_db.webhook_subscription).values(
                institution_id=institution_id,
                point_of_sale_id=pos_id,
                code="BENCH",
                events=["order.closed"],
                url=f"http://127.0.0.1:{port}/orders/${{orderId}}",
                method="POST",
                payload="ping",
                filter={},
                secret="bench-secret-0123456789",
                enabled=True,
            )
        )
        for n in range(deliveries):
            await services.emit(
                conn,
                institution_id=institution_id,
                point_of_sale_id=pos_id,
                event="order.closed",
                subject_id=n,
                now=SystemClock().now(),
            )
    async with httpx.AsyncClient(timeout=10) as client:
        sender = WebhookSender(engine, SystemClock(), client, max_attempts=3)
        dispatcher = Dispatcher(engine, SystemClock(), handlers={services.TOPIC: sender})
        started = time.perf_counter()
        await dispatcher.drain(max_rounds=100000)
        elapsed = time.perf_counter() - started
    server.close()
    if received != deliveries:
        raise SystemExit(f"{received} of {deliveries} deliveries arrived")
    return deliveries / elapsed


async def bench_wakeups(engine: Any, institution_id: int, count: int) -> list[float]:
    started_at: dict[int, float] = {}
    committed_at: dict[int, float] = {}
    arrived = asyncio.Event()

    async def handler(job: Job) -> None:
        started_at[job.payload["n"]] = time.perf_counter()
        arrived.set()

    dispatcher = Dispatcher(engine, SystemClock(), handlers={"wake": handler}, poll_seconds=1.0)
    stop = asyncio.Event()
    loop = asyncio.create_task(dispatcher.run(stop))
    await asyncio.sleep(1.5)
    for n in range(count):
        arrived.clear()
        async with transaction(engine) as conn:
            await outbox.enqueue(
                conn,
                institution_id=institution_id,
                topic="wake",
                payload={"n": n},
                now=SystemClock().now(),
            )
        committed_at[n] = time.perf_counter()
        await asyncio.wait_for(arrived.wait(), 10)
        await asyncio.sleep(0.05 + (n % 7) * 0.1)  # commits land at varied points of the poll
    stop.set()
    await loop
    return sorted((started_at[n] - committed_at[n]) * 1000 for n in range(count))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="sqlite")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--dispatchers", type=int, default=4)
    parser.add_argument("--deliveries", type=int, default=500)
    parser.add_argument("--wakeups", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load_before = os.getloadavg()
    url, cleanup = await fresh_database(args.database_url)
    engine = create_engine(url)
    figures: dict[str, Any] = {"database": engine.dialect.name}
    try:
        institution_id, pos_id = await institution_and_pos(engine)
        figures["enqueue_rows_per_s"] = await bench_enqueue(engine, institution_id, args.rows)
        figures["drain_1_rows_per_s"] = await bench_drain(url, engine, institution_id, args.rows, 1)
        figures[f"drain_{args.dispatchers}_rows_per_s"] = await bench_drain(
            url, engine, institution_id, args.rows, args.dispatchers
        )
        figures["webhooks_per_s"] = await bench_webhooks(
            engine, institution_id, pos_id, args.deliveries
        )
        wakeups = await bench_wakeups(engine, institution_id, args.wakeups)
        figures["wakeup_p50_ms"] = statistics.median(wakeups)
        figures["wakeup_p95_ms"] = wakeups[max(0, int(len(wakeups) * 0.95) - 1)]
    finally:
        await engine.dispose()
        await cleanup()
    figures["load_average"] = [load_before[0], os.getloadavg()[0]]
    table = Table(title=f"outbox on {figures['database']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        if isinstance(value, float):
            table.add_row(name, f"{value:,.1f}")
        elif isinstance(value, list):
            table.add_row(name, " -> ".join(f"{v:.2f}" for v in value))
        else:
            table.add_row(name, str(value))
    console.print(table)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
