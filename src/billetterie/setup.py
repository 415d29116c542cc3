"""Setup import as the whole box office does it: the catalog, then the inventory it calls for,
in one transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.catalog.services import ImportResult, import_setup, inventory_plan
from billetterie.catalog.setupfile import SetupDocument
from billetterie.identity.services import hash_secret
from billetterie.inventory.provision import provision


async def provision_inventory(conn: AsyncConnection, institution_id: int) -> None:
    await provision(conn, institution_id, await inventory_plan(conn, institution_id))


async def import_institution(
    engine: AsyncEngine, document: SetupDocument, *, now: datetime, actor: str
) -> ImportResult:
    return await import_setup(
        engine,
        document,
        now=now,
        actor=actor,
        hash_secret=hash_secret,
        after_write=[provision_inventory],
    )
