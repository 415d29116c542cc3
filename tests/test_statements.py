"""Hot statements (``shared.statements``): the same answers and errors whether SQLAlchemy or
the driver runs them, and the driver runs them only inside a transaction opened for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.catalog import db as catalog_db
from billetterie.shared import statements
from billetterie.shared.audit import audit_entry
from billetterie.shared.db import read, transaction
from billetterie.shared.statements import Statement, any_of, bound
from tests.conftest import NOW

INSERT = Statement(
    lambda _: (
        sa.insert(audit_entry)
        .values(bound(audit_entry, "institution_id", "action", "actor", "at", "data"))
        .returning(audit_entry.c.id, audit_entry.c.at, audit_entry.c.data)
    )
)
SELECT = Statement(
    lambda d: (
        sa.select(audit_entry.c.id, audit_entry.c.action, audit_entry.c.at, audit_entry.c.data)
        .where(any_of(audit_entry.c.id, "ids", d))
        .order_by(audit_entry.c.id)
    )
)
COUNT = Statement(
    lambda _: sa.select(sa.func.count().label("n")).where(
        audit_entry.c.action == sa.bindparam("action", type_=audit_entry.c.action.type)
    )
)
RENAME = Statement(
    lambda d: (
        sa.update(audit_entry)
        .where(any_of(audit_entry.c.id, "ids", d))
        .values(action=sa.bindparam("new_action", type_=audit_entry.c.action.type))
    )
)


@asynccontextmanager
async def hot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction where hot statements run on the driver (PostgreSQL), as the inventory
    transactions open them."""
    async with transaction(engine) as conn:
        await conn.execute(sa.text("SELECT 1"))  # opens the transaction on the driver
        async with statements.on_driver(conn):
            yield conn


async def institution(engine: AsyncEngine) -> int:
    async with transaction(engine) as conn:
        return int(
            (
                await conn.execute(
                    sa.insert(catalog_db.institution)
                    .values(code="HOT", name={"en": "Hot"}, currency="EUR")
                    .returning(catalog_db.institution.c.id)
                )
            ).scalar_one()
        )


def cursor_statements(engine: AsyncEngine) -> list[str]:
    """The statements SQLAlchemy runs on ``engine`` from now on."""
    seen: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    return seen


async def test_the_driver_and_sqlalchemy_give_the_same_rows(scratch_engine: AsyncEngine) -> None:
    institution_id = await institution(scratch_engine)
    entry = {"institution_id": institution_id, "actor": "test", "at": NOW}
    seen = cursor_statements(scratch_engine)
    async with hot(scratch_engine) as conn:
        seen.clear()
        first = await INSERT.one(conn, **entry, action="a", data={"n": 1, "list": [1, 2]})
        await INSERT.execute_many(
            conn,
            [entry | {"action": "b", "data": {"n": 2}}, entry | {"action": "b", "data": {}}],
        )
        ids = [first.id, first.id + 1, first.id + 2, 10**9]
        rows = await SELECT.rows(conn, ids=ids)
        count = await COUNT.scalar(conn, action="b")
        driven = list(seen)
    # on PostgreSQL none of them went through SQLAlchemy's cursor; on SQLite all four did
    if scratch_engine.dialect.name == "postgresql":
        assert driven == []
    else:
        assert len(driven) == 4
    assert (
        first.at == NOW and first.at.tzinfo is not None and first.data == {"n": 1, "list": [1, 2]}
    )
    assert count == 2
    assert [(r.action, r.data) for r in rows] == [("a", first.data), ("b", {"n": 2}), ("b", {})]
    async with read(scratch_engine) as conn:  # a reader: SQLAlchemy runs it
        seen.clear()
        again = await SELECT.rows(conn, ids=ids)
        assert len(seen) == 1
    # what SQLAlchemy's rows give, the hot rows give: positions, attributes, mappings
    assert [tuple(r) for r in again] == [tuple(r) for r in rows]
    assert [r._mapping["action"] for r in again] == [r._mapping["action"] for r in rows]
    assert rows[0][2] == rows[0].at == NOW


