"""The wallet's tables, engine and unit of work.

Every table an organizer owns carries ``organizer_id``, the wallet's tenant key (the counterpart
of the box office's ``institution_id``), so a sharded PostgreSQL can key on it. Spectators and
their devices belong to no organizer: one account holds tickets of many organizers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

from billetterie_wallet.clock import as_utc

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, whatever the database keeps."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def bind_processor(self, dialect: sa.Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, each instant's text is kept once made: a batch of 1000 tickets binds
        five times per ticket a handful of instants (now, each event's activation and
        deadline), and formatting them was most of the cost of its insert. Equal instants
        (whatever their offset) give the same UTC text, so they may share an entry."""
        process = super().bind_processor(dialect)
        if process is None or dialect.name != "sqlite":
            return process
        made: dict[datetime, Any] = {}

        def cached(value: Any) -> Any:
            if value is None:
                return None
            found = made.get(value)
            if found is None:
                found = process(value)  # refuses naive values, before anything is kept
                if len(made) >= 4096:
                    made.clear()
                made[value] = found
            return found

        return cached


def id_column() -> sa.Column[int]:
    return sa.Column("id", BigId, primary_key=True)


def ref(target: str, *, nullable: bool = False, index: bool = True) -> sa.Column[Any]:
    return sa.Column(
        f"{target}_id",
        BigId,
        sa.ForeignKey(f"{target}.id", ondelete="CASCADE"),
        nullable=nullable,
        index=index,
    )


