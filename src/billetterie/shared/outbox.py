"""The transactional outbox: background jobs written with the change that calls for them.

A use case calls :func:`enqueue` inside its own transaction, so the job exists exactly when the
change committed. A :class:`Dispatcher` drains the table after commit:

- it **claims** due rows in a short transaction of its own (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL; SQLite serialises writers with ``BEGIN IMMEDIATE``), marking them ``RUNNING``
  with a lease and a claim token; the handler then runs outside any transaction;
- on success it marks the row ``DONE``; on :class:`FinalError` ``FAILED``; on anything else
  (network errors, 5xx, 429 raised by handlers as :class:`RetryLater`, unexpected exceptions)
  it puts the row back to ``PENDING`` with a bounded exponential backoff plus jitter, until
  ``max_attempts`` is reached (then ``FAILED``);
- every finishing write is conditional on the claim token, so a dispatcher whose lease ran out
  (a crashed or frozen process) can never overwrite the outcome of the one that took over.

Several dispatchers in several processes never run one row at the same time: a row is handed
out only while ``PENDING`` (or ``RUNNING`` with an expired lease) and the claim flips it in one
conditional update. Handlers must still be idempotent: a process dying after the handler's
effect but before ``DONE`` runs it again after the lease.

Handlers take the row (ids in ``payload``), reload what they need and must finish within the
lease. PostgreSQL ``NOTIFY billetterie_outbox`` (sent at commit by :func:`enqueue`) wakes the
dispatchers; they also poll every ``poll_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.shared.clock import Clock
from billetterie.shared.db import (
    UtcDateTime,
    id_column,
    institution_column,
    metadata,
    read,
    transaction,
)

log = logging.getLogger("billetterie.outbox")

NOTIFY_CHANNEL = "billetterie_outbox"
PENDING, RUNNING, DONE, FAILED = "PENDING", "RUNNING", "DONE", "FAILED"
STATES = (PENDING, RUNNING, DONE, FAILED)
LOST = "LOST"  # an outcome, not a state: the lease ran out and another dispatcher took the row

outbox = sa.Table(
    "outbox",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("topic", sa.String(64), nullable=False),
    sa.Column("key", sa.String(255), nullable=True),  # deduplicates per (institution, topic)
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("available_at", UtcDateTime, nullable=False),
    sa.Column("locked_until", UtcDateTime, nullable=True),
    sa.Column("claim", sa.String(32), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("institution_id", "topic", "key"),
    sa.Index("ix_outbox_due", "state", "available_at"),
)


@dataclass(frozen=True)
class Job:
    """One claimed outbox row as a handler sees it (``attempt`` counts from 1)."""

    id: int
    institution_id: int
    topic: str
    key: str | None
    payload: dict[str, Any]
    attempt: int
    created_at: datetime


class FinalError(Exception):
    """The job cannot succeed (a 4xx, a subject that no longer exists): mark it failed."""


class RetryLater(Exception):
    """A transient refusal (network error, 5xx, 429): try again; ``retry_after`` seconds when
    the other side said so (bounded by the dispatcher's maximum delay)."""

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


Handler = Callable[[Job], Awaitable[None]]
_handlers: dict[str, Handler] = {}


def register_handler(topic: str, handler: Handler) -> None:
    """Register the handler of ``topic`` (at app build; re-registering replaces it)."""
    _handlers[topic] = handler


def registered_handlers() -> Mapping[str, Handler]:
    return dict(_handlers)


async def enqueue(
    conn: AsyncConnection,
    *,
    institution_id: int,
    topic: str,
    payload: Mapping[str, Any],
    now: datetime,
    key: str | None = None,
    available_at: datetime | None = None,
) -> int | None:
    """Write a job in the caller's transaction; it runs after commit.

    ``payload`` carries ids, not documents (handlers reload). With ``key``, a second job of the
    same institution, topic and key is not written (whatever its state) and None is returned;
    otherwise the new row's id.
    """
    if not topic or len(topic) > 64:
        raise ValueError("an outbox topic is 1 to 64 characters")
    values = {
        "institution_id": institution_id,
        "topic": topic,
        "key": key,
        "payload": dict(payload),
        "state": PENDING,
        "attempts": 0,
        "available_at": available_at or now,
        "created_at": now,
    }
    if key is not None:
        existing = (
            await conn.execute(
                sa.select(outbox.c.id).where(
                    outbox.c.institution_id == institution_id,
                    outbox.c.topic == topic,
                    outbox.c.key == key,
                )
            )
        ).first()
        if existing is not None:
            return None
        # A concurrent writer of the same key loses on the unique constraint; a savepoint keeps
        # the caller's transaction usable.
        try:
            async with conn.begin_nested():
                row_id = (
                    await conn.execute(sa.insert(outbox).values(values).returning(outbox.c.id))
                ).scalar_one()
        except sa.exc.IntegrityError:
            return None
    else:
        row_id = (
            await conn.execute(sa.insert(outbox).values(values).returning(outbox.c.id))
        ).scalar_one()
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, str(institution_id))))
    return int(row_id)


