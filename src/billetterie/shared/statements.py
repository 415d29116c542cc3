"""Hot statements: built once, compiled once per process, run on PostgreSQL by the driver.

Most of the CPU an on-sale rush costs the server went into running SQLAlchemy Core for each
statement, not into the database: building the statement, its cache key, the execution context,
the result. ``bench/statements.py`` measures the difference on the sale path's own statements
(about half the user CPU of each); a cart and its close run about 30.

A :class:`Statement` is declared at module level from a function that builds the SQLAlchemy
statement with named :func:`sqlalchemy.bindparam` s, so the SQL stays written once, in Core.
Inside a transaction run :func:`on_driver` on PostgreSQL (the inventory transactions are:
``inventory.services``), it is compiled once for the dialect and executed through asyncpg's
prepared statement cache, its bind and result values going through the same type processors
as SQLAlchemy's; errors are raised as the same ``sqlalchemy.exc`` exceptions. Anywhere else
(SQLite, a reader) it runs through ``AsyncConnection.execute`` as any statement. Its SQL must
not depend on the values: a list is one array parameter (:func:`any_of`), several rows one
:class:`BulkInsert`.
"""

from __future__ import annotations

import contextvars
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["BulkInsert", "Statement", "any_of", "bound", "constant", "on_driver"]

# the connection whose transaction is open on the driver, and that driver connection
_driver: contextvars.ContextVar[tuple[AsyncConnection, Any] | None] = contextvars.ContextVar(
    "billetterie_driver_statements", default=None
)


@asynccontextmanager
async def on_driver(conn: AsyncConnection) -> AsyncIterator[None]:
    """On PostgreSQL, let hot statements on ``conn`` run on its asyncpg connection while the
    block runs (elsewhere, nothing changes). ``conn``'s transaction must already be open on the
    driver: a statement ran through SQLAlchemy in it (SQLAlchemy's asyncpg adapter opens the
    transaction at the first one)."""
    if conn.dialect.name != "postgresql":
        yield
        return
    raw = await conn.get_raw_connection()
    token = _driver.set((conn, raw.driver_connection))
    try:
        yield
    finally:
        _driver.reset(token)


def _driver_of(conn: AsyncConnection) -> Any | None:
    """The driver connection hot statements on ``conn`` run on now, or None."""
    current = _driver.get()
    if current is None or current[0] is not conn:
        return None
    return current[1]


def bound(table: sa.Table, *names: str) -> dict[str, Any]:
    """``{name: bindparam(name)}`` for the columns ``names`` of ``table``: the values of an
    INSERT or UPDATE given at each call."""
    return {name: sa.bindparam(name, type_=table.c[name].type) for name in names}


def constant(value: str) -> Any:
    """``value`` written into the SQL as a literal instead of a bind parameter. A generic plan
    (the inventory transactions run with ``plan_cache_mode = force_generic_plan``) knows a
    literal, so it plans with the column's statistics for that value: a state most rows have
    left (``ACTIVE`` holds, among every hold ever made) is then found through its index
    instead of being planned as the average state. Not for a share that swings between
    analyses (``FREE`` seats: most early in an on-sale, few near sold out). For fixed values
    only (an enum's)."""
    if "'" in value:
        raise ValueError("a constant has no quote")
    return sa.literal_column(f"'{value}'", sa.String())


def any_of(column: Any, name: str, dialect_name: str) -> Any:
    """``column`` is one of the list parameter ``name``: ``= ANY($n)`` with one array parameter
    on PostgreSQL, so the SQL is the same whatever the list's length; an expanding ``IN`` on
    SQLite (where the statement is not run by the driver anyway)."""
    if dialect_name == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(column.type)))
    return column.in_(sa.bindparam(name, expanding=True))


