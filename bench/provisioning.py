"""Benchmark of provisioning performance seats at import: ``COPY`` against ``executemany``.

A setup import provisions every seat of every performance (``inventory.provision``). This
script imports the stadium of ``bench/availability.py`` (20,000 seats per performance,
``--performances`` of them) into two fresh PostgreSQL databases, and times the whole
``import_institution`` and, inside it, the bulk insert of the performance seats:

* ``COPY`` (asyncpg's ``copy_records_to_table``), what an import on PostgreSQL does;
* batched ``executemany`` of 5,000 rows (SQLAlchemy's insertmanyvalues), what it did before and
  what SQLite still does (``provision.COPY_SEATS = False``).

A benchmark, not a test: it prints the figures and exits 0.

    .venv/bin/python bench/provisioning.py [--performances 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from availability import build_document
from billetterie.catalog.setupfile import parse_document
from billetterie.inventory import provision
from billetterie.migrations import upgrade
from billetterie.setup import import_institution
from billetterie.shared.db import create_engine
from catalog import create_database, drop_database


async def import_once(url: str, performances: int) -> tuple[float, float, int]:
    """(import s, seat insert s, seats inserted)."""
    now = datetime.now(UTC)
    document = parse_document(build_document(performances, now))
    inserted: list[tuple[float, int]] = []
    insert = provision._insert_seats

    async def timed(conn: Any, rows: list[dict[str, Any]], **options: Any) -> None:
        started = time.perf_counter()
        await insert(conn, rows, **options)
        inserted.append((time.perf_counter() - started, len(rows)))

    provision._insert_seats = timed  # type: ignore[assignment]
    engine = create_engine(url)
    try:
        started = time.perf_counter()
        await import_institution(engine, document, now=now, actor="bench")
        return (
            time.perf_counter() - started,
            sum(t for t, _ in inserted),
            sum(n for _, n in inserted),
        )
    finally:
        provision._insert_seats = insert  # type: ignore[assignment]
        await engine.dispose()


def run(database_url: str, performances: int, copy: bool) -> tuple[float, float, int]:
    tmp = Path(tempfile.mkdtemp(prefix="billetterie-provisioning-"))
    database = create_database(database_url, tmp)
    provision.COPY_SEATS = copy
    try:
        upgrade(database.url)
        return asyncio.run(import_once(database.url, performances))
    finally:
        provision.COPY_SEATS = True
        drop_database(database)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--performances", type=int, default=8)
    args = parser.parse_args(argv)
    start_load = os.getloadavg()[0]
    figures = {copy: run(args.database_url, args.performances, copy) for copy in (True, False)}
    seats = figures[True][2]
    print(
        f"{seats:,} performance seats ({args.performances} performances x 20,000 seats) on "
        f"PostgreSQL; load average {start_load:.1f} -> {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs"
    )
    for copy, label in ((True, "COPY"), (False, "executemany")):
        total, insert, count = figures[copy]
        print(
            f"  {label:12} import_institution {total:6.2f} s, of which the seat insert "
            f"{insert:6.2f} s ({count / insert:,.0f} seats/s)"
        )
    print(f"  the seat insert with COPY is {figures[False][1] / figures[True][1]:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
