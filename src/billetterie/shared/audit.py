"""The audit log: one row per state change, written in the same transaction as the change."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata
from billetterie.shared.statements import Statement, bound

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


_INSERT = Statement(
    lambda _: sa.insert(audit_entry).values(
        bound(audit_entry, "institution_id", "action", "actor", "at", "data")
    )
)


class Buffer:
    """The entries of one transaction, written together before it commits (one statement
    instead of one per change: :func:`write`)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self.rows: list[dict[str, Any]] = []


async def write(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Write buffered entries, in one statement."""
    await _INSERT.execute_many(connection, rows)


_buffer: contextvars.ContextVar[Buffer | None] = contextvars.ContextVar(
    "audit_buffer", default=None
)


@contextlib.contextmanager
def buffered(connection: AsyncConnection) -> Iterator[Buffer]:
    """Entries recorded on ``connection`` meanwhile wait in the buffer; the caller writes its
    rows inside the transaction (:func:`write`, or with the commit's work:
    ``commit_work.Collector.flush``); entries recorded on another connection are written at
    once."""
    token = _buffer.set(Buffer(connection))
    try:
        buffer = _buffer.get()
        assert buffer is not None
        yield buffer
    finally:
        _buffer.reset(token)


async def record(
    connection: AsyncConnection,
    *,
    institution_id: int,
    action: str,
    actor: str,
    at: datetime,
    **data: Any,
) -> None:
    row = {"institution_id": institution_id, "action": action, "actor": actor, "at": at}
    buffer = _buffer.get()
    if buffer is not None and buffer.connection is connection:
        buffer.rows.append(row | {"data": data})
        return
    await connection.execute(sa.insert(audit_entry).values(**row, data=data))
