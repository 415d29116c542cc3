"""Organizers and their API keys.

A key reads ``bwk_<key id>_<secret>``. Only the SHA-256 of the whole key is stored: keys are 32
random bytes, so a fast hash is enough (a slow password hash would only slow every call down).
The key id finds the row; the hash is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie_wallet import db
from billetterie_wallet.errors import Forbidden, InvalidRequest, Unauthenticated, UnknownOrganizer
from billetterie_wallet.models import ALL_ROLES, Role

CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,63}$")
KEY = re.compile(r"^bwk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class Organizer:
    id: int
    code: str
    roles: frozenset[str]
    key_id: str

    def require(self, role: Role) -> None:
        if role not in self.roles:
            raise Forbidden(f"this API key lacks the role {role.value!r}", role=role.value)


@dataclass(frozen=True)
class NewKey:
    organizer_code: str
    key: str
    roles: tuple[str, ...]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def parse_roles(value: str | None) -> tuple[str, ...]:
    if not value:
        return tuple(r.value for r in ALL_ROLES)
    wanted = [r.strip() for r in value.split(",") if r.strip()]
    known = {r.value for r in ALL_ROLES}
    unknown = [r for r in wanted if r not in known]
    if unknown or not wanted:
        raise InvalidRequest(
            f"unknown role(s) {', '.join(unknown) or '(none)'}; known: {', '.join(sorted(known))}"
        )
    return tuple(dict.fromkeys(wanted))


async def create_organizer(
    engine: AsyncEngine,
    *,
    code: str,
    name: str,
    roles: tuple[str, ...],
    now: datetime,
    actor: str,
) -> NewKey:
    """Create the organizer ``code`` if it is new, and give it a new API key with ``roles``.

    The key is returned once and never stored in clear."""
    if not CODE.match(code):
        raise InvalidRequest("an organizer code is 1-64 of A-Z, 0-9, '_' and '-'")
    async with db.transaction(engine) as conn:
        organizer_id = (
            await conn.execute(sa.select(db.organizer.c.id).where(db.organizer.c.code == code))
        ).scalar()
        if organizer_id is None:
            organizer_id = (
                await conn.execute(
                    sa.insert(db.organizer)
                    .values(code=code, name=name or code, created_at=now)
                    .returning(db.organizer.c.id)
                )
            ).scalar_one()
            await db.record(
                conn,
                organizer_id=organizer_id,
                action="wallet.organizer.created",
                actor=actor,
                at=now,
                code=code,
            )
        key_id = secrets.token_hex(6)
        key = f"bwk_{key_id}_{secrets.token_urlsafe(32)}"
        await conn.execute(
            sa.insert(db.api_key).values(
                organizer_id=organizer_id,
                key_id=key_id,
                key_hash=_digest(key),
                roles=",".join(roles),
                label=f"created by {actor}",
                created_at=now,
            )
        )
        await db.record(
            conn,
            organizer_id=organizer_id,
            action="wallet.api_key.created",
            actor=actor,
            at=now,
            key_id=key_id,
            roles=list(roles),
        )
    return NewKey(code, key, roles)


async def revoke_key(engine: AsyncEngine, *, key_id: str, now: datetime, actor: str) -> None:
    async with db.transaction(engine) as conn:
        row = (
            await conn.execute(
                sa.update(db.api_key)
                .where(db.api_key.c.key_id == key_id, db.api_key.c.revoked_at.is_(None))
                .values(revoked_at=now)
                .returning(db.api_key.c.organizer_id)
            )
        ).first()
        if row is None:
            raise UnknownOrganizer(f"no active API key {key_id!r}")
        await db.record(
            conn,
            organizer_id=row[0],
            action="wallet.api_key.revoked",
            actor=actor,
            at=now,
            key_id=key_id,
        )


async def authenticate(engine: AsyncEngine, key: str) -> Organizer:
    """The organizer an API key belongs to; refuses unknown, malformed and revoked keys alike."""
    match = KEY.match(key)
    if match is None:
        raise Unauthenticated("a valid organizer API key is required")
    async with db.read(engine) as conn:
        row = (
            await conn.execute(
                sa.select(
                    db.api_key.c.key_hash,
                    db.api_key.c.roles,
                    db.api_key.c.revoked_at,
                    db.organizer.c.id,
                    db.organizer.c.code,
                )
                .join(db.organizer, db.organizer.c.id == db.api_key.c.organizer_id)
                .where(db.api_key.c.key_id == match.group(1))
            )
        ).first()
    if (
        row is None
        or row.revoked_at is not None
        or not hmac.compare_digest(row.key_hash, _digest(key))
    ):
        raise Unauthenticated("a valid organizer API key is required")
    return Organizer(row.id, row.code, frozenset(row.roles.split(",")), match.group(1))
