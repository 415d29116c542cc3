"""Engine, metadata and the unit of work.

Tables are SQLAlchemy Core tables registered on one :data:`metadata`; every table carries
``institution_id`` so a sharded PostgreSQL can key on it. Services own their transaction through
:func:`transaction`; readers use :func:`read`.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

from billetterie.shared.clock import as_utc
from billetterie.shared.errors import InUse

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


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


def id_column() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)


def ref(
    target: str, *, nullable: bool = False, ondelete: str = "CASCADE", index: bool = True
) -> sa.Column[Any]:
    """A foreign key column named after the table it points to (``season`` -> ``season_id``),
    indexed unless another index starts with it or no statement reads by it alone."""
    table = target.split(".")[0]
    return sa.Column(
        f"{table}_id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        sa.ForeignKey(f"{table}.id", ondelete=ondelete),
        nullable=nullable,
        index=index,
    )


def institution_column(*, index: bool = True) -> sa.Column[Any]:
    return ref("institution", index=index)


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine; on SQLite: WAL, foreign keys, a busy timeout, and writers that begin with
    ``BEGIN IMMEDIATE`` so two writers queue instead of failing on lock upgrade."""
    json = {"json_serializer": _json_text, "json_deserializer": orjson.loads}
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30}, **json)
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when a transaction begins.
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
    # No ping before each checkout (a round trip per transaction): a connection the server
    # dropped fails its first statement, the pool is invalidated and the call answers 503
    # error.service.unavailable with Retry-After (compat.envelope), as for any lost connection.
    # 30 connections kept open (no overflow): a connection opened under load and closed when
    # the load dips costs the database a backend, the driver's type introspection and a fresh
    # plan of every statement it runs.
    return create_async_engine(
        url, echo=echo, pool_pre_ping=False, pool_size=30, max_overflow=0, **json
    )


