"""Benchmark of the shop's seat map on the demo's 20,000-seat stadium (20 blocks x 25 rows x 40
seats): the block overview and one block's seats, against the former path in the same run.

The script imports the demo institution (``src/billetterie/demo/demo.yaml``) into a fresh
database (SQLite in a temporary directory, or a new PostgreSQL database with ``--database-url``,
dropped at the end), holds ``--held`` seats in carts spread over the stadium so the map has
every state, and serves the app in process (httpx over ASGI, the clock fixed on a day the match
is on sale). It times, ``--rounds`` times each, p50 and p95:

* **former path** - what the performance page did before: every seat of the performance read
  (``seat_map``) and the blocks counted in Python;
* **queries** - the overview's aggregate (``block_overview``) and one block's seats
  (``seat_map(block_ids=...)``);
* **pages** - ``GET /shop/WEBSHOP/performances/<id>`` (the overview), the block fragment the
  page's script fetches and the page with ``?block=``, each cold (the process's seat-map cache
  emptied before every request) and warm (served from the cache while nothing changed).

Targets (ratios, so that they hold on a loaded machine): the cold overview page, end to end, at
least 5 times faster than the former path's database read and count alone; every warm page at
least 10 times faster. It exits 0 when a target is missed (listing it) and 1 only when the run
itself fails. The machine's load average is printed with the figures.

    .venv/bin/python bench/seatmap.py [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
        [--rounds 30] [--held 2000] [--json figures.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from billetterie.app import build_app
from billetterie.catalog.services import institution_id_by_code
from billetterie.config import Settings
from billetterie.inventory import db as inventory_db
from billetterie.inventory.queries import block_overview, seat_map
from billetterie.inventory.services import PlaceRequest, hold_places
from billetterie.migrations import upgrade
from billetterie.setup import import_institution
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import create_engine, read
from billetterie.shop import seatmap
from catalog import BenchError, create_database, drop_database, percentile

DEMO = Path(__file__).parents[1] / "src" / "billetterie" / "demo" / "demo.yaml"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # the demo's match is on sale then
SHOP = "/shop/WEBSHOP"


def former_blocks(seats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The former page's overview: each block's extent and free seats counted in Python."""
    found: dict[int, dict[str, Any]] = {}
    for s in seats:
        b = found.setdefault(
            s["blockId"],
            {"id": s["blockId"], "x0": s["x"], "y0": s["y"], "x1": s["x"], "y1": s["y"], "free": 0},
        )
        b["x0"], b["x1"] = min(b["x0"], s["x"]), max(b["x1"], s["x"])
        b["y0"], b["y1"] = min(b["y0"], s["y"]), max(b["y1"], s["y"])
        b["free"] += s["state"] == "FREE"
    return sorted(found.values(), key=lambda b: (b["y0"], b["x0"]))


async def prepare(url: str, held: int) -> tuple[int, int, list[int]]:
    """Import the demo, hold ``held`` seats; the institution, the stadium's performance and its
    block ids."""
    engine = create_engine(url)
    try:
        from billetterie.catalog.setupfile import parse_document

        document = parse_document(yaml.safe_load(DEMO.read_text(encoding="utf-8")))
        await import_institution(engine, document, now=NOW, actor="bench")
        ps, st = inventory_db.performance_seat.c, inventory_db.stock.c
        async with read(engine) as conn:
            institution = await institution_id_by_code(conn, "DEMO")
            performance, _ = (
                await conn.execute(
                    sa.select(ps.performance_id, sa.func.count())
                    .group_by(ps.performance_id)
                    .order_by(sa.func.count().desc())
                    .limit(1)
                )
            ).one()
            categories = [
                r[0]
                for r in await conn.execute(
                    sa.select(st.seat_category_id)
                    .where(st.performance_id == performance, st.contingent_id.is_(None))
                    .distinct()
                    .order_by(st.seat_category_id)
                )
            ]
            blocks = sorted(
                {
                    r[0]
                    for r in await conn.execute(
                        sa.select(ps.block_id).where(ps.performance_id == performance).distinct()
                    )
                }
            )
            channel = (
                await conn.execute(sa.text("SELECT id FROM sales_channel WHERE code = 'WEB'"))
            ).scalar_one()
        # carts of 4 best-available seats, spread over the categories, expiring in an hour
        left, cart = held, 0
        while left > 0:
            await hold_places(
                engine,
                institution_id=institution,
                sales_channel_id=channel,
                contingent_ids=[],
                cart=f"bench-{cart}",
                requests=[
                    PlaceRequest(
                        min(4, left),
                        performance_id=performance,
                        seat_category_id=categories[cart % len(categories)],
                    )
                ],
                expires_at=NOW + timedelta(hours=1),
                now=NOW,
                actor="bench",
            )
            left -= 4
            cart += 1
        return institution, int(performance), blocks
    finally:
        await engine.dispose()


async def timed(rounds: int, call: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    await call()  # the first call pays imports and connections
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95)}


