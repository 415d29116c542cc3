"""Alembic environment: async engines for both SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import billetterie.catalog.db
import billetterie.contacts.db
import billetterie.identity.db
import billetterie.inventory.db
import billetterie.payments.db
import billetterie.printing.db
import billetterie.sales.barcode_keys
import billetterie.sales.db
import billetterie.shared.audit
import billetterie.shared.idempotency
import billetterie.shared.outbox
import billetterie.shop.queue_db
import billetterie.webhooks.db  # noqa: F401
from billetterie.shared.db import create_engine, metadata

config = context.config


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def main() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as connection:
        await connection.run_sync(run)
        await connection.commit()
    await engine.dispose()


asyncio.run(main())
