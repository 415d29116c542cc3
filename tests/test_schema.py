"""The box office's migrations build exactly the tables, columns and indexes the code declares,
on both databases: a table declared with an index that no migration creates (or the other way
round) fails here, not in production."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

import billetterie
from billetterie.shared.db import metadata


def _declare_every_table() -> None:
    """Import every module of the box office, so that each table it declares is in the
    metadata (the migrations are not tables)."""
    for module in pkgutil.walk_packages(billetterie.__path__, "billetterie."):
        if ".migrations" not in module.name:
            importlib.import_module(module.name)


async def test_migrations_match_the_declared_tables(scratch_engine: AsyncEngine) -> None:
    _declare_every_table()

    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with scratch_engine.connect() as conn:
        assert await conn.run_sync(differences) == []
    assert "shop_queue_ticket" in metadata.tables
