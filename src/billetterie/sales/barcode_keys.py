"""Barcode signing keys (one active Ed25519 key per organization, with rotation) and the
revocation list scanners follow.

Keys
    ``signing_key`` returns the organization's active key and creates it on first use.
    ``rotate`` demotes the active key to PREVIOUS (still published, codes it signed still verify)
    and creates a new ACTIVE one; ``retire`` withdraws a PREVIOUS key (its codes stop verifying).
    Private keys are stored encrypted with AES-256-GCM under a key derived by HKDF-SHA256 from
    ``Settings.barcode_key_secret`` (:class:`KeyVault`); the associated data binds each
    ciphertext to its institution, organization and public key, so rows cannot be swapped.
    A key's id is its row id and goes into every barcode (4 bytes).

Revocations
    ``revoke`` lists tickets whose barcodes must no longer open a door, each once, numbered by a
    per-institution sequence. The sequence row is locked first and kept until commit, so
    sequence order is commit order and a reader that resumes after cursor N never misses a row.

Every function takes the caller's connection and writes nothing outside it: callers own the
transaction. Every state change writes an audit entry in that transaction.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.sales.barcodes import BarcodePayload, issue
from billetterie.shared import audit
from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata, ref
from billetterie.shared.errors import Conflict, DomainError, InvalidRequest, NotFound
from billetterie.shared.statements import Statement

Big = sa.BigInteger().with_variant(sa.Integer, "sqlite")

ACTIVE, PREVIOUS, RETIRED = "ACTIVE", "PREVIOUS", "RETIRED"
REVOCATION_REASONS = frozenset({"CANCELLED", "INVALIDATED", "REISSUED"})
REVOCATION_PAGE = 1000

barcode_key = sa.Table(
    "barcode_key",
    metadata,
    id_column(),
    institution_column(),
    ref("organization"),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("public_key", sa.LargeBinary(32), nullable=False),
    sa.Column("private_key", sa.LargeBinary(128), nullable=False),  # nonce + AES-GCM ciphertext
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("rotated_at", UtcDateTime, nullable=True),
    sa.Column("retired_at", UtcDateTime, nullable=True),
    sa.Index(
        "uq_barcode_key_active",
        "organization_id",
        unique=True,
        sqlite_where=sa.text("state = 'ACTIVE'"),
        postgresql_where=sa.text("state = 'ACTIVE'"),
    ),
)

barcode_revocation = sa.Table(
    "barcode_revocation",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("sequence", Big, nullable=False),
    sa.Column("ticket_id", Big, nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("institution_id", "ticket_id"),
    sa.Index("ix_barcode_revocation_feed", "institution_id", "sequence"),
)

barcode_revocation_sequence = sa.Table(
    "barcode_revocation_sequence",
    metadata,
    sa.Column(
        "institution_id",
        Big,
        sa.ForeignKey("institution.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("value", Big, nullable=False),
)


class UnknownBarcodeKeyId(NotFound):
    code = "error.barcode.unknown_key"


class ActiveKeyCannotRetire(DomainError):
    code = "error.barcode.key_active"
    http_status = 409


class KeyringBusy(Conflict):
    code = "error.barcode.busy"


class InvalidRevocation(InvalidRequest):
    code = "error.barcode.invalid_revocation"


class KeyVault:
    """Encrypts and decrypts private keys under a key derived from the settings secret."""

    _INFO = b"billetterie barcode signing keys v1"

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the barcode key secret is empty")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=self._INFO).derive(
            secret.encode("utf-8")
        )
        self._aead = AESGCM(key)
        # keys opened, by (key id, sealed bytes): a close signs with the active key, whose
        # sealed bytes never change; a rotation makes a new key, with a new id
        self._opened: dict[tuple[int, bytes], Ed25519PrivateKey] = {}

    @staticmethod
    def _associated(institution_id: int, organization_id: int, public_key: bytes) -> bytes:
        return b"%d:%d:" % (institution_id, organization_id) + public_key

    def seal(
        self,
        private_key: Ed25519PrivateKey,
        *,
        institution_id: int,
        organization_id: int,
        public_key: bytes,
    ) -> bytes:
        seed = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        nonce = os.urandom(12)
        aad = self._associated(institution_id, organization_id, public_key)
        return nonce + self._aead.encrypt(nonce, seed, aad)

    def open(
        self, sealed: bytes, *, institution_id: int, organization_id: int, public_key: bytes
    ) -> Ed25519PrivateKey:
        aad = self._associated(institution_id, organization_id, public_key)
        try:
            seed = self._aead.decrypt(sealed[:12], sealed[12:], aad)
        except InvalidTag:
            raise RuntimeError(
                "a barcode signing key does not decrypt: barcode_key_secret changed?"
            ) from None
        return Ed25519PrivateKey.from_private_bytes(seed)

    def opened(
        self,
        key_id: int,
        sealed: bytes,
        *,
        institution_id: int,
        organization_id: int,
        public_key: bytes,
    ) -> Ed25519PrivateKey:
        """:meth:`open`, once per key and process."""
        found = self._opened.get((key_id, sealed))
        if found is None:
            found = self.open(
                sealed,
                institution_id=institution_id,
                organization_id=organization_id,
                public_key=public_key,
            )
            if len(self._opened) >= _OPENED_KEYS:
                self._opened.clear()
            self._opened[(key_id, sealed)] = found
        return found


_OPENED_KEYS = 256  # a process signs for a few organizations; past this, the cache starts over


@dataclass(frozen=True)
class SigningKey:
    key_id: int
    organization_id: int
    private_key: Ed25519PrivateKey


@dataclass(frozen=True)
class PublicKeyInfo:
    key_id: int
    organization_id: int
    state: str
    public_key: bytes  # raw 32 bytes
    created_at: datetime
    rotated_at: datetime | None
    retired_at: datetime | None

    @property
    def pem(self) -> str:
        key = Ed25519PublicKey.from_public_bytes(self.public_key)
        return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def _info(row: Any) -> PublicKeyInfo:
    return PublicKeyInfo(
        key_id=row.id,
        organization_id=row.organization_id,
        state=row.state,
        public_key=bytes(row.public_key),
        created_at=row.created_at,
        rotated_at=row.rotated_at,
        retired_at=row.retired_at,
    )


def _active_key(*, lock: bool) -> Any:
    query = sa.select(barcode_key).where(
        barcode_key.c.institution_id == sa.bindparam("institution_id"),
        barcode_key.c.organization_id == sa.bindparam("organization_id"),
        barcode_key.c.state == ACTIVE,
    )
    return query.with_for_update() if lock else query


_ACTIVE_KEY = Statement(lambda _dialect: _active_key(lock=False))  # read at every close
_ACTIVE_KEY_LOCKED = Statement(lambda _dialect: _active_key(lock=True))


async def _active_row(
    conn: AsyncConnection, institution_id: int, organization_id: int, *, lock: bool = False
) -> Any:
    statement = _ACTIVE_KEY_LOCKED if lock else _ACTIVE_KEY
    return await statement.first(
        conn, institution_id=institution_id, organization_id=organization_id
    )


async def _create_active(
    conn: AsyncConnection,
    vault: KeyVault,
    *,
    institution_id: int,
    organization_id: int,
    now: datetime,
) -> Any | None:
    """Insert a new ACTIVE key; None when another transaction inserted one first."""
    private_key = Ed25519PrivateKey.generate()
    public_key = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    sealed = vault.seal(
        private_key,
        institution_id=institution_id,
        organization_id=organization_id,
        public_key=public_key,
    )
    try:
        async with conn.begin_nested():
            key_id = (
                await conn.execute(
                    sa.insert(barcode_key)
                    .values(
                        institution_id=institution_id,
                        organization_id=organization_id,
                        state=ACTIVE,
                        public_key=public_key,
                        private_key=sealed,
                        created_at=now,
                    )
                    .returning(barcode_key.c.id)
                )
            ).scalar_one()
    except IntegrityError:
        return None
    if key_id > 2**32 - 1:  # the barcode carries 4 bytes of key id
        raise RuntimeError("barcode key ids are exhausted")
    return (await conn.execute(sa.select(barcode_key).where(barcode_key.c.id == key_id))).one()


async def signing_key(
    conn: AsyncConnection,
    vault: KeyVault,
    *,
    institution_id: int,
    organization_id: int,
    now: datetime,
) -> SigningKey:
    """The organization's active signing key, created (and audited) on first use.

    Safe under concurrency: two first uses insert at most one key (a unique index on the active
    key per organization; the loser reads the winner's)."""
    row = await _active_row(conn, institution_id, organization_id)
    if row is None:
        row = await _create_active(
            conn, vault, institution_id=institution_id, organization_id=organization_id, now=now
        )
        if row is None:
            row = await _active_row(conn, institution_id, organization_id)
            if row is None:
                raise KeyringBusy("the signing key is being changed; retry")
        else:
            await audit.record(
                conn,
                institution_id=institution_id,
                action="sales.barcode_key.created",
                actor="system",
                at=now,
                key_id=row.id,
                organization_id=organization_id,
            )
    return SigningKey(
        key_id=row.id,
        organization_id=organization_id,
        private_key=vault.opened(
            row.id,
            bytes(row.private_key),
            institution_id=institution_id,
            organization_id=organization_id,
            public_key=bytes(row.public_key),
        ),
    )


async def issue_barcode(
    conn: AsyncConnection,
    vault: KeyVault,
    *,
    institution_id: int,
    organization_id: int,
    ticket_id: int,
    performance_id: int | None,
    valid_until: datetime,
    now: datetime,
) -> str:
    """A signed barcode for one ticket, with the organization's active key (created on first
    use). ``performance_id`` None encodes 0. ``valid_until`` is typically the performance's end
    (or the pass's last day); it must not be before ``now``."""
    key = await signing_key(
        conn, vault, institution_id=institution_id, organization_id=organization_id, now=now
    )
    return issue(
        BarcodePayload(
            key_id=key.key_id,
            institution_id=institution_id,
            ticket_id=ticket_id,
            performance_id=performance_id or 0,
            issued_at=now.replace(microsecond=0),
            valid_until=valid_until,
        ),
        key.private_key,
    )


@dataclass(frozen=True)
class BarcodeRequest:
    """One ticket to sign: ``performance_id`` None encodes 0."""

    ticket_id: int
    performance_id: int | None
    valid_until: datetime


async def issue_barcodes(
    conn: AsyncConnection,
    vault: KeyVault,
    *,
    institution_id: int,
    organization_id: int,
    tickets: Sequence[BarcodeRequest],
    now: datetime,
) -> list[str]:
    """Signed barcodes for several tickets of one organization, in order, with one key
    lookup (what ``closeOrder`` needs for an order's tickets)."""
    if not tickets:
        return []
    key = await signing_key(
        conn, vault, institution_id=institution_id, organization_id=organization_id, now=now
    )
    issued_at = now.replace(microsecond=0)
    return [
        issue(
            BarcodePayload(
                key_id=key.key_id,
                institution_id=institution_id,
                ticket_id=ticket.ticket_id,
                performance_id=ticket.performance_id or 0,
                issued_at=issued_at,
                valid_until=ticket.valid_until,
            ),
            key.private_key,
        )
        for ticket in tickets
    ]


async def rotate(
    conn: AsyncConnection,
    vault: KeyVault,
    *,
    institution_id: int,
    organization_id: int,
    now: datetime,
    actor: str,
) -> PublicKeyInfo:
    """Make a new ACTIVE key for the organization; the former one becomes PREVIOUS and keeps
    verifying until :func:`retire`. Returns the new key. The active row is locked, so two
    rotations queue; one that loses a race answers ``error.barcode.busy``."""
    current = await _active_row(conn, institution_id, organization_id, lock=True)
    if current is not None:
        await conn.execute(
            sa.update(barcode_key)
            .where(barcode_key.c.id == current.id)
            .values(state=PREVIOUS, rotated_at=now)
        )
    row = await _create_active(
        conn, vault, institution_id=institution_id, organization_id=organization_id, now=now
    )
    if row is None:
        raise KeyringBusy("another rotation of this organization's key is committing; retry")
    await audit.record(
        conn,
        institution_id=institution_id,
        action="sales.barcode_key.rotated",
        actor=actor,
        at=now,
        key_id=row.id,
        previous_key_id=None if current is None else current.id,
        organization_id=organization_id,
    )
    return _info(row)


async def retire(
    conn: AsyncConnection, *, institution_id: int, key_id: int, now: datetime, actor: str
) -> PublicKeyInfo:
    """Withdraw a PREVIOUS key: it is no longer published and its barcodes stop verifying.
    The active key cannot be retired (rotate first). Retiring twice changes nothing."""
    row = (
        await conn.execute(
            sa.select(barcode_key)
            .where(barcode_key.c.institution_id == institution_id, barcode_key.c.id == key_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise UnknownBarcodeKeyId(f"no barcode key {key_id} in this institution")
    if row.state == ACTIVE:
        raise ActiveKeyCannotRetire(f"key {key_id} is active; rotate before retiring it")
    if row.state == RETIRED:
        return _info(row)
    await conn.execute(
        sa.update(barcode_key)
        .where(barcode_key.c.id == key_id)
        .values(state=RETIRED, retired_at=now)
    )
    await audit.record(
        conn,
        institution_id=institution_id,
        action="sales.barcode_key.retired",
        actor=actor,
        at=now,
        key_id=key_id,
        organization_id=row.organization_id,
    )
    return _info(
        (await conn.execute(sa.select(barcode_key).where(barcode_key.c.id == key_id))).one()
    )


async def public_keys(
    conn: AsyncConnection, *, institution_id: int, include_retired: bool = False
) -> list[PublicKeyInfo]:
    """The institution's keys, by id: ACTIVE and PREVIOUS ones (and RETIRED when asked)."""
    query = sa.select(barcode_key).where(barcode_key.c.institution_id == institution_id)
    if not include_retired:
        query = query.where(barcode_key.c.state != RETIRED)
    rows = (await conn.execute(query.order_by(barcode_key.c.id))).all()
    return [_info(row) for row in rows]


async def all_public_keys(conn: AsyncConnection) -> list[tuple[int, PublicKeyInfo]]:
    """Every key of every institution with its institution id (for the operator CLI)."""
    rows = (await conn.execute(sa.select(barcode_key).order_by(barcode_key.c.id))).all()
    return [(row.institution_id, _info(row)) for row in rows]


async def verification_keys(
    conn: AsyncConnection, *, institution_id: int
) -> dict[int, Ed25519PublicKey]:
    """What :func:`billetterie.sales.barcodes.verify` takes: the keys still verifiable."""
    return {
        key.key_id: Ed25519PublicKey.from_public_bytes(key.public_key)
        for key in await public_keys(conn, institution_id=institution_id)
    }


# --- revocations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Revocation:
    sequence: int
    ticket_id: int
    reason: str
    revoked_at: datetime


@dataclass(frozen=True)
class RevocationPage:
    """Revocations after a cursor. ``cursor`` resumes the feed; ``complete`` is False when more
    rows follow (read again from ``cursor``)."""

    revocations: list[Revocation]
    cursor: int
    complete: bool


async def _lock_sequence(conn: AsyncConnection, institution_id: int) -> int:
    seq = barcode_revocation_sequence
    for _ in range(2):
        value = (
            await conn.execute(
                sa.update(seq)
                .where(seq.c.institution_id == institution_id)
                .values(value=seq.c.value)
                .returning(seq.c.value)
            )
        ).scalar_one_or_none()
        if value is not None:
            return int(value)
        try:
            async with conn.begin_nested():
                await conn.execute(sa.insert(seq).values(institution_id=institution_id, value=0))
        except IntegrityError:
            continue  # another transaction created it; lock it on the next turn
    raise KeyringBusy("the revocation list is busy; retry")


async def revoke(
    conn: AsyncConnection,
    *,
    institution_id: int,
    ticket_ids: Iterable[int],
    reason: str,
    now: datetime,
    actor: str = "system",
) -> list[int]:
    """Put tickets on the institution's revocation list; returns the ids newly listed.

    Call it in the transaction that cancels or invalidates the tickets. Idempotent: a ticket
    already listed keeps its first entry (and reason). ``reason`` is one of CANCELLED,
    INVALIDATED, REISSUED (``error.barcode.invalid_revocation`` otherwise, nothing written).
    Locks the institution's revocation sequence until commit.
    """
    if reason not in REVOCATION_REASONS:
        raise InvalidRevocation(
            f"reason must be one of {', '.join(sorted(REVOCATION_REASONS))}, not {reason!r}"
        )
    wanted = sorted(set(ticket_ids))
    if any(not 1 <= ticket_id <= 2**63 - 1 for ticket_id in wanted):
        raise InvalidRevocation("ticket ids are positive 64-bit integers")
    if not wanted:
        return []
    value = await _lock_sequence(conn, institution_id)
    listed: set[int] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        listed |= set(
            (
                await conn.execute(
                    sa.select(barcode_revocation.c.ticket_id).where(
                        barcode_revocation.c.institution_id == institution_id,
                        barcode_revocation.c.ticket_id.in_(chunk),
                    )
                )
            ).scalars()
        )
    fresh = [ticket_id for ticket_id in wanted if ticket_id not in listed]
    if not fresh:
        return []
    await conn.execute(
        sa.insert(barcode_revocation),
        [
            {
                "institution_id": institution_id,
                "sequence": value + index,
                "ticket_id": ticket_id,
                "reason": reason,
                "revoked_at": now,
            }
            for index, ticket_id in enumerate(fresh, start=1)
        ],
    )
    seq = barcode_revocation_sequence
    await conn.execute(
        sa.update(seq)
        .where(seq.c.institution_id == institution_id)
        .values(value=value + len(fresh))
    )
    await audit.record(
        conn,
        institution_id=institution_id,
        action="sales.barcode.revoked",
        actor=actor,
        at=now,
        ticket_ids=fresh,
        reason=reason,
    )
    return fresh


async def revocation_sequence(conn: AsyncConnection, *, institution_id: int) -> int:
    """The institution's latest revocation sequence (0 before the first)."""
    seq = barcode_revocation_sequence
    value = (
        await conn.execute(sa.select(seq.c.value).where(seq.c.institution_id == institution_id))
    ).scalar_one_or_none()
    return int(value or 0)


async def revocations_since(
    conn: AsyncConnection, *, institution_id: int, since: int, limit: int = REVOCATION_PAGE
) -> RevocationPage:
    """Revocations with a sequence above ``since``, in sequence order, at most ``limit``."""
    rows = (
        await conn.execute(
            sa.select(barcode_revocation)
            .where(
                barcode_revocation.c.institution_id == institution_id,
                barcode_revocation.c.sequence > since,
            )
            .order_by(barcode_revocation.c.sequence)
            .limit(limit + 1)
        )
    ).all()
    items = [
        Revocation(row.sequence, row.ticket_id, row.reason, row.revoked_at) for row in rows[:limit]
    ]
    return RevocationPage(
        revocations=items,
        cursor=items[-1].sequence if items else since,
        complete=len(rows) <= limit,
    )