async def measure(url: str, tmp: Path, rounds: int, held: int) -> dict[str, Any]:
    institution, performance, blocks = await prepare(url, held)
    block = blocks[len(blocks) // 2]
    figures: dict[str, Any] = {"performance": performance, "blocks": len(blocks)}
    engine = create_engine(url)
    try:

        async def former() -> None:
            async with read(engine) as conn:
                seats = await seat_map(
                    conn,
                    institution_id=institution,
                    performance_id=performance,
                    contingents=set(),
                    now=NOW,
                )
            former_blocks(seats)
            figures["seats"] = len(seats)

        async def overview_query() -> None:
            async with read(engine) as conn:
                await block_overview(
                    conn,
                    institution_id=institution,
                    performance_id=performance,
                    contingents=set(),
                    now=NOW,
                )

        async def block_query() -> None:
            async with read(engine) as conn:
                await seat_map(
                    conn,
                    institution_id=institution,
                    performance_id=performance,
                    contingents=set(),
                    block_ids=[block],
                    now=NOW,
                )

        figures["former_path"] = await timed(rounds, former)
        figures["overview_query"] = await timed(rounds, overview_query)
        figures["block_query"] = await timed(rounds, block_query)
    finally:
        await engine.dispose()

    settings = Settings(
        var_dir=tmp,
        database_url=url,
        jwt_secret="bench-jwt-key-" + "x" * 32,
        rate_limits=False,
        background_tasks=False,
        shop_point_of_sale="WEBSHOP",
    )
    app = build_app(settings, clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            cache = seatmap.cache_of(app.state.runtime.caches)
            paths = {
                "overview_page": f"{SHOP}/performances/{performance}",
                "block_fragment": f"{SHOP}/performances/{performance}/blocks/{block}",
                "block_page": f"{SHOP}/performances/{performance}?block={block}",
            }
            for name, path in paths.items():
                answer = await client.get(path)
                if answer.status_code != 200:
                    raise BenchError(f"{path} answered {answer.status_code}: {answer.text[:300]}")
                drawn = len(re.findall(r'class="seat"', answer.text))
                figures[f"{name}_seats_drawn"] = drawn

                async def cold(path: str = path) -> None:
                    cache.clear()
                    (await client.get(path)).raise_for_status()

                async def warm(path: str = path) -> None:
                    (await client.get(path)).raise_for_status()

                figures[f"{name}_cold"] = await timed(rounds, cold)
                figures[f"{name}_warm"] = await timed(rounds, warm)
    return figures


def report(figures: dict[str, Any], load: tuple[str, str]) -> list[str]:
    former = figures["former_path"]["p50_ms"]
    rows = [
        ("former path: every seat read, blocks counted in Python", "former_path"),
        ("overview: one aggregate query", "overview_query"),
        ("one block's seats: query", "block_query"),
        ("overview page, cold cache", "overview_page_cold"),
        ("overview page, warm", "overview_page_warm"),
        ("block fragment, cold cache", "block_fragment_cold"),
        ("block fragment, warm", "block_fragment_warm"),
        ("page with ?block=, cold cache", "block_page_cold"),
        ("page with ?block=, warm", "block_page_warm"),
    ]
    print(
        f"stadium performance {figures['performance']}: {figures['seats']} seats in "
        f"{figures['blocks']} blocks; seats drawn: overview "
        f"{figures['overview_page_seats_drawn']}, block {figures['block_fragment_seats_drawn']}"
    )
    print(f"{'what':58} {'p50 ms':>9} {'p95 ms':>9} {'former/p50':>11}")
    for label, key in rows:
        f = figures[key]
        print(f"{label:58} {f['p50_ms']:9.2f} {f['p95_ms']:9.2f} {former / f['p50_ms']:10.1f}x")
    print(f"load average at start {load[0]}, at end {load[1]}")
    misses = []
    if figures["overview_page_cold"]["p50_ms"] > former / 5:
        misses.append("cold overview page p50 > former path / 5")
    for key in ("overview_page_warm", "block_fragment_warm", "block_page_warm"):
        if figures[key]["p50_ms"] > former / 10:
            misses.append(f"{key} p50 > former path / 10")
    return misses


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a PostgreSQL server (default: SQLite)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--held", type=int, default=2000, help="seats held before timing")
    parser.add_argument("--json", type=Path, help="write the figures there")
    args = parser.parse_args(argv)
    start_load = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-seatmap-") as name:
        tmp = Path(name)
        try:
            database = create_database(args.database_url, tmp)
        except BenchError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        try:
            upgrade(database.url)
            figures = asyncio.run(measure(database.url, tmp, args.rounds, args.held))
        except BenchError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        finally:
            drop_database(database)
    figures["backend"] = database.backend
    misses = report(figures, (start_load, load_average()))
    figures["load"] = {"start": start_load, "end": load_average()}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    for miss in misses:
        print(f"MISSED: {miss}")
    if not misses:
        print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