@dataclass(frozen=True)
class Backoff:
    """Delay before attempt ``n + 1`` after ``n`` failed attempts: ``base * 2**(n-1)`` capped
    at ``maximum``, of which a random half is jitter ("equal jitter"), so retries of many rows
    failing together spread out while never waiting more than ``maximum``."""

    base_seconds: float = 2.0
    maximum_seconds: float = 3600.0

    def delay(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        exponent = min(max(failed_attempts - 1, 0), 40)
        full: float = min(self.maximum_seconds, self.base_seconds * float(1 << exponent))
        jitter: float = (rng or random).uniform(0, full / 2)
        return full / 2 + jitter


@dataclass(frozen=True)
class Outcome:
    job_id: int
    state: str  # DONE, PENDING (rescheduled), FAILED, or LOST (claim lost; nothing written)
    error: str | None = None


class Dispatcher:
    """Claims due rows and runs their handlers; see the module docstring for the contract."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        handlers: Mapping[str, Handler] | None = None,
        batch_size: int = 20,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        max_attempts: int = 12,
        backoff: Backoff = Backoff(),
        concurrency: int = 8,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self._handlers = handlers
        self.batch_size = batch_size
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._semaphore = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()

    def handlers(self) -> Mapping[str, Handler]:
        return self._handlers if self._handlers is not None else _handlers

    def notify(self) -> None:
        self._wake.set()

    async def claim(self) -> list[tuple[Job, str]]:
        """Claim up to ``batch_size`` due rows of known topics: ``(job, claim token)``."""
        topics = sorted(self.handlers())
        if not topics:
            return []
        now = self.clock.now()
        token = uuid.uuid4().hex
        o = outbox.c
        due = sa.or_(
            sa.and_(o.state == PENDING, o.available_at <= now),
            sa.and_(o.state == RUNNING, o.locked_until < now),
        )
        candidates = (
            sa.select(o.id)
            .where(due, o.topic.in_(topics))
            .order_by(o.available_at, o.id)
            .limit(self.batch_size)
        )
        # A read first: an idle poll must not take SQLite's write lock (BEGIN IMMEDIATE).
        async with read(self.engine) as conn:
            if (await conn.execute(candidates.limit(1))).first() is None:
                return []
        if self.engine.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        # Two statements, not ``UPDATE ... WHERE id IN (SELECT ... LIMIT n SKIP LOCKED)``:
        # PostgreSQL may evaluate such a subquery more than once and hand out more than n rows.
        async with transaction(self.engine) as conn:
            ids = list((await conn.execute(candidates)).scalars())
            if not ids:
                return []
            claim = (
                sa.update(outbox)
                .where(o.id.in_(ids), due)
                .values(
                    state=RUNNING,
                    claim=token,
                    locked_until=now + self.lease,
                    attempts=o.attempts + 1,
                )
                .returning(
                    o.id, o.institution_id, o.topic, o.key, o.payload, o.attempts, o.created_at
                )
            )
            rows = (await conn.execute(claim)).all()
        jobs = [
            Job(r.id, r.institution_id, r.topic, r.key, dict(r.payload), r.attempts, r.created_at)
            for r in rows
        ]
        return [(job, token) for job in sorted(jobs, key=lambda j: j.id)]

    async def _finish(self, job: Job, token: str, values: dict[str, Any]) -> bool:
        """Record the outcome (conditional on the claim). The handler's effect has happened:
        a database hiccup here is retried for a few seconds rather than left to the lease,
        after which the job would run again."""
        o = outbox.c
        statement = (
            sa.update(outbox)
            .where(o.id == job.id, o.claim == token, o.state == RUNNING)
            .values(**values)
        )

        async def write() -> int:
            async with transaction(self.engine) as conn:
                return int((await conn.execute(statement)).rowcount)

        rowcount = await with_retries(write)
        if rowcount != 1:  # the lease ran out and another dispatcher took the row
            log.warning("outbox row %d: lost its claim before finishing", job.id)
            return False
        return True

    async def run_job(self, job: Job, token: str) -> Outcome:
        handler = self.handlers().get(job.topic)
        error: str | None = None
        retry_after: float | None = None
        try:
            if handler is None:
                raise FinalError(f"no handler for topic {job.topic}")
            await handler(job)
        except FinalError as exc:
            kept = await self._finish(
                job, token, {"state": FAILED, "last_error": _text(exc), **self._released()}
            )
            log.info("outbox row %d (%s) failed: %s", job.id, job.topic, exc)
            return Outcome(job.id, FAILED if kept else LOST, _text(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = _text(exc)
            retry_after = exc.retry_after if isinstance(exc, RetryLater) else None
            if not isinstance(exc, RetryLater):
                log.warning("outbox row %d (%s) raised", job.id, job.topic, exc_info=exc)
        else:
            kept = await self._finish(
                job, token, {"state": DONE, "last_error": None, **self._released()}
            )
            return Outcome(job.id, DONE if kept else LOST)
        if job.attempt >= self.max_attempts:
            kept = await self._finish(
                job, token, {"state": FAILED, "last_error": error, **self._released()}
            )
            return Outcome(job.id, FAILED if kept else LOST, error)
        delay = self.backoff.delay(job.attempt)
        if retry_after is not None:
            delay = min(max(delay, retry_after), self.backoff.maximum_seconds)
        kept = await self._finish(
            job,
            token,
            {
                "state": PENDING,
                "last_error": error,
                "available_at": self.clock.now() + timedelta(seconds=delay),
                "claim": None,
                "locked_until": None,
            },
        )
        return Outcome(job.id, PENDING if kept else LOST, error)

    def _released(self) -> dict[str, Any]:
        return {"claim": None, "locked_until": None, "finished_at": self.clock.now()}

    async def _bounded(self, job: Job, token: str) -> Outcome:
        async with self._semaphore:
            return await self.run_job(job, token)

    async def drain_once(self) -> list[Outcome]:
        """Claim one batch and run it (handlers concurrently, up to ``concurrency``)."""
        claimed = await self.claim()
        if not claimed:
            return []
        return list(await asyncio.gather(*(self._bounded(job, token) for job, token in claimed)))

    async def drain(self, *, max_rounds: int = 1000) -> list[Outcome]:
        """Run batches until no row is due (or ``max_rounds``); for tests and the CLI."""
        outcomes: list[Outcome] = []
        for _ in range(max_rounds):
            batch = await self.drain_once()
            if not batch:
                break
            outcomes.extend(batch)
        return outcomes

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (or cancelled): drain, then wait for NOTIFY or a poll tick."""
        stop = stop or asyncio.Event()
        listener = await self._listen()
        try:
            while not stop.is_set():
                self._wake.clear()  # before draining: a NOTIFY during the drain wakes the next
                try:
                    batch = await self.drain_once()
                except Exception:  # the dispatcher survives a failed round; the next retries
                    log.exception("outbox drain failed")
                    batch = []
                if len(batch) == self.batch_size:
                    continue  # more may be due at once
                waiters = [
                    asyncio.ensure_future(self._wake.wait()),
                    asyncio.ensure_future(stop.wait()),
                ]
                try:
                    await asyncio.wait(
                        waiters, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:  # also when this loop is cancelled: leave no waiter pending
                    for waiter in waiters:
                        waiter.cancel()
                    await asyncio.gather(*waiters, return_exceptions=True)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()

    async def _listen(self) -> Any:
        if self.engine.dialect.name != "postgresql":
            return None
        try:
            import asyncpg  # type: ignore[import-untyped]

            url = self.engine.url.set(drivername="postgresql")
            connection = await asyncpg.connect(url.render_as_string(hide_password=False))
            await connection.add_listener(NOTIFY_CHANNEL, lambda *_: self.notify())
            return connection
        except Exception:  # polling still works without LISTEN
            log.warning(
                "LISTEN %s unavailable; polling every %ss", NOTIFY_CHANNEL, self.poll_seconds
            )
            return None


T = TypeVar("T")
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)


def transient_database_error(exc: BaseException) -> bool:
    """A failure to reach the database (full server, dropped connection, busy SQLite), as
    opposed to an error in the statement itself."""
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        text = str(exc).lower()
        return exc.connection_invalidated or any(
            word in text for word in ("too many", "connect", "locked")
        )
    return False


async def with_retries(write: Callable[[], Awaitable[T]]) -> T:
    """Run a short database write, retrying it for a few seconds on transient failures."""
    for delay in RETRY_DELAYS:
        try:
            return await write()
        except (sa.exc.DBAPIError, OSError) as exc:
            if not transient_database_error(exc):
                raise
            log.warning("database write failed (%s); retrying in %ss", exc, delay)
            await asyncio.sleep(delay)
    return await write()


def _text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:2000]


async def purge_finished(engine: AsyncEngine, now: datetime, *, keep_days: int = 7) -> int:
    """Delete DONE rows finished more than ``keep_days`` ago (FAILED rows stay for operators).
    A periodic task of the worker."""
    cutoff = now - timedelta(days=keep_days)
    async with transaction(engine) as conn:
        result = await conn.execute(
            sa.delete(outbox).where(outbox.c.state == DONE, outbox.c.finished_at < cutoff)
        )
    return int(result.rowcount or 0)


async def pending_count(conn: AsyncConnection, *, topic: str | None = None) -> int:
    query = (
        sa.select(sa.func.count()).select_from(outbox).where(outbox.c.state.in_((PENDING, RUNNING)))
    )
    if topic is not None:
        query = query.where(outbox.c.topic == topic)
    return int((await conn.execute(query)).scalar_one())
