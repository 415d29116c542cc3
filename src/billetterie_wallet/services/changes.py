"""Ticket changes: the state update, the change sequence and the append-only log, together.

Every change of a ticket goes through :func:`log_changes` inside the caller's transaction: it
reserves one sequence number per change from the organizer's counter (which locks the organizer
row until commit, so the feedback feed, which pages through the log by sequence number, sees
changes in commit order), appends the log entries and touches the tickets' ``updated_at``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie_wallet import db


@dataclass
class Change:
    ticket_pk: int
    action: str  # dotted: ticket.injected, transfer.accepted
    status: str  # the ticket's wire status after the change
    actor: str
    device: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


async def log_changes(
    conn: AsyncConnection, organizer_id: int, changes: list[Change], *, now: datetime
) -> None:
    if not changes:
        return
    first = await db.next_sequence(conn, organizer_id, len(changes))
    entries = [(first + offset, change) for offset, change in enumerate(changes)]
    await append_log(conn, organizer_id, entries, now=now)
    touched = sorted({change.ticket_pk for change in changes})
    await conn.execute(
        sa.update(db.ticket).where(db.ticket.c.id.in_(touched)).values(updated_at=now)
    )


async def append_log(
    conn: AsyncConnection,
    organizer_id: int,
    entries: list[tuple[int, Change]],
    *,
    now: datetime,
) -> None:
    """The log rows of changes whose sequence numbers the caller reserved."""
    if not entries:
        return
    rows = []
    for seq, change in entries:
        rows.append(
            {
                "organizer_id": organizer_id,
                "ticket_id": change.ticket_pk,
                "seq": seq,
                "action": change.action,
                "status": change.status,
                "actor": change.actor,
                "device": change.device,
                "at": now,
                "data": change.data,
            }
        )
    await conn.execute(sa.insert(db.ticket_log), rows)
