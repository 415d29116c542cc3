"""The audit log: one row per state change, written in the same transaction as the change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata

audit_entry = sa.Table(
    "audit_entry",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("action", sa.String(64), nullable=False),  # dotted: catalog.setup.imported
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
)


async def record(
    connection: AsyncConnection,
    *,
    institution_id: int,
    action: str,
    actor: str,
    at: datetime,
    **data: Any,
) -> None:
    await connection.execute(
        sa.insert(audit_entry).values(
            institution_id=institution_id, action=action, actor=actor, at=at, data=data
        )
    )
