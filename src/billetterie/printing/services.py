"""Printing use cases: the interfaces (setup file and CLI), the execution log, the schedule.

Contracts:

- :func:`sync_interfaces` runs in the setup import's transaction; an interface keeps its
  API key when the document gives none (keys are never exported) and a new one must bring one.
- :func:`configure_interface` creates or changes one interface (the CLI), audited.
- :func:`claim_due` is the schedule: a conditional update moves a function's ``next_run_at``
  forward, so of several processes running the loops exactly one starts each run.
- :func:`start_execution` / :func:`finish_execution` write the execution log, one row a run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.catalog.services import products_by_code
from billetterie.printing import db
from billetterie.printing.errors import InvalidCursor, InvalidInterface, UnknownInterface
from billetterie.printing.models import (
    DEFAULT_SCHEDULE,
    MAX_BATCH,
    Counts,
    Execution,
    ExecutionStatus,
    Function,
    Interface,
    InterfaceType,
)
from billetterie.shared import audit
from billetterie.shared.db import read, transaction

URL = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?/organizer/tickets$")
MIN_EVERY, MAX_EVERY = 10, 86400
MAX_PAGE = 200


@dataclass(frozen=True)
class InterfaceSpec:
    code: str
    organization_id: int
    url: str
    login: str
    api_key: str | None  # None: keep the current one
    products: tuple[str, ...]
    schedule: dict[str, int] = field(default_factory=dict)
    batch_size: int = MAX_BATCH
    enabled: bool = True
    type: str = InterfaceType.WALLET.value


def check_spec(spec: InterfaceSpec) -> list[tuple[str, str]]:
    """What is wrong with ``spec`` as ``(field, message)`` (empty when nothing)."""
    problems: list[tuple[str, str]] = []
    if spec.type not in {t.value for t in InterfaceType}:
        problems.append(("type", "must be WALLET"))
    if not URL.match(spec.url) or len(spec.url) > 2000:
        problems.append(("url", "an http(s) URL ending with organizer/tickets"))
    if not 1 <= len(spec.login) <= 128:
        problems.append(("login", "1 to 128 characters"))
    if spec.api_key is not None and not 16 <= len(spec.api_key) <= 255:
        problems.append(("apiKey", "16 to 255 characters"))
    if not 1 <= spec.batch_size <= MAX_BATCH:
        problems.append(("batchSize", f"between 1 and {MAX_BATCH}"))
    for name, every in spec.schedule.items():
        if name not in {f.value for f in Function}:
            problems.append((f"schedule.{name}", "unknown function"))
        elif not MIN_EVERY <= every <= MAX_EVERY:
            problems.append((f"schedule.{name}", f"between {MIN_EVERY} and {MAX_EVERY} seconds"))
    return problems


def _interface(row: Any) -> Interface:
    return Interface(
        id=row.id,
        institution_id=row.institution_id,
        organization_id=row.organization_id,
        code=row.code,
        type=InterfaceType(row.type),
        url=row.url,
        login=row.login,
        api_key=row.api_key,
        products=tuple(row.products),
        schedule={Function(k): int(v) for k, v in (row.schedule or {}).items()},
        batch_size=row.batch_size,
        enabled=row.enabled,
    )


def _values(spec: InterfaceSpec, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {
        "organization_id": spec.organization_id,
        "type": spec.type,
        "url": spec.url,
        "login": spec.login,
        "products": list(dict.fromkeys(spec.products)),
        "schedule": {Function(k).value: v for k, v in sorted(spec.schedule.items())},
        "batch_size": spec.batch_size,
        "enabled": spec.enabled,
    }
    if spec.api_key is not None:
        values["api_key"] = spec.api_key
    return values


async def _write(
    conn: AsyncConnection, institution_id: int, spec: InterfaceSpec, row: Any, now: datetime
) -> tuple[int, bool]:
    """Insert or update one interface; returns its id and whether anything changed."""
    problems = check_spec(spec)
    known = await products_by_code(conn, institution_id, spec.products)
    problems += [("products", f"unknown product {c}") for c in spec.products if c not in known]
    if row is None and spec.api_key is None:
        problems.append(("apiKey", "required for a new interface"))
    if problems:
        raise InvalidInterface(
            "; ".join(f"{name}: {message}" for name, message in problems),
            problems=problems,
            interface=spec.code,
        )
    values = _values(spec, now)
    p = db.printing_interface.c
    if row is None:
        interface_id = (
            await conn.execute(
                sa.insert(db.printing_interface)
                .values(
                    institution_id=institution_id,
                    code=spec.code,
                    created_at=now,
                    updated_at=now,
                    **values,
                )
                .returning(p.id)
            )
        ).scalar_one()
        return int(interface_id), True
    if all(getattr(row, column) == value for column, value in values.items()):
        return row.id, False
    await conn.execute(
        sa.update(db.printing_interface).where(p.id == row.id).values(updated_at=now, **values)
    )
    # A changed schedule applies from now on.
    await conn.execute(
        sa.delete(db.printing_schedule).where(db.printing_schedule.c.interface_id == row.id)
    )
    return row.id, True


async def _rows(conn: AsyncConnection, institution_id: int) -> dict[str, Any]:
    p = db.printing_interface.c
    rows = await conn.execute(
        sa.select(db.printing_interface).where(p.institution_id == institution_id)
    )
    return {r.code: r for r in rows}


async def sync_interfaces(
    conn: AsyncConnection,
    institution_id: int,
    specs: Sequence[InterfaceSpec],
    *,
    now: datetime,
) -> int:
    """Make the institution's interfaces those of ``specs`` (by code; others deleted, with
    their log). The caller owns the transaction. Returns how many rows changed. Raises
    :class:`InvalidInterface`."""
    existing = await _rows(conn, institution_id)
    changes = 0
    for spec in specs:
        _, changed = await _write(conn, institution_id, spec, existing.pop(spec.code, None), now)
        changes += changed
    if existing:
        ids = [r.id for r in existing.values()]
        p = db.printing_interface.c
        await conn.execute(sa.delete(db.printing_interface).where(p.id.in_(ids)))
        changes += len(ids)
    return changes


async def configure_interface(
    engine: AsyncEngine, institution_id: int, spec: InterfaceSpec, *, now: datetime, actor: str
) -> Interface:
    """Create or change one interface (matched by code). Raises :class:`InvalidInterface`."""
    async with transaction(engine) as conn:
        row = (await _rows(conn, institution_id)).get(spec.code)
        interface_id, changed = await _write(conn, institution_id, spec, row, now)
        if changed:
            await audit.record(
                conn,
                institution_id=institution_id,
                action="printing.interface.configured",
                actor=actor,
                at=now,
                code=spec.code,
                created=row is None,
            )
        found = await interface(conn, institution_id, interface_id)
    assert found is not None
    return found


async def list_interfaces(
    conn: AsyncConnection, institution_id: int | None = None
) -> list[Interface]:
    """The institution's interfaces by code (every institution's when ``None``)."""
    p = db.printing_interface.c
    query = sa.select(db.printing_interface).order_by(p.institution_id, p.code)
    if institution_id is not None:
        query = query.where(p.institution_id == institution_id)
    return [_interface(r) for r in await conn.execute(query)]


async def interface(
    conn: AsyncConnection, institution_id: int, interface_id: int
) -> Interface | None:
    p = db.printing_interface.c
    row = (
        await conn.execute(
            sa.select(db.printing_interface).where(
                p.institution_id == institution_id, p.id == interface_id
            )
        )
    ).first()
    return None if row is None else _interface(row)


async def interface_by_code(conn: AsyncConnection, institution_id: int, code: str) -> Interface:
    row = (await _rows(conn, institution_id)).get(code)
    if row is None:
        raise UnknownInterface(f"no printing interface {code}")
    return _interface(row)


# --- the schedule ----------------------------------------------------------------------------


async def claim_due(engine: AsyncEngine, function: Function, now: datetime) -> list[Interface]:
    """The enabled interfaces whose ``function`` is due at ``now``, each claimed (its next run
    moved to ``now + every``) by this caller only. An interface never run is due at once. A
    cheap read first: nothing is written when nothing is due."""
    s = db.printing_schedule.c
    async with read(engine) as conn:
        interfaces = [i for i in await list_interfaces(conn) if i.enabled]
        if not interfaces:
            return []
        next_runs = {
            r.interface_id: r.next_run_at
            for r in await conn.execute(
                sa.select(s.interface_id, s.next_run_at).where(
                    s.function == function.value, s.interface_id.in_([i.id for i in interfaces])
                )
            )
        }
    due = [i for i in interfaces if i.id not in next_runs or next_runs[i.id] <= now]
    if not due:
        return []
    claimed: list[Interface] = []
    async with transaction(engine) as conn:
        for item in due:
            following = now + timedelta(seconds=item.every(function))
            if item.id not in next_runs:
                try:
                    async with conn.begin_nested():
                        await conn.execute(
                            sa.insert(db.printing_schedule).values(
                                institution_id=item.institution_id,
                                interface_id=item.id,
                                function=function.value,
                                next_run_at=following,
                            )
                        )
                except IntegrityError:
                    continue  # another process claimed its first run
                claimed.append(item)
                continue
            moved = await conn.execute(
                sa.update(db.printing_schedule)
                .where(
                    s.interface_id == item.id,
                    s.function == function.value,
                    s.next_run_at <= now,
                )
                .values(next_run_at=following)
            )
            if moved.rowcount == 1:
                claimed.append(item)
    return claimed


# --- the execution log ----------------------------------------------------------------------


async def start_execution(
    engine: AsyncEngine, item: Interface, function: Function, *, trigger: str, now: datetime
) -> int:
    async with transaction(engine) as conn:
        execution_id = (
            await conn.execute(
                sa.insert(db.printing_execution)
                .values(
                    institution_id=item.institution_id,
                    interface_id=item.id,
                    interface_code=item.code,
                    function=function.value,
                    trigger=trigger,
                    status=ExecutionStatus.RUNNING.value,
                    started_at=now,
                    sent=0,
                    accepted=0,
                    failed=0,
                )
                .returning(db.printing_execution.c.id)
            )
        ).scalar_one()
    return int(execution_id)


async def finish_execution(
    engine: AsyncEngine,
    execution_id: int,
    counts: Counts,
    *,
    error: str | None,
    now: datetime,
) -> ExecutionStatus:
    if error is not None:
        status = ExecutionStatus.FAILED
    elif counts.failed:
        status = ExecutionStatus.PARTIAL
    else:
        status = ExecutionStatus.SUCCEEDED
    details = ([error] if error else []) + counts.errors
    async with transaction(engine) as conn:
        await conn.execute(
            sa.update(db.printing_execution)
            .where(db.printing_execution.c.id == execution_id)
            .values(
                status=status.value,
                finished_at=now,
                sent=counts.sent,
                accepted=counts.accepted,
                failed=counts.failed,
                error="\n".join(details)[:4000] or None,
            )
        )
    return status


def _execution(row: Any) -> Execution:
    return Execution(
        id=row.id,
        interface_id=row.interface_id,
        interface_code=row.interface_code,
        function=Function(row.function),
        trigger=row.trigger,
        status=ExecutionStatus(row.status),
        started_at=row.started_at,
        finished_at=row.finished_at,
        sent=row.sent,
        accepted=row.accepted,
        failed=row.failed,
        error=row.error,
    )


@dataclass(frozen=True)
class ExecutionPage:
    executions: list[Execution]
    next_cursor: int | None


async def list_executions(
    conn: AsyncConnection,
    institution_id: int | None,
    *,
    function: Function | None = None,
    interface_code: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> ExecutionPage:
    """The execution log, newest first; ``next_cursor`` is passed back as ``before``."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidCursor(f"limit is 1 to {MAX_PAGE}")
    e = db.printing_execution.c
    query = sa.select(db.printing_execution).order_by(e.id.desc()).limit(limit + 1)
    if institution_id is not None:
        query = query.where(e.institution_id == institution_id)
    if function is not None:
        query = query.where(e.function == function.value)
    if interface_code is not None:
        query = query.where(e.interface_code == interface_code)
    if before is not None:
        query = query.where(e.id < before)
    rows = (await conn.execute(query)).all()
    page = rows[:limit]
    return ExecutionPage(
        executions=[_execution(r) for r in page],
        next_cursor=page[-1].id if len(rows) > limit else None,
    )


def default_schedule() -> dict[str, int]:
    return {f.value: every for f, every in DEFAULT_SCHEDULE.items()}
