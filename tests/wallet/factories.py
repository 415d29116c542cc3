"""Payloads of the organizer API and small readers for what only the database shows."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie_wallet import db
from tests.conftest import NOW


def event(event_id: str = "EV1", **overrides: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "name": f"Concert {event_id}",
        "startTime": (NOW + timedelta(days=10)).isoformat(),
        "expirationDate": (NOW + timedelta(days=10, hours=6)).isoformat(),
        "address": {"site": "Victoria Hall", "city": "Genève", "countryCode": "CH", "zip": "1204"},
        "metadata": {"performanceId": 42},
        **overrides,
    }


def ticket(
    ticket_id: str,
    *,
    email: str = "ada@example.org",
    event_id: str = "EV1",
    activation: datetime | None = None,
    method: str = "offline",
    group: str = "G1",
    rules: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "ticketId": ticket_id,
        "event": event(event_id),
        "purchaseDetails": {
            "orderId": "O-1",
            "price": 45000,
            "currency": "CHF",
            "seat": {"block": "A", "row": "3", "seat": ticket_id[-2:]},
        },
        "security": {"barcode": f"BC1.{ticket_id}.c2lnbmVk"},
        "spectatorDetails": {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "email": email,
            "gender": "F",
        },
        "activationParameters": {
            "groupId": group,
            "method": method,
            "time": (activation or NOW + timedelta(days=1)).isoformat(),
        },
        "transferRules": rules
        if rules is not None
        else {"transferable": True, "resaleAllowed": True},
    }
    payload.update(overrides)
    return payload


async def last_link(engine: AsyncEngine, email: str) -> str:
    """The token of the newest sign-in link mailed to ``email``."""
    async with db.read(engine) as conn:
        body = (
            await conn.execute(
                sa.select(db.mail_outbox.c.body)
                .where(db.mail_outbox.c.to_email == email)
                .order_by(db.mail_outbox.c.id.desc())
                .limit(1)
            )
        ).scalar_one()
    match = re.search(r"/app/login/link/([A-Za-z0-9_-]+)", body)
    assert match, body
    return match.group(1)


async def count(engine: AsyncEngine, table: sa.Table) -> int:
    async with db.read(engine) as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def ticket_row(engine: AsyncEngine, ticket_id: str) -> Any:
    async with db.read(engine) as conn:
        return (
            await conn.execute(sa.select(db.ticket).where(db.ticket.c.external_id == ticket_id))
        ).one()
