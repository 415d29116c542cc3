"""Payloads of the organizer API and small readers for what only the database shows."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.sales.barcodes import BarcodePayload, issue
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


def signed_barcode(
    private_key: Ed25519PrivateKey,
    key_id: int,
    ticket_id: int,
    *,
    valid_until: datetime | None = None,
    institution_id: int = 1,
) -> str:
    """A barcode as the box office issues it (``billetterie.sales.barcodes.issue``), so the
    wallet's own verifier is checked against the box office's format, not against itself."""
    return issue(
        BarcodePayload(
            key_id=key_id,
            institution_id=institution_id,
            ticket_id=ticket_id,
            performance_id=42,
            issued_at=NOW - timedelta(days=1),
            valid_until=valid_until or NOW + timedelta(days=30),
        ),
        private_key,
    )


def public_key(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def key_set(*keys: tuple[int, Ed25519PrivateKey]) -> dict[str, Any]:
    """The body of ``PUT barcode-keys``."""
    return {"keys": [{"keyId": key_id, "publicKey": public_key(k)} for key_id, k in keys]}
