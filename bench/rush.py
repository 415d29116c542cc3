"""Benchmark of an on-sale rush: concurrent buyers against one 20,000-seat performance.

The server runs in its production form: ``billetterie serve --workers N`` (2 by default) on a fresh
PostgreSQL database (or SQLite with ``--database-url sqlite``), call limits off. The institution is
``bench/availability.py``'s stadium (20 blocks x 25 rows x 40 seats, three seat categories), with
the reseller's point of sale paying on its pending account (its credit limit set out of reach).

``--buyers`` concurrent buyers (200 by default), each on its own keep-alive connection, loop:
``createOrUpdateOrder`` for 1-4 seats best-available in a random category of the one
performance, then ``closeOrder`` paid on the pending account; a buyer whose request answers
``error.order.availability`` asks for fewer seats, then in another category, and stops when no
category has a single seat left. Every answer is counted by status code.

Figures: confirmed orders/s and tickets/s over the rush, p50/p99 of each call, errors by code;
then, from the database, the checks that matter: seats sold = capacity, no seat sold twice, one
ticket per sold seat, no barcode twice. In the same run, the machine's ceiling: single-row UPDATE
transactions/s on the same PostgreSQL (pgbench when installed, else an asyncpg loop), with as many
clients as the server has database connections. For scale: pretix 2026.8 on this machine confirms
about 16 orders/s (p99 3.7 s).

With ``--baseline SRC`` (the ``src`` folder of another checkout, a worktree of an earlier commit,
say), the same rush runs ``--rounds`` times on each code, interleaved (baseline, current, then
current, baseline, ...), each round on a fresh database; the server of the baseline's rounds
runs with ``PYTHONPATH=SRC`` on a database migrated by that code (its own schema), then set up
by the current code (the same rows for both). It prints
each round's figures and, per code, the median of the rounds and the current code's over the
baseline's. A machine whose speed drifts over minutes (CPU credits, neighbours) moves both
alike, which successive runs of one code and then the other cannot tell from a change.

It is a benchmark, not a test: it exits 0 when a target is missed, listing the misses, and 1 only
when the run itself fails.

    .venv/bin/python bench/rush.py [--buyers 200] [--workers 2] [--json figures.json]
    .venv/bin/python bench/rush.py --baseline ../base/src --rounds 3 --max-seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from availability import (
    INSTITUTION,
    RESELLER_OPERATOR,
    RESELLER_PARTNER,
    RESELLER_POS,
    Connection,
    Server,
    build_document,
    create_database,
    create_operator,
    http_request,
    server_env,
    spread_connections,
    start_server,
    token_of,
)
from billetterie.catalog import db as catalog_db
from billetterie.catalog.setupfile import parse_document
from billetterie.inventory import db as inventory_db
from billetterie.migrations import upgrade
from billetterie.sales import db as sales_db
from billetterie.setup import import_institution
from billetterie.shared.db import create_engine, read
from catalog import BenchError, drop_database, percentile

TARGET_ORDERS_PER_S = 400.0
TARGET_P99_MS = 250.0
WARM_UP_S = 5.0
REFERENCE = "pretix 2026.8 on this machine confirms about 16 orders/s (p99 3.7 s)"
FACADE = "/tnseb/backend-apis/externalOrderFacade/v1_33/createOrUpdateOrder"
CLOSE = "/tnseb/backend-apis/externalOrderService/v1_33/closeOrder"
SECRET = "rush-" + os.urandom(6).hex()


def rush_document(now: datetime) -> dict[str, Any]:
    data = build_document(1, now)
    reseller = data["salesChannels"][1]["pointsOfSale"][0]
    reseller["parameters"] = {"pendingAccountCreditLimit": "1000000000.00"}
    reseller["maxSeatsPerPerformance"] = 10
    return data


async def setup(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        now = datetime.now(UTC)
        result = await import_institution(
            engine, parse_document(rush_document(now)), now=now, actor="bench"
        )
        p, sc, a, pm = (
            catalog_db.performance.c,
            catalog_db.seat_category.c,
            catalog_db.audience_sub_category.c,
            catalog_db.payment_method.c,
        )
        ps = inventory_db.performance_seat.c
        async with read(engine) as conn:
            performance = (
                await conn.execute(sa.select(p.id).where(p.institution_id == result.institution_id))
            ).scalar_one()
            categories = {
                r.code: r.id
                for r in await conn.execute(
                    sa.select(sc.code, sc.id).where(sc.institution_id == result.institution_id)
                )
            }
            tariff = (
                await conn.execute(
                    sa.select(a.id).where(
                        a.institution_id == result.institution_id, a.code == "FULL"
                    )
                )
            ).scalar_one()
            method = (
                await conn.execute(
                    sa.select(pm.id).where(
                        pm.institution_id == result.institution_id, pm.code == "ACCOUNT"
                    )
                )
            ).scalar_one()
            capacity = (
                await conn.execute(
                    sa.select(sa.func.count()).where(ps.performance_id == performance)
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    return {
        "institution": result.institution_id,
        "performance": performance,
        "categories": categories,
        "tariff": tariff,
        "method": method,
        "capacity": capacity,
    }


class Stats:
    def __init__(self) -> None:
        # per call: (seconds into the rush the call started, latency)
        self.timed: dict[str, list[tuple[float, float]]] = {
            "createOrUpdateOrder": [],
            "closeOrder": [],
        }
        self.started = time.perf_counter()
        self.codes: Counter[str] = Counter()
        self.orders = 0
        self.tickets = 0


async def buyer(
    conn: Connection,
    port: int,
    headers: dict[str, str],
    ids: dict[str, Any],
    stats: Stats,
    sold_out: set[str],
    seed: int,
    deadline: float,
) -> None:
    rng = random.Random(seed)
    categories = list(ids["categories"])

    async def post(path: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        status, raw = await conn.call(http_request("POST", path, port, headers, orjson.dumps(body)))
        data = orjson.loads(raw) if raw else {}
        return str(data.get("statusCode", f"http.{status}")), data

    while len(sold_out) < len(categories) and time.perf_counter() < deadline:
        category = rng.choice([c for c in categories if c not in sold_out] or categories)
        quantity = rng.randint(1, 4)
        while quantity >= 1:
            body = {
                "singleEntryAttributionOperations": [
                    {
                        "operationAttributions": [
                            {
                                "performanceId": ids["performance"],
                                "seatCategoryId": ids["categories"][category],
                                "audienceSubCategoryId": ids["tariff"],
                                "quantity": quantity,
                            }
                        ]
                    }
                ]
            }
            started = time.perf_counter()
            try:
                code, data = await post(FACADE, body)
            except (OSError, asyncio.IncompleteReadError, orjson.JSONDecodeError) as exc:
                stats.codes[f"createOrUpdateOrder {type(exc).__name__}"] += 1
                await conn.close()
                await conn.open()
                break
            stats.timed["createOrUpdateOrder"].append(
                (started - stats.started, time.perf_counter() - started)
            )
            stats.codes[f"createOrUpdateOrder {code}"] += 1
            if code == "error.order.availability":
                quantity -= 1
                continue
            if code != "success":
                await asyncio.sleep(0.05)
                break
            order = data["orderUpdateData"]
            close = {
                "orderId": order["orderId"],
                "payments": [{"paymentMethodId": ids["method"], "amount": order["totalAmount"]}],
            }
            started = time.perf_counter()
            try:
                code, _ = await post(CLOSE, close)
            except (OSError, asyncio.IncompleteReadError, orjson.JSONDecodeError) as exc:
                code = type(exc).__name__
                await conn.close()
                await conn.open()
            stats.timed["closeOrder"].append(
                (started - stats.started, time.perf_counter() - started)
            )
            stats.codes[f"closeOrder {code}"] += 1
            if code == "success":
                stats.orders += 1
                stats.tickets += quantity
            break
        else:
            sold_out.add(category)


async def rush(
    server: Server, token: str, ids: dict[str, Any], buyers: int, workers: int, max_seconds: float
) -> tuple[Stats, float]:
    """The buyers, each on its own keep-alive connection (a lean HTTP/1.1 client: the
    benchmark's own CPU stays small), spread evenly over the server processes."""
    stats = Stats()
    sold_out: set[str] = set()
    connections = await spread_connections(server, buyers, workers)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        started = stats.started = time.perf_counter()
        deadline = started + max_seconds
        await asyncio.gather(
            *(
                buyer(conn, server.port, headers, ids, stats, sold_out, i, deadline)
                for i, conn in enumerate(connections)
            )
        )
        elapsed = time.perf_counter() - started
    finally:
        for conn in connections:
            await conn.close()
    return stats, elapsed


async def verify(url: str, ids: dict[str, Any]) -> dict[str, Any]:
    engine = create_engine(url)
    ps, m, t = inventory_db.performance_seat.c, sales_db.movement.c, sales_db.ticket.c
    try:
        async with read(engine) as conn:
            sold_seats = (
                await conn.execute(
                    sa.select(sa.func.count()).where(
                        ps.performance_id == ids["performance"], ps.state == "SOLD"
                    )
                )
            ).scalar_one()
            sold_movements = (
                await conn.execute(sa.select(sa.func.count()).where(m.state == "SOLD"))
            ).scalar_one()
            distinct_seats = (
                await conn.execute(
                    sa.select(sa.func.count(sa.distinct(m.performance_seat_id))).where(
                        m.state == "SOLD"
                    )
                )
            ).scalar_one()
            tickets = (
                await conn.execute(sa.select(sa.func.count()).select_from(sales_db.ticket))
            ).scalar_one()
            barcodes = (
                await conn.execute(sa.select(sa.func.count(sa.distinct(t.barcode))))
            ).scalar_one()
    finally:
        await engine.dispose()
    return {
        "capacity": ids["capacity"],
        "seats_sold": sold_seats,
        "movements_sold": sold_movements,
        "distinct_seats_sold": distinct_seats,
        "tickets": tickets,
        "distinct_barcodes": barcodes,
    }


def _summary(values: list[float]) -> dict[str, Any]:
    """Calls, p50 and p99 in milliseconds."""
    return {
        "calls": len(values),
        "p50": round(percentile(values, 50) * 1000, 1) if values else None,
        "p99": round(percentile(values, 99) * 1000, 1) if values else None,
    }


async def commits(url: str) -> int | None:
    """Transactions committed in the database so far (PostgreSQL's statistics), or None."""
    engine = create_engine(url)
    try:
        if engine.dialect.name != "postgresql":
            return None
        async with read(engine) as conn:
            value = (
                await conn.execute(
                    sa.text(
                        "SELECT xact_commit FROM pg_stat_database"
                        " WHERE datname = current_database()"
                    )
                )
            ).scalar_one()
        return int(value)
    finally:
        await engine.dispose()


def postgres_cpu_seconds() -> dict[int, float]:
    """CPU time of each PostgreSQL server process on this machine, by pid; the postmaster's
    entry adds that of its children that ended (a backend of a connection that was closed)."""
    seen: dict[int, float] = {}
    for p in psutil.process_iter(["name", "cpu_times", "ppid"]):
        times = p.info.get("cpu_times")
        if p.info.get("name") not in ("postgres", "postmaster") or times is None:
            continue
        seen[p.pid] = times.user + times.system
        if p.info.get("ppid") == 1 or _name_of(p.info.get("ppid")) not in (
            "postgres",
            "postmaster",
        ):
            seen[p.pid] += times.children_user + times.children_system
    return seen


def _name_of(pid: int | None) -> str | None:
    try:
        return psutil.Process(pid).name() if pid else None
    except psutil.Error:
        return None


def postgres_cpu_since(before: dict[int, float]) -> float:
    """CPU time PostgreSQL's processes used since ``before``, per process: a backend that
    ended in between counts through the postmaster's ended children, and takes nothing away
    from the ones that ran the rush."""
    return sum(used - before.get(pid, 0.0) for pid, used in postgres_cpu_seconds().items())


def pgbench_ceiling(
    admin_url: str, database: str, clients: int, seconds: int, *, hot: bool = False
) -> float | None:
    """Single-row UPDATE transactions/s on the same server, from pgbench: each on a random
    row of 20,000, or (``hot``) all on the same row, as every sale of one reseller's pending
    account or one seat category's counters."""
    if shutil.which("pgbench") is None:
        return None
    url = (
        sa.engine.make_url(admin_url)
        .set(drivername="postgresql", database=database)
        .render_as_string(hide_password=False)
    )
    subprocess.run(
        [
            "psql",
            url,
            "-q",
            "-c",
            "CREATE TABLE IF NOT EXISTS rush_ceiling (id int PRIMARY KEY, v int NOT NULL);"
            "INSERT INTO rush_ceiling SELECT g, 0 FROM generate_series(1, 20000) g "
            "ON CONFLICT DO NOTHING;",
        ],
        check=True,
        capture_output=True,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(
            ("\\set id 1\n" if hot else "\\set id random(1, 20000)\n")
            + "UPDATE rush_ceiling SET v = v + 1 WHERE id = :id;\n"
        )
    done = subprocess.run(
        [
            "pgbench",
            "-n",
            "-f",
            script.name,
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    os.unlink(script.name)
    for line in done.stdout.splitlines():
        if line.startswith("tps"):
            return float(line.split("=")[1].split()[0])
    return None


def run_once(args: argparse.Namespace, source: Path | None) -> dict[str, Any]:
    """One rush on a fresh database, then the machine's ceiling measured on it: the figures.
    ``source``: the ``src`` folder the server runs from (None: this checkout's)."""
    tmp = Path(tempfile.mkdtemp(prefix="billetterie-rush-"))
    database = create_database(args.database_url, tmp)
    try:
        figures = _rush_on(args, database, tmp, source)
        figures |= ceilings(database, args.ceiling_seconds)
    finally:
        drop_database(database)
    return figures


def _rush_on(
    args: argparse.Namespace, database: Any, tmp: Path, source: Path | None
) -> dict[str, Any]:
    server = None
    try:
        env = server_env(database.url, tmp / "var")
        if source is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(source), *filter(None, [env.get("PYTHONPATH")])]
            )
            migrate_with(env, database.url)
        else:
            upgrade(database.url)
        ids = asyncio.run(setup(database.url))
        create_operator(env, RESELLER_OPERATOR, RESELLER_POS, RESELLER_PARTNER, SECRET)
        server = start_server(env, tmp / "server.log", args.workers)
        token = token_of(server, RESELLER_OPERATOR, RESELLER_PARTNER, SECRET)
        commits_before = asyncio.run(commits(database.url))
        load_before = os.getloadavg()
        steal_before = steal_seconds()
        server_cpu, postgres_before = server.cpu_seconds(), postgres_cpu_seconds()
        stats, elapsed = asyncio.run(
            rush(server, token, ids, args.buyers, args.workers, args.max_seconds)
        )
        server_cpu = server.cpu_seconds() - server_cpu
        postgres_cpu = postgres_cpu_since(postgres_before)
        steal = steal_seconds() - steal_before
        checks = asyncio.run(verify(database.url, ids))
    finally:
        if server is not None:
            server.stop()
    # the server's backends have ended: their statistics are in
    commits_after = asyncio.run(commits(database.url))
    committed = (
        None if commits_before is None or commits_after is None else commits_after - commits_before
    )
    return rush_figures(args, database.backend, stats, elapsed, checks) | {
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        # CPU per confirmed order (a cart and its close), whatever else the machine runs
        "server_cpu_ms_per_order": round(server_cpu * 1000 / max(stats.orders, 1), 2),
        "postgres_cpu_ms_per_order": round(postgres_cpu * 1000 / max(stats.orders, 1), 2)
        if postgres_cpu
        else None,
        # transactions committed in the bench database per confirmed order (sales, their
        # reads, the boards' catch-ups), since the server started
        "commits_per_order": round(committed / max(stats.orders, 1), 2)
        if committed is not None
        else None,
        # the share of the machine's CPU time the hypervisor gave elsewhere during the rush
        "steal_percent": round(100 * steal / (elapsed * (os.cpu_count() or 1)), 1),
    }


def migrate_with(env: dict[str, str], url: str) -> None:
    """The database migrated by the code ``env`` runs (the baseline's own schema: its indexes,
    its commit-time function), in a process of its own."""
    command = [
        sys.executable,
        "-c",
        "import sys; from billetterie.migrations import upgrade; upgrade(sys.argv[1])",
        url,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise BenchError(f"the baseline's migrations failed:\n{done.stdout}{done.stderr}")


def steal_seconds() -> float:
    """CPU time stolen from this machine's CPUs by the hypervisor so far (Linux; 0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def rush_figures(
    args: argparse.Namespace, backend: str, stats: Stats, elapsed: float, checks: dict[str, Any]
) -> dict[str, Any]:
    return {
        "institution": INSTITUTION,
        "backend": backend,
        "workers": args.workers,
        "buyers": args.buyers,
        "rush_seconds": round(elapsed, 2),
        "confirmed_orders": stats.orders,
        "confirmed_orders_per_s": round(stats.orders / elapsed, 1),
        "tickets_per_s": round(stats.tickets / elapsed, 1),
        "codes": dict(stats.codes.most_common()),
        "latency_ms": {
            name: _summary([latency for _, latency in timed]) for name, timed in stats.timed.items()
        },
        # the same after the first WARM_UP_S seconds (index built, statements prepared)
        "latency_after_warm_up_ms": {
            name: _summary([latency for at, latency in timed if at >= WARM_UP_S])
            for name, timed in stats.timed.items()
        },
        # p99 of each 10-second window of the rush (both calls): a tail spread evenly is
        # queueing, one concentrated in some windows is a stall
        "p99_ms_by_10_s": [
            round(percentile(window, 99) * 1000)
            for start in range(0, int(elapsed) + 1, 10)
            for window in [
                [
                    latency
                    for values in stats.timed.values()
                    for at, latency in values
                    if start <= at < start + 10
                ]
            ]
            if window
        ],
        "checks": checks,
    }


def ceilings(database: Any, seconds: int) -> dict[str, float | None]:
    """Single-row UPDATE transactions/s with pgbench on ``database`` (PostgreSQL): on random
    rows, and all on one row."""
    ceiling = hot_ceiling = None
    if database.backend == "postgresql" and database.admin_url:
        name = sa.engine.make_url(database.url).database or ""
        ceiling = pgbench_ceiling(database.admin_url, name, 30, seconds)
        hot_ceiling = pgbench_ceiling(database.admin_url, name, 30, seconds, hot=True)
    return {"ceiling_update_tps": ceiling, "ceiling_same_row_update_tps": hot_ceiling}


MEDIANS = (
    "confirmed_orders_per_s",
    "tickets_per_s",
    "server_cpu_ms_per_order",
    "postgres_cpu_ms_per_order",
    "commits_per_order",
    "steal_percent",
)


def compare(rounds: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per code, the median of its rounds' figures; and the current code's over the
    baseline's."""
    medians: dict[str, dict[str, float | None]] = {}
    for code in ("baseline", "current"):
        mine = [figures for name, figures in rounds if name == code]
        medians[code] = {}
        for key in (*MEDIANS, "create_p99_ms", "close_p99_ms"):
            values = [value for figures in mine if (value := _figure(figures, key)) is not None]
            medians[code][key] = round(statistics.median(values), 2) if values else None
    ratio = {
        key: round(current / base, 3)
        for key in medians["current"]
        if (current := medians["current"][key]) is not None and (base := medians["baseline"][key])
    }
    return {"median": medians, "current_over_baseline": ratio}


def _figure(figures: dict[str, Any], key: str) -> float | None:
    if key == "create_p99_ms":
        return figures["latency_ms"]["createOrUpdateOrder"]["p99"]  # type: ignore[no-any-return]
    if key == "close_p99_ms":
        return figures["latency_ms"]["closeOrder"]["p99"]  # type: ignore[no-any-return]
    return figures.get(key)


def misses_of(figures: dict[str, Any]) -> list[str]:
    checks = figures["checks"]
    misses = []
    if figures["confirmed_orders_per_s"] < TARGET_ORDERS_PER_S:
        misses.append(
            f"confirmed orders/s {figures['confirmed_orders_per_s']} < {TARGET_ORDERS_PER_S}"
        )
    for name, values in figures["latency_ms"].items():
        if values["p99"] is not None and values["p99"] > TARGET_P99_MS:
            misses.append(f"{name} p99 {values['p99']} ms > {TARGET_P99_MS} ms")
    oversold = checks["seats_sold"] > checks["capacity"] or (
        checks["distinct_seats_sold"] != checks["movements_sold"]
    )
    if oversold:
        misses.append("OVERSOLD: a seat was sold twice or past capacity")
    if checks["seats_sold"] != checks["capacity"]:
        misses.append(f"sold {checks['seats_sold']} of {checks['capacity']} seats")
    if (
        checks["tickets"] != checks["movements_sold"]
        or checks["distinct_barcodes"] != checks["tickets"]
    ):
        misses.append("tickets and sold seats differ, or a barcode repeats")
    return misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server to create the bench database on, or 'sqlite'",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--buyers", type=int, default=200)
    parser.add_argument("--ceiling-seconds", type=int, default=10)
    parser.add_argument(
        "--max-seconds", type=float, default=900, help="stop the rush after this long"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="the src folder of the code to compare with, run in rounds interleaved with this one",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per code with --baseline")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.baseline is not None and not (args.baseline / "billetterie").is_dir():
        parser.error(f"--baseline {args.baseline}: no billetterie package in it")

    if args.baseline is None:
        figures = run_once(args, None) | {"reference": REFERENCE}
        print(json.dumps(figures, indent=2))
        misses = misses_of(figures)
    else:
        rounds: list[tuple[str, dict[str, Any]]] = []
        for index in range(args.rounds):
            order = ("baseline", "current") if index % 2 == 0 else ("current", "baseline")
            for code in order:
                figures = run_once(args, args.baseline if code == "baseline" else None)
                rounds.append((code, figures))
                print(
                    f"round {index + 1} {code}: {figures['confirmed_orders_per_s']} orders/s, "
                    f"{figures['server_cpu_ms_per_order']} + {figures['postgres_cpu_ms_per_order']}"
                    f" ms CPU and {figures['commits_per_order']} commits per order,"
                    f" steal {figures['steal_percent']}%, "
                    f"pgbench {figures['ceiling_update_tps']} tx/s",
                    file=sys.stderr,
                )
        figures = {
            "baseline": str(args.baseline),
            "rounds": [{"code": code} | figures for code, figures in rounds],
            **compare(rounds),
            "reference": REFERENCE,
        }
        print(json.dumps(figures, indent=2))
        current = [found for code, found in rounds if code == "current"]
        misses = [
            f"round {index} of the current code: {miss}"
            for index, found in enumerate(current, 1)
            for miss in misses_of(found)
        ]
    for miss in misses:
        print("MISSED:", miss)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
