"""The wallet's migrations build exactly the tables the code declares, and the ticket log is
append-only in the database itself."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie_wallet import db
from tests.wallet import factories
from tests.wallet.conftest import OrganizerClient


async def test_migrations_match_the_declared_tables(wallet_engine: AsyncEngine) -> None:
    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "version_table": "wallet_alembic_version"}
        )
        return list(compare_metadata(context, db.metadata))

    async with wallet_engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_the_ticket_log_cannot_be_rewritten(
    organizer: OrganizerClient, wallet_engine: AsyncEngine
) -> None:
    await organizer.inject(factories.ticket("T-01"))
    with pytest.raises(DBAPIError, match="append-only"):
        async with db.transaction(wallet_engine) as conn:
            await conn.execute(sa.update(db.ticket_log).values(actor="someone else"))
    async with db.read(wallet_engine) as conn:
        actors = (await conn.execute(sa.select(db.ticket_log.c.actor))).scalars().all()
    assert actors == ["organizer:DEMO"]
