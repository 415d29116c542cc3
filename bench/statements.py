"""Benchmark of hot statements (``shared.statements``): the sale path's statements run by the
driver against the same statements run through SQLAlchemy, in the same run.

On a fresh PostgreSQL database (created on ``--database-url`` and dropped at the end), inside
one transaction: the sale path's own statements, each ``--calls`` times through
``AsyncConnection.execute`` (the baseline) and then through the driver (a transaction opened as
the inventory transactions open it). Figures: the process's user and system CPU per statement
each way, the ratio of user CPU (the system CPU is the socket calls a round trip makes either way,
and varies from run to run with how often the process sleeps), and the wall time. The
statements: the setup-version check (one-row SELECT by primary key), the order's total (an
UPDATE ... RETURNING every column), a hold's lines (a SELECT with a list parameter), and a
cart's movements (a 4-row INSERT ... RETURNING through ``BulkInsert``).

Target: the driver at most half the baseline's user CPU per statement, for each of them. It is a
benchmark, not a test: it exits 0 when a target is missed, listing the misses, and 1 only when
the run itself fails.

    .venv/bin/python bench/statements.py [--calls 2000] [--json figures.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from billetterie.catalog import db as catalog_db
from billetterie.inventory import services as inventory_services
from billetterie.migrations import upgrade
from billetterie.sales import carts
from billetterie.shared import statements
from billetterie.shared.db import create_engine, transaction
from catalog import BenchError, create_database, drop_database

TARGET_RATIO = 0.5


async def _fixture(conn: Any, now: datetime) -> dict[str, Any]:
    """An institution and an order; foreign keys not checked (the rows are never committed)."""
    await conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
    institution = (
        await conn.execute(
            sa.insert(catalog_db.institution)
            .values(code="HOT", name={"en": "Hot"}, currency="EUR")
            .returning(catalog_db.institution.c.id)
        )
    ).scalar_one()
    order = await carts._NEW_ORDER.one(
        conn,
        institution_id=institution,
        point_of_sale_id=1,
        sales_channel_id=1,
        secret_id="bench",
        operator="bench",
        order_type="SALE",
        state="RUNNING",
        currency="EUR",
        total=0,
        paid=0,
        language="en",
        contact_number=None,
        external_reference=None,
        purchaser=None,
        expires_at=now,
        created_at=now,
        updated_at=now,
    )
    return {"institution": institution, "order": order.id}


def _movements(ids: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """A cart's 4 movements, every column a cart writes given."""
    given = {name: 1 for name in carts._NEW_MOVEMENTS.columns if name.endswith("_id")}
    return [
        given
        | {
            "institution_id": ids["institution"],
            "order_id": ids["order"],
            "amount": 4500,
            "vat_rate": 0,
            "state": "RESERVED",
            "labels": {"row": "A", "number": str(n), "block": {"en": "North"}},
            "created_at": now,
        }
        for n in range(4)
    ]


async def measure(url: str, calls: int) -> dict[str, Any]:
    engine = create_engine(url)
    now = datetime.now(UTC)
    figures: dict[str, Any] = {}
    try:
        async with transaction(engine) as conn:
            ids = await _fixture(conn, now)
            moves = _movements(ids, now)
            cases: dict[str, Callable[[Any], Awaitable[Any]]] = {
                "setup version (SELECT by key)": lambda c: carts._SETUP_VERSION.scalar(
                    c, institution_id=ids["institution"]
                ),
                "order total (UPDATE ... RETURNING *)": lambda c: carts._ORDER_TOTAL.one(
                    c, order_id=ids["order"], total=4500, updated_at=now
                ),
                "hold lines (SELECT, list parameter)": lambda c: (
                    inventory_services._HOLD_LINES.rows(c, hold_ids=[1, 2, 3])
                ),
                "4 movements (INSERT ... RETURNING *)": lambda c: carts._NEW_MOVEMENTS.rows(
                    c, moves
                ),
            }
            if conn.dialect.name != "postgresql":
                raise BenchError("hot statements run on the driver only on PostgreSQL")
            for name, case in cases.items():
                row: dict[str, float] = {}
                for way in ("sqlalchemy", "driver"):
                    opened = statements.on_driver(conn) if way == "driver" else nullcontext()
                    async with opened:
                        for _ in range(50):  # warm: compiled, prepared
                            await case(conn)
                        before, wall = os.times(), time.perf_counter()
                        for _ in range(calls):
                            await case(conn)
                        after, wall = os.times(), time.perf_counter() - wall
                    user = after.user - before.user
                    system = after.system - before.system
                    row[f"{way}_user_us"] = round(user / calls * 1e6, 1)
                    row[f"{way}_system_us"] = round(system / calls * 1e6, 1)
                    row[f"{way}_wall_us"] = round(wall / calls * 1e6, 1)
                row["ratio"] = round(row["driver_user_us"] / row["sqlalchemy_user_us"], 3)
                figures[name] = row
            raise _RollBack
    except _RollBack:
        pass
    finally:
        await engine.dispose()
    return figures


class _RollBack(Exception):
    """Leave the bench rows out of the database."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="billetterie-statements-"))
    try:
        database = create_database(args.database_url, tmp)
    except Exception as exc:  # no server: nothing to measure
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    try:
        upgrade(database.url)
        figures = asyncio.run(measure(database.url, args.calls))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        drop_database(database)
    print("user CPU per statement (system CPU: the socket calls, the same on both ways)")
    print(f"{'statement':40} {'SQLAlchemy':>18} {'driver':>18} {'ratio':>7}")
    for name, row in figures.items():
        print(
            f"{name:40} {row['sqlalchemy_user_us']:>7.1f} us ({row['sqlalchemy_system_us']:>5.1f})"
            f" {row['driver_user_us']:>7.1f} us ({row['driver_system_us']:>5.1f})"
            f" {row['ratio']:>7.3f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    misses = [name for name, row in figures.items() if row["ratio"] > TARGET_RATIO]
    for name in misses:
        print(f"MISSED: {name}: the driver's user CPU is over {TARGET_RATIO:.0%} of the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
