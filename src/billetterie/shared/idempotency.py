"""Stored responses of unsafe calls, keyed by ``(institution, operator, Idempotency-Key)``.

The life of a key (see ``docs/api/idempotency.md``):

1. :func:`begin` either starts the call (a row ``IN_FLIGHT`` with a lease and an owner token),
   or answers what to do instead: replay the stored response, refuse because the first call is
   still running (:class:`KeyInFlight`), or refuse because the body differs
   (:class:`KeyMismatch`). Two racing ``begin`` calls for one new key: the unique constraint
   lets one insert; the other sees the row and answers in flight.
2. :func:`complete` stores the status, headers and body (only while the caller still owns the
   row); :func:`abandon` deletes the row when the response must not be replayed (5xx, 429...),
   so the client may retry with the same key.
3. An ``IN_FLIGHT`` row whose lease ran out (the process died mid-call) is taken over by the
   next call with the same key and body. Rows expire ``ttl`` after they were created;
   :func:`purge_expired` deletes them (a periodic task), and an expired row is replaced anyway.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata, transaction
from billetterie.shared.errors import DomainError

IN_FLIGHT, COMPLETED = "IN_FLIGHT", "COMPLETED"
MAX_KEY_LENGTH = 255

idempotency_key = sa.Table(
    "idempotency_key",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("operator", sa.String(64), nullable=False),  # the operator login
    sa.Column("key", sa.String(MAX_KEY_LENGTH), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(32), nullable=True),
    sa.Column("locked_until", UtcDateTime, nullable=True),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("headers", sa.JSON, nullable=True),  # [[name, value], ...] as sent
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False, index=True),
    sa.UniqueConstraint("institution_id", "operator", "key"),
)


class KeyInFlight(DomainError):
    code = "error.request.idempotency_in_flight"
    http_status = 409


class KeyMismatch(DomainError):
    code = "error.request.idempotency_mismatch"
    http_status = 422


class InvalidKey(DomainError):
    code = "error.request.idempotency_key_invalid"
    http_status = 400


def check_key(key: str) -> str:
    """A key is 1 to 255 visible ASCII characters (a UUID is the usual choice)."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(33 <= ord(c) <= 126 for c in key):
        raise InvalidKey("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key


def request_hash(method: str, path: str, body: bytes) -> str:
    """What "the same request" means: the same HTTP method, path and body bytes."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Started:
    """The caller owns the key: run the call, then :func:`complete` or :func:`abandon`."""

    row_id: int
    owner: str
    taken_over: bool


@dataclass(frozen=True)
class Scope:
    institution_id: int
    operator: str
    key: str


async def begin(
    engine: AsyncEngine,
    scope: Scope,
    fingerprint: str,
    *,
    now: datetime,
    lease: timedelta,
    ttl: timedelta,
) -> Started | StoredResponse:
    """Start the call under ``scope`` or return the stored response to replay.

    Raises :class:`KeyMismatch` (another body under this key) or :class:`KeyInFlight` (the
    first call holds a live lease)."""
    k = idempotency_key.c
    owner = uuid.uuid4().hex
    where = sa.and_(
        k.institution_id == scope.institution_id, k.operator == scope.operator, k.key == scope.key
    )
    for _ in range(3):  # an insert racing ours, or an expired row deleted under us: look again
        async with transaction(engine) as conn:
            row = (await conn.execute(sa.select(idempotency_key).where(where))).first()
            if row is not None and row.expires_at <= now:
                await conn.execute(sa.delete(idempotency_key).where(k.id == row.id))
                row = None
            if row is None:
                inserted = await _insert(conn, scope, fingerprint, owner, now, lease, ttl)
                if inserted is None:
                    continue
                return Started(inserted, owner, taken_over=False)
            if row.request_hash != fingerprint:
                raise KeyMismatch(
                    "this Idempotency-Key was used with another request; use a new key"
                )
            if row.state == COMPLETED:
                return StoredResponse(
                    row.status_code, [(str(n), str(v)) for n, v in row.headers], bytes(row.body)
                )
            if row.locked_until is not None and row.locked_until > now:
                raise KeyInFlight(
                    "the first request with this Idempotency-Key is still being processed; "
                    "retry shortly",
                )
            taken = await conn.execute(
                sa.update(idempotency_key)
                .where(k.id == row.id, k.owner == row.owner, k.state == IN_FLIGHT)
                .values(owner=owner, locked_until=now + lease)
            )
            if taken.rowcount == 1:
                return Started(row.id, owner, taken_over=True)
    raise KeyInFlight("the first request with this Idempotency-Key is still being processed")


async def _insert(
    conn: AsyncConnection,
    scope: Scope,
    fingerprint: str,
    owner: str,
    now: datetime,
    lease: timedelta,
    ttl: timedelta,
) -> int | None:
    try:
        async with conn.begin_nested():
            result = await conn.execute(
                sa.insert(idempotency_key)
                .values(
                    institution_id=scope.institution_id,
                    operator=scope.operator,
                    key=scope.key,
                    request_hash=fingerprint,
                    state=IN_FLIGHT,
                    owner=owner,
                    locked_until=now + lease,
                    created_at=now,
                    expires_at=now + ttl,
                )
                .returning(idempotency_key.c.id)
            )
            return int(result.scalar_one())
    except sa.exc.IntegrityError:
        return None


async def complete(engine: AsyncEngine, started: Started, response: StoredResponse) -> bool:
    """Store the response for replay; False when the lease was lost to another call."""
    k = idempotency_key.c
    async with transaction(engine) as conn:
        result = await conn.execute(
            sa.update(idempotency_key)
            .where(k.id == started.row_id, k.owner == started.owner, k.state == IN_FLIGHT)
            .values(
                state=COMPLETED,
                owner=None,
                locked_until=None,
                status_code=response.status_code,
                headers=[list(h) for h in response.headers],
                body=response.body,
            )
        )
    return result.rowcount == 1


async def abandon(engine: AsyncEngine, started: Started) -> None:
    """Forget the key (nothing is replayed; the client may retry with it)."""
    k = idempotency_key.c
    async with transaction(engine) as conn:
        await conn.execute(
            sa.delete(idempotency_key).where(
                k.id == started.row_id, k.owner == started.owner, k.state == IN_FLIGHT
            )
        )


async def purge_expired(engine: AsyncEngine, now: datetime) -> int:
    """Delete expired keys (a periodic task of the background loops)."""
    async with transaction(engine) as conn:
        result = await conn.execute(
            sa.delete(idempotency_key).where(idempotency_key.c.expires_at <= now)
        )
    return int(result.rowcount or 0)
