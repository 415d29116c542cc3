"""Planner statistics of young tables, kept up while they grow (PostgreSQL).

The sale's statements run on prepared statements with generic plans (``plan_cache_mode =
force_generic_plan``, see :mod:`billetterie.inventory.services`): each pooled connection plans a
statement once and keeps the plan until the statistics of a table it reads change. A plan made
while a table is still empty or small - the first sales of a fresh installation, the first
minute of an on-sale - can be the wrong one for the same table a minute later: a sequential
scan of ``movement`` for an order's movements, or the order rows found through the index on
``institution_id`` instead of their primary key. Nothing re-plans them until an ``ANALYZE``,
and autovacuum, which would run it, wakes once a minute; under a rush, every close of that
minute pays a scan that grows with the table.

One round (:func:`analyze_grown_tables`, a periodic task of the background loops) analyzes
the tables of the current schema that changed, since their last analysis, by at least as many
rows as they then held (and by at least ``MIN_CHANGES``): a table is analyzed when it has about
doubled, so a handful of times while it is young and then rarely, leaving the rest to autovacuum.
``ANALYZE`` invalidates every connection's plans of that table, in every process, so the next
execution plans with its current size. Two processes running the round at once do it once (a
transaction-level advisory lock); only the tables the database user may analyze (its own, or
its roles') are looked at, the others being left to autovacuum. SQLite has no such plans: the
round does nothing there.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.shared.db import transaction

MIN_CHANGES = 500
ADVISORY_LOCK = 0x62696C6C_73746174  # "billstat": one round at a time across processes

_GROWN = sa.text(
    """
    SELECT s.relname
    FROM pg_stat_user_tables AS s
    JOIN pg_class AS c ON c.oid = s.relid
    WHERE s.schemaname = current_schema()
      AND pg_has_role(c.relowner, 'USAGE')
      AND s.n_mod_since_analyze >= GREATEST(:min_changes, c.reltuples)
    ORDER BY s.relname
    """
)


async def analyze_grown_tables(engine: AsyncEngine, now: datetime | None = None) -> list[str]:
    """One round: analyze the tables that about doubled since their last analysis; their
    names (none on SQLite, or when another process holds the round)."""
    if engine.dialect.name != "postgresql":
        return []
    async with transaction(engine) as conn:
        lock = sa.text("SELECT pg_try_advisory_xact_lock(:key)")
        if not (await conn.execute(lock, {"key": ADVISORY_LOCK})).scalar_one():
            return []
        names = list((await conn.execute(_GROWN, {"min_changes": MIN_CHANGES})).scalars())
        if names:
            quote = conn.dialect.identifier_preparer.quote
            await conn.execute(sa.text("ANALYZE " + ", ".join(quote(n) for n in names)))
    return names