def _json_text(value: Any) -> str:
    """JSON columns written with orjson (several times faster than the standard library, which
    every label, payload and audit entry goes through); keys that are not text become text,
    as the standard library does."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


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
    """A read-only connection (one consistent snapshot on PostgreSQL and SQLite/WAL)."""
    async with engine.connect() as connection, connection.begin():
        yield connection


Key = tuple[Any, ...]


class Sync:
    """Brings a table in line with a desired set of rows, matched on a business key.

    Ids of rows that stay are kept (partners cache them); changed columns are updated, new rows
    inserted, and rows no longer wanted are deleted by :meth:`delete_stale`, which runs the
    deletions in reverse order of the syncs so children go before their parents.
    """

    def __init__(self, connection: AsyncConnection, institution_id: int) -> None:
        self.connection = connection
        self.institution_id = institution_id
        self.changes = 0
        self._stale: list[tuple[sa.Table, list[int]]] = []

    async def rows(
        self,
        table: sa.Table,
        key: tuple[str, ...],
        desired: list[dict[str, Any]],
        *,
        where: sa.ColumnElement[bool] | None = None,
    ) -> dict[Key, int]:
        columns = [c for c in desired[0] if c not in key] if desired else []
        query = sa.select(table.c.id, *(table.c[k] for k in key), *(table.c[c] for c in columns))
        query = query.where(table.c.institution_id == self.institution_id)
        if where is not None:
            query = query.where(where)
        existing: dict[Key, tuple[int, tuple[Any, ...]]] = {}
        for row in (await self.connection.execute(query)).all():
            existing[tuple(row[1 : 1 + len(key)])] = (row[0], tuple(row[1 + len(key) :]))

        ids: dict[Key, int] = {}
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for values in desired:
            row_key = tuple(values[k] for k in key)
            if row_key in ids:  # duplicates are refused by validation; keep the first
                continue
            found = existing.get(row_key)
            if found is None:
                inserts.append({"institution_id": self.institution_id, **values})
                ids[row_key] = -1
                continue
            ids[row_key] = found[0]
            if tuple(values[c] for c in columns) != found[1]:
                updates.append({"_id": found[0], **{c: values[c] for c in columns}})
        if inserts:
            insert = sa.insert(table).returning(table.c.id, *(table.c[k] for k in key))
            for row in (await self.connection.execute(insert, inserts)).all():
                ids[tuple(row[1:])] = row[0]
        if updates:
            update = (
                sa.update(table)
                .where(table.c.id == sa.bindparam("_id"))
                .values({c: sa.bindparam(c) for c in columns})
            )
            await self.connection.execute(update, updates)
        stale = [found[0] for row_key, found in existing.items() if row_key not in ids]
        if stale:
            self._stale.append((table, stale))
        self.changes += len(inserts) + len(updates) + len(stale)
        return ids

    async def delete_stale(self) -> None:
        """Delete the rows no longer wanted; :class:`~billetterie.shared.errors.InUse` (and
        nothing deleted) when records still point at one of them."""
        for table, ids in self._stale:
            await self._refuse_in_use(table, ids)
        for table, ids in reversed(self._stale):
            for chunk in _chunks(ids):
                await self.connection.execute(sa.delete(table).where(table.c.id.in_(chunk)))
        self._stale.clear()

    async def _refuse_in_use(self, table: sa.Table, ids: list[int]) -> None:
        """Records are the rows of the tables marked ``info={"records": "<what>"}`` (an order,
        a hold, a stock with places held or sold): history a setup change must never delete.
        Their foreign keys to ``table`` cascade or restrict, so a stale row they point at is
        refused here, by name."""
        for column, what, amount in _records_pointing_at(table):
            for chunk in _chunks(ids):
                query = (
                    sa.select(column, amount)
                    .where(column.in_(chunk))
                    .group_by(column)
                    .having(amount > 0)  # a stock is a record only while it counts places
                    .order_by(column)
                    .limit(1)
                )
                used = (await self.connection.execute(query)).first()
                if used is not None:
                    raise InUse(
                        f"{table.name.replace('_', ' ')} {await self._name(table, used[0])}"
                        f" has {what} ({used[1]}): keep it in the setup",
                        table=table.name,
                    )

    async def _name(self, table: sa.Table, row_id: int) -> str:
        if "code" not in table.c:
            return f"#{row_id}"
        code = (
            await self.connection.execute(sa.select(table.c.code).where(table.c.id == row_id))
        ).scalar_one()
        return str(code)


def _chunks(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _records_pointing_at(
    table: sa.Table,
) -> Iterator[tuple[sa.Column[Any], str, sa.ColumnElement[Any]]]:
    """The columns of record tables that point at ``table`` (a foreign key, or
    ``info={"names": "<table>"}`` on a column without one), with what their rows are called and
    what the rows amount to (``info["records_count"]`` of their table, an aggregate; else
    how many there are)."""
    for other in table.metadata.tables.values():
        what = other.info.get("records")
        if what is None:
            continue
        amount = other.info.get("records_count", sa.func.count())
        for column in other.columns:
            if column.info.get("names") == table.name or any(
                key.column.table is table for key in column.foreign_keys
            ):
                yield column, what, amount


_engine_caches: weakref.WeakKeyDictionary[Any, dict[str, dict[Any, Any]]] = (
    weakref.WeakKeyDictionary()
)


def engine_cache(conn: AsyncConnection, name: str, *, limit: int = 4096) -> dict[Any, Any]:
    """A per-process cache of ``name`` for the database ``conn`` is connected to (two
    databases in one process, as in tests, never share entries). Emptied when it reaches
    ``limit`` entries; keys must carry what makes an entry valid (a setup version)."""
    caches = _engine_caches.get(conn.sync_engine)
    if caches is None:
        caches = _engine_caches[conn.sync_engine] = {}
    cache = caches.setdefault(name, {})
    if len(cache) >= limit:
        cache.clear()
    return cache