class _Compiled:
    """One statement compiled for asyncpg: its SQL, its parameters in order with their bind
    processors, and a row type with the result processors."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        if compiled.positiontup is None:
            raise TypeError("a hot statement compiles to positional parameters")
        if "POSTCOMPILE" in compiled.string:
            raise TypeError("a hot statement cannot have expanding parameters")
        self.sql = compiled.string
        self.names = list(compiled.positiontup)
        # the constants written in the statement; a parameter left for the call has none
        self.defaults = {
            name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
        }
        self.binders = [
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self.names
        ]
        columns = _result_columns(statement)
        self.row = _row_type([key for key, _ in columns]) if columns else None
        processors = [
            column_type.dialect_impl(dialect).result_processor(dialect, None)
            for _, column_type in columns
        ]
        self.processors = processors if any(p is not None for p in processors) else None

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for name, binder in zip(self.names, self.binders, strict=True):
            value = params[name] if name in params else self.defaults[name]
            values.append(value if binder is None else binder(value))
        return values

    def rows(self, records: Sequence[Any]) -> list[Any]:
        assert self.row is not None
        make = self.row._make
        processors = self.processors
        if processors is None:
            return [make(record) for record in records]
        return [
            make(
                value if process is None else process(value)
                for value, process in zip(record, processors, strict=True)
            )
            for record in records
        ]


def _result_columns(statement: ClauseElement) -> list[tuple[str, sa.types.TypeEngine[Any]]]:
    columns: Any
    if isinstance(statement, sa.Select | sa.CompoundSelect):
        columns = statement.selected_columns
    elif isinstance(statement, sa.sql.dml.UpdateBase) and statement._returning:
        columns = statement.exported_columns
    else:
        return []
    return [(str(key), column.type) for key, column in columns.items()]


class _RowBase:
    """What callers use of a SQLAlchemy ``Row``: attributes, positions and ``_mapping``."""

    __slots__ = ()

    @property
    def _mapping(self) -> dict[str, Any]:
        return self._asdict()  # type: ignore[attr-defined,no-any-return]


def _row_type(keys: list[str]) -> Any:
    base = namedtuple("HotRow", keys, rename=True)  # type: ignore[misc]
    return type("HotRow", (_RowBase, base), {"__slots__": ()})


class Statement:
    """A statement run often on the sale path (see the module's text). ``build(dialect name)``
    returns it with :func:`sqlalchemy.bindparam` s for the values of each call (literal values
    in it are constants); :func:`any_of` writes a list parameter the same way on each dialect."""

    def __init__(self, build: Callable[[str], Any]) -> None:
        self._build = build
        self._statements: dict[str, Any] = {}
        self._compiled: dict[str, _Compiled] = {}

    def statement(self, dialect: Dialect) -> Any:
        built = self._statements.get(dialect.name)
        if built is None:
            built = self._statements[dialect.name] = self._build(dialect.name)
        return built

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = _Compiled(self.statement(dialect), dialect)
        return compiled

    async def rows(self, conn: AsyncConnection, **params: Any) -> list[Any]:
        """Every row of the result."""
        driver = _driver_of(conn)
        if driver is None:
            return list((await conn.execute(self.statement(conn.dialect), params)).all())
        compiled = self._for(conn.dialect)
        records = await _call(conn, compiled, driver.fetch, compiled.arguments(params))
        return compiled.rows(records)

    async def first(self, conn: AsyncConnection, **params: Any) -> Any | None:
        """The first row, or None."""
        found = await self.rows(conn, **params)
        return found[0] if found else None

    async def one(self, conn: AsyncConnection, **params: Any) -> Any:
        """The only row (``sqlalchemy.exc.NoResultFound`` / ``MultipleResultsFound`` else)."""
        found = await self.rows(conn, **params)
        if not found:
            raise sa.exc.NoResultFound("No row was found when one was required")
        if len(found) > 1:
            raise sa.exc.MultipleResultsFound("Multiple rows were found when one was required")
        return found[0]

    async def scalar(self, conn: AsyncConnection, **params: Any) -> Any:
        """The first column of the first row, or None."""
        row = await self.first(conn, **params)
        return None if row is None else row[0]

    async def execute(self, conn: AsyncConnection, **params: Any) -> None:
        """Run it for its effect."""
        driver = _driver_of(conn)
        if driver is None:
            await conn.execute(self.statement(conn.dialect), params)
            return
        compiled = self._for(conn.dialect)
        await _call(conn, compiled, driver.execute, compiled.arguments(params))

    async def execute_many(
        self, conn: AsyncConnection, params: Sequence[Mapping[str, Any]]
    ) -> None:
        """Run it once per parameter set, in one round trip on the driver."""
        if not params:
            return
        driver = _driver_of(conn)
        if driver is None:
            await conn.execute(self.statement(conn.dialect), list(params))
            return
        compiled = self._for(conn.dialect)
        await _call(
            conn, compiled, driver.executemany, [compiled.arguments(p) for p in params], many=True
        )


async def _call(
    conn: AsyncConnection, compiled: _Compiled, method: Any, arguments: Any, *, many: bool = False
) -> Any:
    try:
        if many:
            return await method(compiled.sql, arguments)
        return await method(compiled.sql, *arguments)
    except Exception as error:
        raise _translated(conn, compiled.sql, arguments, error) from error


def _translated(conn: AsyncConnection, sql: str, arguments: Any, error: Exception) -> Exception:
    """The driver's error as SQLAlchemy raises it for the same statement (``IntegrityError``,
    ``OperationalError``... carrying the driver's error as ``orig``), so callers handle both
    paths alike. SQLAlchemy's asyncpg adapter does the translation to DB-API classes."""
    dialect = conn.dialect
    adapter = conn.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    try:
        adapter._handle_exception(error)  # type: ignore[union-attr]
    except Exception as dbapi_error:
        translated: Exception = sa.exc.DBAPIError.instance(
            sql,
            arguments,
            dbapi_error,
            dialect.loaded_dbapi.Error,
            dialect=dialect,
        )
        return translated
    return error


class BulkInsert:
    """Rows inserted into ``table`` in one statement, their ``RETURNING`` rows given back in
    the order of the rows given. On the driver, one ``INSERT ... SELECT unnest(...)`` with one
    array parameter per column, so its SQL is the same whatever the number of rows (PostgreSQL
    gives the rows their ids in that order); elsewhere, SQLAlchemy's multi-row insert."""

    def __init__(self, table: sa.Table, columns: Sequence[str]) -> None:
        self.table = table
        self.columns = list(columns)
        # JSON values go as text (an array type would take a JSON list for a nested array)
        self._json = {name for name in self.columns if isinstance(table.c[name].type, sa.JSON)}
        self._unnest = Statement(self._build)
        self._as_text: dict[str, dict[str, Any]] = {}  # per dialect: JSON column -> processor

    def _array(self, name: str) -> Any:
        column_type = self.table.c[name].type
        if name in self._json:
            texts = sa.bindparam(name, type_=postgresql.ARRAY(sa.Text()))
            return sa.cast(sa.func.unnest(texts), column_type).label(name)
        values = sa.bindparam(name, type_=postgresql.ARRAY(column_type))
        return sa.func.unnest(values).label(name)

    def _json_processors(self, dialect: Dialect) -> dict[str, Any]:
        """How SQLAlchemy writes the value of each JSON column (as text), for ``dialect``."""
        found = self._as_text.get(dialect.name)
        if found is None:
            found = self._as_text[dialect.name] = {
                name: process
                for name in self._json
                if (
                    process := self.table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                )
                is not None
            }
        return found

    def _build(self, _dialect: str) -> Any:
        arrays = [self._array(name) for name in self.columns]
        return (
            sa.insert(self.table)
            .from_select(self.columns, sa.select(*arrays))
            .returning(*self.table.c)
        )

    async def rows(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        if not rows:
            return []
        if _driver_of(conn) is None:
            statement = sa.insert(self.table).returning(*self.table.c, sort_by_parameter_order=True)
            return list((await conn.execute(statement, [dict(r) for r in rows])).all())
        as_text = self._json_processors(conn.dialect)
        params: dict[str, list[Any]] = {}
        for name in self.columns:
            values = [r.get(name) for r in rows]
            process = as_text.get(name)
            params[name] = values if process is None else [process(v) for v in values]
        found = await self._unnest.rows(conn, **params)
        return sorted(found, key=lambda r: r.id)