organizer = sa.Table(
    "organizer",
    metadata,
    id_column(),
    sa.Column("code", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    # The organizer's change sequence: every ticket change (log entry) takes the next value, in
    # commit order (the row is locked by the increment until the transaction ends).
    sa.Column("change_seq", BigId, nullable=False, server_default="0"),
    # Where the organizer's one feedback consumer stands (the last key it presented).
    sa.Column("feedback_position", BigId, nullable=False, server_default="0"),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

api_key = sa.Table(
    "api_key",
    metadata,
    id_column(),
    ref("organizer"),
    sa.Column("key_id", sa.String(32), nullable=False, unique=True),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("roles", sa.String(200), nullable=False),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
)

event_table = sa.Table(
    "event",
    metadata,
    id_column(),
    ref("organizer", index=False),
    sa.Column("external_id", sa.String(100), nullable=False),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("start_time", UtcDateTime, nullable=False),
    sa.Column("expiration_date", UtcDateTime, nullable=True),
    sa.Column("site", sa.String(200), nullable=True),
    sa.Column("city", sa.String(200), nullable=True),
    sa.Column("country_code", sa.String(2), nullable=True),
    sa.Column("zip", sa.String(20), nullable=True),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("organizer_id", "external_id"),
)

activation_group = sa.Table(
    "activation_group",
    metadata,
    id_column(),
    ref("organizer", index=False),
    sa.Column("group_id", sa.String(100), nullable=False),
    sa.Column("secret", sa.String(64), nullable=False),  # base64 of 32 random bytes
    sa.Column("algorithm", sa.String(8), nullable=False),  # SHA1 | SHA256
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("organizer_id", "group_id"),
)

ticket = sa.Table(
    "ticket",
    metadata,
    id_column(),
    ref("organizer", index=False),
    ref("event"),
    sa.Column("external_id", sa.String(100), nullable=False),
    sa.Column("state", sa.String(24), nullable=False),
    sa.Column("activated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("barcode", sa.String(512), nullable=False),
    sa.Column("purchase_details", sa.JSON, nullable=False),
    sa.Column("spectator_first_name", sa.String(100), nullable=True),
    sa.Column("spectator_last_name", sa.String(100), nullable=True),
    sa.Column("spectator_email", sa.String(254), nullable=False),
    sa.Column("spectator_gender", sa.String(16), nullable=True),
    sa.Column("owner_email", sa.String(254), nullable=False, index=True),
    sa.Column("holder_first_name", sa.String(100), nullable=True),
    sa.Column("holder_last_name", sa.String(100), nullable=True),
    ref("activation_group", nullable=True),
    sa.Column("activation_method", sa.String(8), nullable=False),
    sa.Column("activation_time", UtcDateTime, nullable=True),
    sa.Column("transferable", sa.Boolean, nullable=False),
    sa.Column("max_transfers", sa.Integer, nullable=False),
    sa.Column("transfer_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("transfer_deadline", UtcDateTime, nullable=True),
    sa.Column("resale_allowed", sa.Boolean, nullable=False),
    sa.Column("injected_hash", sa.String(64), nullable=False),
    sa.Column("deletion_reason", sa.String(16), nullable=True),
    sa.Column("deletion_requested_at", UtcDateTime, nullable=True),
    sa.Column("deleted_at", UtcDateTime, nullable=True),
    sa.Column("controlled_at", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # ticketId first: batches look tickets up by a list of ids, whatever the statistics say.
    sa.UniqueConstraint("external_id", "organizer_id"),
    # The sweeper's work: deletions still waiting for devices.
    sa.Index(
        "ix_ticket_deletion_pending",
        "deletion_requested_at",
        postgresql_where=sa.text("state = 'DELETION_PENDING'"),
        sqlite_where=sa.text("state = 'DELETION_PENDING'"),
    ),
)

ticket_log = sa.Table(
    "ticket_log",
    metadata,
    id_column(),
    ref("organizer", index=False),
    ref("ticket"),
    sa.Column("seq", BigId, nullable=False),
    sa.Column("action", sa.String(48), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(254), nullable=False),
    sa.Column("device", sa.String(64), nullable=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Index("ix_ticket_log_report", "organizer_id", "at", "id"),
    sa.UniqueConstraint("organizer_id", "seq"),  # the feedback feed reads this range
)

transfer = sa.Table(
    "transfer",
    metadata,
    id_column(),
    ref("organizer", index=False),
    ref("ticket"),
    sa.Column("from_email", sa.String(254), nullable=False),
    sa.Column("to_email", sa.String(254), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),  # PENDING ACCEPTED REJECTED ...
    sa.Column("previous_state", sa.String(24), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("resolved_at", UtcDateTime, nullable=True),
    sa.Index(
        "ix_transfer_open",
        "expires_at",
        postgresql_where=sa.text("state = 'PENDING'"),
        sqlite_where=sa.text("state = 'PENDING'"),
    ),
)

privilege_definition = sa.Table(
    "privilege_definition",
    metadata,
    id_column(),
    ref("organizer", index=False),
    sa.Column("external_id", sa.String(100), nullable=False),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # MEMBERSHIP | SEASON_CARD
    sa.Column("valid_from", UtcDateTime, nullable=True),
    sa.Column("valid_until", UtcDateTime, nullable=True),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("organizer_id", "external_id"),
)

privilege = sa.Table(
    "privilege",
    metadata,
    id_column(),
    ref("organizer", index=False),
    ref("privilege_definition"),
    sa.Column("external_id", sa.String(100), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # INJECTED | USED | DELETED
    sa.Column("barcode", sa.String(512), nullable=False),
    sa.Column("first_name", sa.String(100), nullable=True),
    sa.Column("last_name", sa.String(100), nullable=True),
    sa.Column("owner_email", sa.String(254), nullable=False, index=True),
    sa.Column("linked_ticket_ids", sa.JSON, nullable=False),
    sa.Column("injected_hash", sa.String(64), nullable=False),
    sa.Column("used_at", UtcDateTime, nullable=True),
    sa.Column("used_by", sa.String(254), nullable=True),
    sa.Column("deletion_reason", sa.String(16), nullable=True),  # CANCELLED | INVALIDATED
    sa.Column("deleted_at", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("organizer_id", "external_id"),
)

# The box office's barcode public keys (Ed25519, raw 32 bytes) by the key id its barcodes
# carry: the scanner admits only barcodes signed by one of the organizer's keys not retired.
barcode_key = sa.Table(
    "barcode_key",
    metadata,
    id_column(),
    ref("organizer", index=False),
    sa.Column("key_id", sa.BigInteger, nullable=False),  # 4 bytes in the barcode, unsigned
    sa.Column("public_key", sa.LargeBinary(32), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("retired_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("organizer_id", "key_id"),
)

scan = sa.Table(
    "scan",
    metadata,
    id_column(),
    ref("organizer", index=False),
    sa.Column("barcode", sa.String(512), nullable=False),
    sa.Column("group_id", sa.String(100), nullable=False),
    sa.Column("result", sa.String(24), nullable=False),
    sa.Column("scanner", sa.String(100), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Index("ix_scan_barcode", "organizer_id", "barcode"),
)

# The first admission of each barcode; the unique key makes a concurrent second scan a duplicate.
admission = sa.Table(
    "admission",
    metadata,
    id_column(),
    ref("organizer", index=False),
    sa.Column("barcode", sa.String(512), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("organizer_id", "barcode"),
)

spectator = sa.Table(
    "spectator",
    metadata,
    id_column(),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(200), nullable=True),
    sa.Column("email_verified_at", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

login_link = sa.Table(
    "login_link",
    metadata,
    id_column(),
    sa.Column("email", sa.String(254), nullable=False, index=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("used_at", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

mail_outbox = sa.Table(
    "mail_outbox",
    metadata,
    id_column(),
    sa.Column("to_email", sa.String(254), nullable=False, index=True),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

device = sa.Table(
    "device",
    metadata,
    id_column(),
    sa.Column("device_uid", sa.String(64), nullable=False, unique=True),
    ref("spectator", nullable=True),
    sa.Column("user_agent", sa.String(300), nullable=False),
    sa.Column("first_seen", UtcDateTime, nullable=False),
    sa.Column("last_seen", UtcDateTime, nullable=False),
)

# Which devices hold which tickets: a deletion completes once each of them acknowledged.
device_ticket = sa.Table(
    "device_ticket",
    metadata,
    id_column(),
    ref("organizer", index=False),
    ref("device", index=False),
    ref("ticket"),
    sa.Column("first_seen", UtcDateTime, nullable=False),
    sa.Column("deletion_acknowledged_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("device_id", "ticket_id"),
)

audit_entry = sa.Table(
    "audit_entry",
    metadata,
    id_column(),
    ref("organizer", nullable=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(254), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
)


async def record(
    conn: AsyncConnection,
    *,
    organizer_id: int | None,
    action: str,
    actor: str,
    at: datetime,
    **data: Any,
) -> None:
    """One audit row for a state change outside a ticket's own log, in the same transaction."""
    await conn.execute(
        sa.insert(audit_entry).values(
            organizer_id=organizer_id, action=action, actor=actor, at=at, data=data
        )
    )


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine; on SQLite: WAL, foreign keys, a busy timeout, IMMEDIATE writers."""
    json = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30}, **json)
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(sync_engine, "begin")
        def _on_begin(connection: Any) -> None:
            mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
            connection.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return create_async_engine(
        url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20, **json
    )


def _json_dumps(value: Any) -> str:
    # JSON columns hold what injection validated: finite numbers within 64 bits.
    return orjson.dumps(value).decode()


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One write transaction: committed on success, rolled back on any exception."""
    async with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection = await connection.execution_options(sqlite_begin="IMMEDIATE")
        async with connection.begin():
            yield connection


@asynccontextmanager
async def read(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read-only connection (one consistent snapshot)."""
    async with engine.connect() as connection, connection.begin():
        yield connection


async def next_sequence(conn: AsyncConnection, organizer_id: int, count: int = 1) -> int:
    """Reserve ``count`` change sequence numbers; returns the first. Locks the organizer row
    until the transaction ends, so sequence order is commit order."""
    row = (
        await conn.execute(
            sa.update(organizer)
            .where(organizer.c.id == organizer_id)
            .values(change_seq=organizer.c.change_seq + count)
            .returning(organizer.c.change_seq)
        )
    ).one()
    return int(row[0]) - count + 1
