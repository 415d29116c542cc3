"""Benchmark of the wallet's organizer API: injection and feedback, over real HTTP.

The wallet runs as its own process (``billetterie-wallet serve``) on a fresh database: a SQLite
file in a temporary directory (default) or a new PostgreSQL database (``--database-url
postgresql://...``, dropped afterwards). An organizer ``BENCH`` is created with
``billetterie-wallet organizers create``. Then, with one keep-alive connection, as the box
office's external printing interface would:

* **injection** (issue 5's target for the whole chain: 100,000 tickets <= 60 s) -
  ``--tickets`` tickets over ``--events`` events in batches of ``--batch`` (at most 1000), each
  answer checked (every ticket CREATED); the time per batch (p50, p99, max) and the total;
* **re-injection** - one batch sent again: every ticket UNCHANGED (the idempotent path);
* **feedback of the injection** - the whole feed read in pages of ``--page``;
* **CPU** - the wallet server process's CPU time (user + system) in each phase, a figure the
  machine's load changes less than the wall time (PostgreSQL's own processes not included);
* **feedback over changes** (target: 10,000 changes <= 5 s) - ``--changes`` tickets pushed as
  controlled (in batches of 1000), then the feed read from the consumer's key until it is empty;
  every changed ticket must come back exactly once, CONTROLLED.

The box-office side (tickets sold, then injected by ``billetterie/printing``) is not part of it.
It is a benchmark, not a test: it exits 0 when a target is missed, 1 only when the run fails.

    .venv/bin/python bench/wallet.py [--json figures.json]
    .venv/bin/python bench/wallet.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from rich.console import Console
from rich.table import Table

console = Console()
KEY = re.compile(r"API key \(shown once\): (bwk_\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_database(admin_url: str, name: str, *, drop: bool = False) -> str:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not drop:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())
    return admin_url.rsplit("/", 1)[0] + "/" + name


def ticket(index: int, events: int, start: datetime) -> dict[str, Any]:
    event = index % events
    return {
        "ticketId": f"BT{index:07d}",
        "event": {
            "id": f"EV{event:03d}",
            "name": f"Bench event {event}",
            "startTime": (start + timedelta(days=event)).isoformat(),
            "address": {"site": "Arena", "city": "Lausanne", "countryCode": "CH", "zip": "1000"},
        },
        "purchaseDetails": {
            "orderId": f"O{index // 4}",
            "price": 45000,
            "currency": "CHF",
            "seat": {"block": str(index % 20), "row": str(index % 25), "seat": str(index % 40)},
        },
        "security": {"barcode": f"BC1.{index:07d}.{secrets.token_urlsafe(24)}"},
        "spectatorDetails": {
            "firstName": "Spectator",
            "lastName": str(index),
            "email": f"spectator{index % 50000}@example.org",
        },
        "activationParameters": {
            "groupId": f"G{event:03d}",
            "method": "offline",
            "time": (start + timedelta(days=event, hours=-2)).isoformat(),
        },
        "transferRules": {"transferable": True, "maxTransfers": 2, "resaleAllowed": True},
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="sqlite", help="sqlite, or a PostgreSQL URL")
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not 1 <= args.batch <= 1000:
        parser.error("--batch is 1..1000")
    args.changes = min(args.changes, args.tickets)

    folder = Path(tempfile.mkdtemp(prefix="wallet-bench-"))
    pg_name = None
    if args.database_url == "sqlite":
        url = f"sqlite+aiosqlite:///{folder / 'wallet.db'}"
    else:
        pg_name = f"wallet_bench_{secrets.token_hex(4)}"
        url = postgres_database(args.database_url, pg_name)
    env = {
        **os.environ,
        "BILLETTERIE_WALLET_DATABASE_URL": url,
        "BILLETTERIE_WALLET_VAR_DIR": str(folder),
        "BILLETTERIE_WALLET_BACKGROUND_TASKS": "false",
    }
    cli = [sys.executable, "-m", "billetterie_wallet.cli"]
    created = subprocess.run(
        [*cli, "organizers", "create", "BENCH"], env=env, capture_output=True, text=True, check=True
    )
    match = KEY.search(created.stdout)
    if match is None:
        console.print(created.stdout, created.stderr)
        return 1
    key = match.group(1)
    port = free_port()
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    figures: dict[str, Any] = {
        "database": "sqlite" if pg_name is None else "postgresql",
        "load_start": os.getloadavg()[0],
    }
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    console.print("[red]the wallet did not start[/]")
                    return 1
                time.sleep(0.2)
        run(base, key, args, figures, psutil.Process(server.pid))
    finally:
        server.terminate()
        server.wait(15)
        if pg_name is not None:
            postgres_database(args.database_url, pg_name, drop=True)
    figures["load_end"] = os.getloadavg()[0]
    report(figures, args)
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def run(
    base: str, key: str, args: argparse.Namespace, figures: dict[str, Any], server: psutil.Process
) -> None:
    start = datetime(2027, 3, 1, 19, 0, tzinfo=UTC)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        bodies = []
        for first in range(0, args.tickets, args.batch):
            batch = [
                ticket(i, args.events, start)
                for i in range(first, min(first + args.batch, args.tickets))
            ]
            bodies.append(orjson.dumps({"tickets": batch}))
        times: list[float] = []
        cpu_before = cpu(server)
        began = time.perf_counter()
        for body in bodies:
            t0 = time.perf_counter()
            response = client.post("/api/v1/organizer/tickets", content=body)
            times.append(time.perf_counter() - t0)
            response.raise_for_status()
            summary = response.json()["summary"]
            if set(summary) != {"CREATED"}:
                raise RuntimeError(f"injection answered {summary}")
        total = time.perf_counter() - began
        server_cpu = cpu(server) - cpu_before
        figures["injection"] = {
            "server_cpu_seconds": server_cpu,
            "tickets": args.tickets,
            "batches": len(bodies),
            "seconds": total,
            "tickets_per_second": args.tickets / total,
            "batch_p50_ms": statistics.median(times) * 1000,
            "batch_p99_ms": percentile(times, 0.99) * 1000,
            "batch_max_ms": max(times) * 1000,
        }

        t0 = time.perf_counter()
        again = client.post("/api/v1/organizer/tickets", content=bodies[0])
        figures["reinjection_batch_ms"] = (time.perf_counter() - t0) * 1000
        if set(again.json()["summary"]) != {"UNCHANGED"}:
            raise RuntimeError(f"re-injection answered {again.json()['summary']}")

        cpu_before = cpu(server)
        seen, seconds, key_after = read_feed(client, None, args.page)
        feed_cpu = cpu(server) - cpu_before
        if seen != Counter({"INJECTED": args.tickets}):
            raise RuntimeError(f"injection feedback read {seen}")
        figures["feedback_injection"] = {
            "server_cpu_seconds": feed_cpu,
            "tickets": args.tickets,
            "seconds": seconds,
            "tickets_per_second": args.tickets / seconds,
        }

        step = max(1, args.tickets // args.changes)
        changed = [f"BT{i:07d}" for i in range(0, args.tickets, step)][: args.changes]
        t0 = time.perf_counter()
        for first in range(0, len(changed), 1000):
            response = client.post(
                "/api/v1/organizer/tickets/controlled",
                json={"ticketIds": changed[first : first + 1000]},
            )
            response.raise_for_status()
        figures["push_controlled_seconds"] = time.perf_counter() - t0
        cpu_before = cpu(server)
        seen, seconds, _ = read_feed(client, key_after, args.page)
        changes_cpu = cpu(server) - cpu_before
        if seen != Counter({"CONTROLLED": len(changed)}):
            raise RuntimeError(f"change feedback read {seen}")
        figures["feedback_changes"] = {
            "server_cpu_seconds": changes_cpu,
            "changes": len(changed),
            "seconds": seconds,
            "changes_per_second": len(changed) / seconds,
        }


def read_feed(client: httpx.Client, key: str | None, page: int) -> tuple[Counter[str], float, str]:
    seen: Counter[str] = Counter()
    ids: set[str] = set()
    began = time.perf_counter()
    while True:
        params: dict[str, Any] = {"limit": page}
        if key is not None:
            params["key"] = key
        response = client.get("/api/v1/organizer/feedback", params=params)
        response.raise_for_status()
        body = response.json()
        for entry in body["tickets"]:
            if entry["ticketId"] in ids:
                raise RuntimeError(f"{entry['ticketId']} came twice")
            ids.add(entry["ticketId"])
            seen[entry["status"]] += 1
        key = body["nextKey"]
        if not body["hasMore"]:
            break
    assert key is not None
    return seen, time.perf_counter() - began, key


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    injection = figures["injection"]
    feedback = figures["feedback_changes"]
    table = Table(
        title=f"wallet organizer API ({figures['database']}, one connection)", min_width=96
    )
    for column in ("measure", "figure", "target", ""):
        table.add_column(column)

    def verdict(ok: bool) -> str:
        return "[green]PASS[/]" if ok else "[red]MISS[/]"

    table.add_row(
        f"inject {injection['tickets']:,} tickets ({injection['batches']} x {args.batch})",
        f"{injection['seconds']:.1f} s ({injection['tickets_per_second']:,.0f}/s)",
        "<= 60 s",
        verdict(injection["seconds"] <= 60),
    )
    table.add_row(
        "  wallet server CPU (user + system)",
        f"{injection['server_cpu_seconds']:.1f} s "
        f"({injection['server_cpu_seconds'] * 1000 / injection['batches']:.0f} ms per batch)",
        "",
        "",
    )
    table.add_row(
        "  per batch p50 / p99 / max",
        f"{injection['batch_p50_ms']:.0f} / {injection['batch_p99_ms']:.0f} / "
        f"{injection['batch_max_ms']:.0f} ms",
        "",
        "",
    )
    table.add_row(
        "re-inject one batch (all UNCHANGED)", f"{figures['reinjection_batch_ms']:.0f} ms", "", ""
    )
    f_inj = figures["feedback_injection"]
    table.add_row(
        f"feedback: read the {f_inj['tickets']:,} injected",
        f"{f_inj['seconds']:.1f} s ({f_inj['tickets_per_second']:,.0f}/s)",
        "",
        "",
    )
    table.add_row("  wallet server CPU", f"{f_inj['server_cpu_seconds']:.1f} s", "", "")
    table.add_row(
        f"push controlled {feedback['changes']:,}",
        f"{figures['push_controlled_seconds']:.1f} s",
        "",
        "",
    )
    table.add_row(
        f"feedback over {feedback['changes']:,} changes",
        f"{feedback['seconds']:.2f} s ({feedback['changes_per_second']:,.0f}/s)",
        "<= 5 s",
        verdict(feedback["seconds"] <= 5),
    )
    table.add_row("  wallet server CPU", f"{feedback['server_cpu_seconds']:.2f} s", "", "")
    console.print(table)
    console.print(
        f"load average: {figures['load_start']:.2f} at start, {figures['load_end']:.2f} at end"
    )


if __name__ == "__main__":
    sys.exit(main())