async def test_one_first_scalar_and_empty_lists(scratch_engine: AsyncEngine) -> None:
    institution_id = await institution(scratch_engine)
    entry = {"institution_id": institution_id, "actor": "test", "at": NOW, "data": {}}
    async with hot(scratch_engine) as conn:
        made = [await INSERT.one(conn, **entry, action="x") for _ in range(2)]
        with pytest.raises(sa.exc.NoResultFound):
            await SELECT.one(conn, ids=[10**9])
        with pytest.raises(sa.exc.MultipleResultsFound):
            await SELECT.one(conn, ids=[m.id for m in made])
        assert await SELECT.first(conn, ids=[]) is None
        assert await SELECT.rows(conn, ids=[]) == []
        assert (await SELECT.first(conn, ids=[made[1].id])).id == made[1].id
        await RENAME.execute(conn, ids=[made[0].id], new_action="y")
        assert await COUNT.scalar(conn, action="y") == 1


async def test_driver_errors_are_sqlalchemys_and_roll_back(scratch_engine: AsyncEngine) -> None:
    institution_id = await institution(scratch_engine)
    entry = {"institution_id": institution_id, "actor": "test", "at": NOW, "data": {}}
    with pytest.raises(sa.exc.IntegrityError) as raised:
        async with hot(scratch_engine) as conn:
            await INSERT.execute(conn, **entry, action="kept?")
            await INSERT.execute(conn, **(entry | {"institution_id": None}), action="null")
    assert "institution_id" in str(raised.value)
    async with read(scratch_engine) as conn:
        assert await COUNT.scalar(conn, action="kept?") == 0
    with pytest.raises(sa.exc.IntegrityError):
        async with hot(scratch_engine) as conn:
            await INSERT.execute_many(
                conn,
                [entry | {"action": "many"}, entry | {"institution_id": 10**9, "action": "many"}],
            )
    async with read(scratch_engine) as conn:
        assert await COUNT.scalar(conn, action="many") == 0


async def test_a_naive_datetime_is_refused_on_both_paths(scratch_engine: AsyncEngine) -> None:
    """Bind values go through the column types' processors (UtcDateTime refuses naive times)."""
    institution_id = await institution(scratch_engine)
    naive = (NOW + timedelta(minutes=1)).replace(tzinfo=None)
    with pytest.raises((ValueError, sa.exc.StatementError)):
        async with hot(scratch_engine) as conn:
            await INSERT.execute(
                conn, institution_id=institution_id, actor="t", at=naive, action="n", data={}
            )


def test_statements_whose_sql_depends_on_the_values_are_refused() -> None:
    from sqlalchemy.dialects.postgresql import asyncpg

    expanding = Statement(
        lambda _: sa.select(audit_entry.c.id).where(
            audit_entry.c.id.in_(sa.bindparam("ids", expanding=True))
        )
    )
    with pytest.raises(TypeError, match="expanding"):
        expanding._for(asyncpg.dialect())


async def test_a_bulk_insert_gives_back_its_rows_in_order(scratch_engine: AsyncEngine) -> None:
    """One statement whatever the number of rows, on the driver as through SQLAlchemy: the rows
    come back in the order given, with their types (UTC times, JSON, NULLs)."""
    from billetterie.shared.statements import BulkInsert

    institution_id = await institution(scratch_engine)
    bulk = BulkInsert(audit_entry, ["institution_id", "action", "actor", "at", "data"])
    given = [
        {
            "institution_id": institution_id,
            "action": f"bulk {i}",
            "actor": "test",
            "at": NOW + timedelta(seconds=i),
            "data": {"i": i, "none": None} if i % 2 else [i],
        }
        for i in range(5)
    ]
    seen = cursor_statements(scratch_engine)
    for opened in (hot, transaction):  # the driver (on PostgreSQL), then SQLAlchemy
        async with opened(scratch_engine) as conn:
            seen.clear()
            rows = await bulk.rows(conn, given)
            assert await bulk.rows(conn, []) == []
            if conn.dialect.name == "postgresql":  # one statement (SQLite: one per row)
                assert len(seen) == (0 if opened is hot else 1)
        assert [(r.action, r.at, r.data) for r in rows] == [
            (g["action"], g["at"], g["data"]) for g in given
        ]
        assert [r.id for r in rows] == sorted(r.id for r in rows)
