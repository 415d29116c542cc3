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


async def test_instants_are_kept_in_utc_whatever_their_offset(wallet_engine: AsyncEngine) -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy.exc import StatementError

    utc = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)
    geneva = datetime(2027, 3, 1, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    later = utc + timedelta(microseconds=1)
    async with db.transaction(wallet_engine) as conn:
        for at in (utc, geneva, later, geneva):  # the same instants again, bound from a cache
            await conn.execute(
                sa.insert(db.audit_entry).values(action="t", actor="t", at=at, data={})
            )
    async with db.read(wallet_engine) as conn:
        stored = (
            (await conn.execute(sa.select(db.audit_entry.c.at).order_by(db.audit_entry.c.id)))
            .scalars()
            .all()
        )
        matched = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(db.audit_entry)
                .where(db.audit_entry.c.at == geneva)
            )
        ).scalar_one()
    assert stored == [utc, utc, later, utc] and all(s.tzinfo == UTC for s in stored)
    assert matched == 3
    with pytest.raises(StatementError, match="naive"):
        async with db.transaction(wallet_engine) as conn:
            await conn.execute(
                sa.insert(db.audit_entry).values(
                    action="t", actor="t", at=utc.replace(tzinfo=None), data={}
                )
            )
