"""The box office's barcode public keys, as each organizer registers them.

The box office signs every barcode with its organization's ACTIVE Ed25519 key; after a
rotation the former key is PREVIOUS and still verifies; a retired key no longer does. The
organizer (the box office's printing interface) sends the whole set of its keys still
verifiable (:func:`register`); the wallet's scanner admits only barcodes signed by one of them
(:func:`verification_keys`).

- A key id seen for the first time is added.
- A registered key no longer in the set is retired; retirement is final (as in the box office):
  a set naming a retired key is refused whole, ``error.barcode_key.retired``.
- A key id keeps its public key: a set giving a known id another key is refused whole,
  ``error.barcode_key.conflict``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie_wallet import db
from billetterie_wallet.errors import Conflict


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _describe(row: Any) -> dict[str, Any]:
    return {
        "keyId": row.key_id,
        "publicKey": base64.b64encode(bytes(row.public_key)).decode("ascii"),
        "state": "RETIRED" if row.retired_at is not None else "VERIFIABLE",
        "registeredAt": _iso(row.created_at),
        "retiredAt": _iso(row.retired_at),
    }


async def _rows(conn: AsyncConnection, organizer_id: int) -> list[Any]:
    query = (
        sa.select(db.barcode_key)
        .where(db.barcode_key.c.organizer_id == organizer_id)
        .order_by(db.barcode_key.c.key_id)
    )
    return list((await conn.execute(query)).all())


async def register(
    engine: AsyncEngine,
    *,
    organizer_id: int,
    keys: Sequence[tuple[int, bytes]],
    now: datetime,
    actor: str,
) -> dict[str, Any]:
    """Make ``keys`` (key id, raw public key) the organizer's verifiable set. Answers every key
    the wallet holds for the organizer and what changed; refusals change nothing."""
    wanted = dict(keys)
    async with db.transaction(engine) as conn:
        if conn.dialect.name == "postgresql":  # two registrations queue (SQLite: one writer)
            await conn.execute(
                sa.select(db.organizer.c.id)
                .where(db.organizer.c.id == organizer_id)
                .with_for_update()
            )
        known = {row.key_id: row for row in await _rows(conn, organizer_id)}
        for key_id, public_key in wanted.items():
            row = known.get(key_id)
            if row is None:
                continue
            if bytes(row.public_key) != public_key:
                raise Conflict(
                    f"barcode key {key_id} is registered with another public key",
                    code="error.barcode_key.conflict",
                    keyId=key_id,
                )
            if row.retired_at is not None:
                raise Conflict(
                    f"barcode key {key_id} was retired; a retired key is not taken back",
                    code="error.barcode_key.retired",
                    keyId=key_id,
                )
        added = [
            {"organizer_id": organizer_id, "key_id": k, "public_key": v, "created_at": now}
            for k, v in sorted(wanted.items())
            if k not in known
        ]
        retired = sorted(
            k for k, row in known.items() if row.retired_at is None and k not in wanted
        )
        if added:
            await conn.execute(sa.insert(db.barcode_key), added)
        if retired:
            await conn.execute(
                sa.update(db.barcode_key)
                .where(
                    db.barcode_key.c.organizer_id == organizer_id,
                    db.barcode_key.c.key_id.in_(retired),
                )
                .values(retired_at=now)
            )
        if added or retired:
            await db.record(
                conn,
                organizer_id=organizer_id,
                action="wallet.barcode_keys.registered",
                actor=actor,
                at=now,
                added=[row["key_id"] for row in added],
                retired=retired,
            )
        rows = await _rows(conn, organizer_id)
    return {
        "keys": [_describe(row) for row in rows],
        "added": [row["key_id"] for row in added],
        "retired": retired,
    }


async def list_keys(engine: AsyncEngine, *, organizer_id: int) -> dict[str, Any]:
    async with db.read(engine) as conn:
        rows = await _rows(conn, organizer_id)
    return {"keys": [_describe(row) for row in rows]}


async def verification_keys(conn: AsyncConnection, organizer_id: int) -> dict[int, bytes]:
    """Key id -> raw public key, for the organizer's keys not retired."""
    rows = await conn.execute(
        sa.select(db.barcode_key.c.key_id, db.barcode_key.c.public_key).where(
            db.barcode_key.c.organizer_id == organizer_id,
            db.barcode_key.c.retired_at.is_(None),
        )
    )
    return {row.key_id: bytes(row.public_key) for row in rows}
