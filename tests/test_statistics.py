"""The planner statistics round (``shared.statistics``): a table is analyzed when it has about
doubled since its last analysis, so that plans made while it was small are made again."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie import background
from billetterie.shared.periodic import registered_periodics
from billetterie.shared.statistics import MIN_CHANGES, analyze_grown_tables

PROBE = "statistics_probe"
# autovacuum would analyze it too, at its own moment: left to the round alone
CREATE_PROBE = f"CREATE TABLE {PROBE} (n integer NOT NULL) WITH (autovacuum_enabled = false)"


async def _insert(engine: AsyncEngine, count: int) -> None:
    """``count`` rows, the session's statistics sent before the next round reads them."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(f"INSERT INTO {PROBE} (n) SELECT generate_series(1, :count)"),
            {"count": count},
        )
        await conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))


async def _reltuples(engine: AsyncEngine) -> float:
    async with engine.connect() as conn:
        found = await conn.execute(
            sa.text("SELECT reltuples FROM pg_class WHERE relname = :name"), {"name": PROBE}
        )
        return float(found.scalar_one())


async def test_a_table_is_analyzed_once_it_about_doubled(scratch_engine: AsyncEngine) -> None:
    if scratch_engine.dialect.name != "postgresql":
        assert await analyze_grown_tables(scratch_engine) == []
        return
    async with scratch_engine.begin() as conn:
        await conn.execute(sa.text(CREATE_PROBE))
        await conn.execute(sa.text(f"ANALYZE {PROBE}"))  # analyzed empty
    try:
        await _insert(scratch_engine, MIN_CHANGES - 1)
        assert PROBE not in await analyze_grown_tables(scratch_engine)  # under the floor
        await _insert(scratch_engine, 1)
        assert PROBE in await analyze_grown_tables(scratch_engine)
        assert await _reltuples(scratch_engine) == MIN_CHANGES
        assert PROBE not in await analyze_grown_tables(scratch_engine)  # nothing changed since
        await _insert(scratch_engine, MIN_CHANGES - 1)  # not yet doubled
        assert PROBE not in await analyze_grown_tables(scratch_engine)
        await _insert(scratch_engine, 1)
        assert PROBE in await analyze_grown_tables(scratch_engine)
        assert await _reltuples(scratch_engine) == 2 * MIN_CHANGES
    finally:
        async with scratch_engine.begin() as conn:
            await conn.execute(sa.text(f"DROP TABLE {PROBE}"))


async def test_one_round_at_a_time_across_processes(scratch_engine: AsyncEngine) -> None:
    if scratch_engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's")
    from billetterie.shared.statistics import ADVISORY_LOCK

    async with scratch_engine.begin() as conn:
        await conn.execute(sa.text(CREATE_PROBE))
    try:
        await _insert(scratch_engine, MIN_CHANGES)
        async with scratch_engine.connect() as holder, holder.begin():
            await holder.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK}
            )
            assert await analyze_grown_tables(scratch_engine) == []  # another round runs
        assert PROBE in await analyze_grown_tables(scratch_engine)
    finally:
        async with scratch_engine.begin() as conn:
            await conn.execute(sa.text(f"DROP TABLE {PROBE}"))


def test_the_round_is_a_periodic_task_of_the_background_loops() -> None:
    background.register_defaults()
    assert ("database.statistics", 2.0) in {
        (p.name, p.every_seconds) for p in registered_periodics()
    }
