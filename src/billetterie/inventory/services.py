"""Hold, confirm, release and expire places: the one way inventory changes.

Contract of every use case here:

- one short transaction (``BEGIN IMMEDIATE`` on SQLite, ``lock_timeout`` on PostgreSQL);
- the database decides, never a cache: seats move with ``UPDATE ... WHERE state = 'FREE'`` and
  counters with ``UPDATE ... WHERE capacity - held - sold - blocked >= n``; a conditional update
  that loses a race makes the attempt start again (up to ``ATTEMPTS`` times);
- rows are touched in a fixed order — the holds being closed (each claimed with
  ``UPDATE ... WHERE state = 'ACTIVE'``, so it closes once), then seats by id, then stock rows
  by id, then the institution's sequence row last — so two transactions never wait on each
  other in a cycle;
- a lock not obtained within the timeout raises :class:`Busy` ("retry", with Retry-After);
- every touched stock row is written to ``inventory_change`` with the next sequence value, in
  the same transaction;
- holds past ``expires_at`` are released before places are looked for, and by ``expire_holds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.catalog import db as catalog_db
from billetterie.inventory import db
from billetterie.inventory import seat_indexes as indexing
from billetterie.inventory.errors import (
    Busy,
    HoldClosed,
    InvalidQuantity,
    NotAvailable,
    UnknownHold,
    UnknownInventory,
)
from billetterie.inventory.models import HeldPlace, HoldState, SeatState
from billetterie.inventory.seat_indexes import PerformanceSeats, SeatIndexes, indexes_of
from billetterie.shared import audit, commit_work, statements
from billetterie.shared.db import engine_cache, transaction
from billetterie.shared.errors import DomainError
from billetterie.shared.statements import BulkInsert, Statement, any_of, bound, constant

log = logging.getLogger("billetterie.inventory.services")
ATTEMPTS = 5
SEATS_MISSING = "not enough seats together in this category"  # best-available found none
ROUNDS = 8  # proposals of seats within one transaction, after lost races
NOTIFY_CHANNEL = "billetterie_inventory"  # the boards LISTEN on it (inventory.board)
LOCK_TIMEOUT_MS = 3000
# A hold looks for the expired holds on its stocks (and frees their places first) at most this
# often per process and stocks: a hold past its expiry may keep its places this much longer
# (the sweeper releases it meanwhile), and most holds of a rush skip that round trip.
DUE_CHECK_INTERVAL = timedelta(seconds=1)
MAX_QUANTITY = 1000
T = TypeVar("T")


class LostRace(Exception):
    """A conditional update matched fewer rows than expected, round after round: the attempt
    starts again (:func:`in_transaction` runs ``work`` anew). A caller deciding several
    requests in one transaction may instead take the losing request out and run it alone
    (``sales.carts.carts_in``, from the second attempt on: :func:`attempt_number`)."""


@dataclass(frozen=True)
class PlaceRequest:
    """Places wanted in one stock family: a performance's seat category, or a product item
    (and timeslot). ``seat_ids`` (performance seat ids) asks for given seats."""

    quantity: int
    performance_id: int | None = None
    seat_category_id: int | None = None
    product_item_id: int | None = None
    timeslot_id: int | None = None
    seat_ids: tuple[int, ...] = ()
    # best available: look in these blocks first, then anywhere
    preferred_blocks: tuple[int, ...] = ()
    # best available: requests of one hold with the same key, in distinct numbered performances
    # and for the same quantity, sit on the same plan seats at each (a season ticket) when
    # there are such seats together; see _take_same_seats
    same_seats: int | None = None


@dataclass(frozen=True)
class HeldLine:
    stock_id: int
    quantity: int
    seat_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Hold:
    id: int
    cart: str
    state: HoldState
    expires_at: datetime
    lines: tuple[HeldLine, ...] = field(default=())
    # every place held, one per seat or unit, in stock and seat order (as ``held_places``)
    places: tuple[HeldPlace, ...] = field(default=())


# --- plumbing ------------------------------------------------------------------------------


# The transaction's settings, in one round trip: locks wait at most LOCK_TIMEOUT_MS; prepared
# statements run their generic plan (planned once per connection). Left to choose, PostgreSQL
# plans the statements with an array parameter (``= ANY($1)``) anew on every execution, which
# was about a quarter of its CPU in a rush; their generic plans are the same index scans. It
# runs through SQLAlchemy, which opens the transaction on the driver with it (hot statements
# need it open: ``statements.on_driver``); a sale's transaction reads the setup version of its
# institution in the same round trip (:func:`setup_version_read`), the first thing it checks.
_SETTINGS = (
    sa.func.set_config("lock_timeout", f"{LOCK_TIMEOUT_MS}ms", True),
    sa.func.set_config("plan_cache_mode", "force_generic_plan", True),
)
_TRANSACTION_SETTINGS = sa.select(*_SETTINGS)


_TRANSACTION_SETTINGS_AND_VERSION = sa.select(
    *_SETTINGS, catalog_db.setup_version_query().scalar_subquery()
)


async def _set_transaction(conn: AsyncConnection, after: _Afterwards, setup_of: int | None) -> None:
    if conn.dialect.name != "postgresql":
        return
    if setup_of is None:
        await conn.execute(_TRANSACTION_SETTINGS)
    else:
        row = (
            await conn.execute(_TRANSACTION_SETTINGS_AND_VERSION, {"institution_id": setup_of})
        ).one()
        after.setup_version = (setup_of, row[2])


def setup_version_read(institution_id: int) -> int | None:
    """The institution's setup version read by the running :func:`in_transaction` with its
    settings (``setup_of``), or None: the caller reads it itself."""
    after = _afterwards.get()
    if after is None or after.setup_version is None or after.setup_version[0] != institution_id:
        return None
    return after.setup_version[1]


def _is_lock_failure(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return any(
        marker in text
        for marker in (
            "lock timeout",
            "lock_timeout",
            "database is locked",
            "locknotavailable",
            "canceling statement due to lock",
            "deadlock detected",
        )
    )


class _Afterwards:
    """What an attempt's transaction leaves to do once it committed or rolled back (keeping
    the process's seat indexes in step); nothing here may await or fail."""

    def __init__(self, attempt: int = 0) -> None:
        self.attempt = attempt  # of the transaction's attempts (ATTEMPTS), from 0
        self.committed: list[Callable[[], None]] = []
        self.rolled_back: list[Callable[[], None]] = []
        self.setup_version: tuple[int, int] | None = None  # (institution id, version) read
        # performance -> its seat index, caught up with the change log by a hold of this
        # attempt (the next holds of the transaction, a group's carts, use it as it is)
        self.caught_up: dict[int, Any] = {}

    def run(self, *, committed: bool) -> None:
        for action in self.committed if committed else self.rolled_back:
            try:
                action()
            except Exception:  # bookkeeping must never turn a committed change into an error
                log.exception("seat index bookkeeping failed; the indexes concerned are dropped")


Work = Callable[[AsyncConnection, _Afterwards], Any]


GATE_SIZE = 28  # inventory transactions at once per process and database (the pool holds 30)
_gates: weakref.WeakKeyDictionary[Any, dict[asyncio.AbstractEventLoop, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def _gate(engine: AsyncEngine) -> asyncio.Semaphore:
    """A first-come, first-served gate in front of the connection pool. Under an on-sale rush
    many more calls want a transaction than the pool has connections, and a pool's waiters can
    be overtaken by newcomers that find a connection just returned (a few calls then wait for
    seconds while others pass); the semaphore queues them in arrival order instead."""
    per_loop = _gates.get(engine.sync_engine)
    if per_loop is None:
        per_loop = _gates[engine.sync_engine] = {}
    loop = asyncio.get_running_loop()
    gate = per_loop.get(loop)
    if gate is None:
        gate = per_loop[loop] = asyncio.Semaphore(GATE_SIZE)
    return gate


async def _with_retries(engine: AsyncEngine, work: Work, setup_of: int | None = None) -> Any:
    """Run ``work`` in a transaction, again when it loses a race, behind the process's gate
    (:func:`_gate`). On PostgreSQL the rows every sale shares (stock counters, the change
    sequence, accounts) are collected during the transaction and written by the commit itself
    (:mod:`billetterie.shared.commit_work`)."""
    async with _gate(engine):
        return await _attempts(engine, work, setup_of)


async def _attempts(engine: AsyncEngine, work: Work, setup_of: int | None) -> Any:
    for attempt in range(ATTEMPTS):
        after = _Afterwards(attempt)
        token = commit_work.start()
        try:
            async with transaction(engine) as conn:
                await _set_transaction(conn, after, setup_of)
                async with statements.on_driver(conn):
                    with audit.buffered(conn) as entries:
                        result = await work(conn, after)
                    # the entries go with the commit's work (one statement), or alone
                    collector = commit_work.current(conn)
                    if collector is None or not await collector.flush(conn, entries.rows):
                        await audit.write(conn, entries.rows)
        except LostRace:
            after.run(committed=False)
            continue
        except (OperationalError, DBAPIError) as exc:
            after.run(committed=False)
            refused = commit_work.refusal(exc)
            if refused is not None:
                code, error = refused
                if code == "not_available" and attempt < ATTEMPTS - 1:
                    continue  # a counter moved since it was read: look again
                if code == "not_available":
                    raise NotAvailable("not enough places left") from None
                if code == "unknown_inventory":
                    raise UnknownInventory(
                        "the institution's inventory has not been provisioned"
                    ) from None
                if error is not None:
                    raise error from None
                raise
            if _is_lock_failure(exc):
                if "deadlock" in str(exc.orig).lower() and attempt < ATTEMPTS - 1:
                    continue
                raise Busy() from None
            raise
        except BaseException:
            after.run(committed=False)
            raise
        finally:
            commit_work.stop(token)
        after.run(committed=True)
        return result
    raise Busy("too much contention on these places; retry shortly")


_afterwards: contextvars.ContextVar[_Afterwards | None] = contextvars.ContextVar(
    "inventory_afterwards", default=None
)


async def in_transaction(
    engine: AsyncEngine,
    work: Callable[[AsyncConnection], Awaitable[T]],
    *,
    setup_of: int | None = None,
) -> T:
    """Run ``work`` in one inventory transaction (the contract above): locks with a timeout,
    ``Busy`` when one is not obtained, and the whole of ``work`` run again when a conditional
    update loses a race. Callers that change their own tables with places (the sales context)
    pass a ``work`` that calls the ``*_in`` functions below: it must be safe to run again.
    ``setup_of``: an institution whose setup version the transaction reads with its settings
    (:func:`setup_version_read`)."""

    async def run(conn: AsyncConnection, after: _Afterwards) -> T:
        token = _afterwards.set(after)
        try:
            return await work(conn)
        finally:
            _afterwards.reset(token)

    result: T = await _with_retries(engine, run, setup_of)
    return result


def attempt_number() -> int:
    """Which attempt of the running :func:`in_transaction` this is: 0 for the first, one more
    for each time it started again (a lost race, a deadlock)."""
    return _current_afterwards().attempt


def _current_afterwards(*, required: bool = True) -> _Afterwards:
    """The bookkeeping of the running :func:`in_transaction`. Outside one (another context's
    transaction, such as a payment webhook's), changes that only free or sell seats may still
    run: their bookkeeping is dropped and the seat indexes catch up from the change log, since
    an index's watermark only moves over sequences it has seen. Holds need one (their proposed
    seats are reserved in the index until the transaction ends)."""
    after = _afterwards.get()
    if after is None:
        if required:
            raise RuntimeError("hold_places_in runs inside inventory.services.in_transaction")
        return _Afterwards()
    return after


async def next_sequence(conn: AsyncConnection, institution_id: int) -> int:
    """The institution's next change sequence; its row stays locked until commit, so sequence
    order is commit order."""
    q = db.inventory_sequence.c
    value = (
        await conn.execute(
            sa.update(db.inventory_sequence)
            .where(q.institution_id == institution_id)
            .values(value=q.value + 1)
            .returning(q.value)
        )
    ).scalar_one_or_none()
    if value is None:
        raise UnknownInventory("the institution's inventory has not been provisioned")
    return int(value)


async def log_changes(
    conn: AsyncConnection,
    institution_id: int,
    stock_ids: set[int],
    now: datetime,
    *,
    taken: SeatsByStock | None = None,
    freed: SeatsByStock | None = None,
) -> None:
    """Write the counters of ``stock_ids`` under the next sequence value, with the seats the
    transaction ``taken`` and ``freed`` per stock, and (PostgreSQL) NOTIFY the boards; the
    notification is delivered at commit. In a collecting transaction this is done by the
    commit itself, once for every change of the transaction."""
    if not stock_ids:
        return
    collector = commit_work.current(conn)
    if collector is not None:
        collector.log(institution_id, stock_ids, now, taken=taken, freed=freed)
        return
    told = () if taken is None and freed is None else stock_ids
    seats = commit_work.seats_payload(told, taken or {}, freed or {})
    sequence = await next_sequence(conn, institution_id)
    s = db.stock.c
    ordered = sorted(stock_ids)
    for start in range(0, len(ordered), 5000):
        rows = (
            await conn.execute(
                sa.select(
                    s.id, s.product_id, s.performance_id, s.held, s.sold, s.blocked, s.capacity
                ).where(s.id.in_(ordered[start : start + 5000]))
            )
        ).all()
        await conn.execute(
            sa.insert(db.inventory_change),
            [
                {
                    "institution_id": institution_id,
                    "sequence": sequence,
                    "stock_id": r.id,
                    "product_id": r.product_id,
                    "performance_id": r.performance_id,
                    "held": r.held,
                    "sold": r.sold,
                    "blocked": r.blocked,
                    "capacity": r.capacity,
                    "at": now,
                    "seats": seats.get(str(r.id)),
                }
                for r in rows
            ],
        )
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, f"{institution_id}:{sequence}"))
        )


async def _lock_stocks(conn: AsyncConnection, stock_ids: set[int]) -> None:
    """Lock stock rows in id order, before changing them in another order (not needed when
    the commit changes them)."""
    if stock_ids and commit_work.current(conn) is None:
        s = db.stock.c
        await conn.execute(
            sa.select(s.id)
            .where(s.id.in_(sorted(stock_ids)))
            .order_by(s.id)
            .with_for_update(key_share=True)
        )


async def _move_counts(
    conn: AsyncConnection,
    institution_id: int,
    changes: dict[int, tuple[int, int]],
    now: datetime,
) -> None:
    """Apply (held delta, sold delta) per stock, in stock id order; a hold must fit. In a
    collecting transaction, the commit applies them."""
    s = db.stock.c
    collector = commit_work.current(conn)
    for stock_id in sorted(changes):
        held, sold = changes[stock_id]
        if held == 0 and sold == 0:
            continue
        if collector is not None:
            collector.count(institution_id, stock_id, held, sold, check=held + sold > 0, at=now)
            continue
        query = (
            sa.update(db.stock)
            .where(s.id == stock_id)
            .values(held=s.held + held, sold=s.sold + sold)
        )
        if held + sold > 0:
            query = query.where(
                sa.or_(
                    s.capacity.is_(None), s.capacity - s.held - s.sold - s.blocked >= held + sold
                )
            )
        if (await conn.execute(query)).rowcount != 1:
            raise NotAvailable("not enough places left")


# --- seat indexes --------------------------------------------------------------------------


SeatsByPerformance = dict[int, list[int]]  # performance id -> performance seat ids
SeatsByStock = dict[int, list[int]]  # stock id -> performance seat ids


def _apply_own(
    indexes: SeatIndexes,
    *,
    taken: SeatsByPerformance | None = None,
    freed: SeatsByPerformance | None = None,
) -> None:
    """After commit: what the transaction did to indexed seats (the change log says it too,
    for the other processes; applying it again is harmless)."""
    taken, freed = taken or {}, freed or {}
    for performance_id in set(taken) | set(freed):
        entry = indexes.get(performance_id)
        if entry is not None:
            took = set(taken.get(performance_id, ()))
            entry.apply_own(
                taken=took,
                freed=[seat for seat in freed.get(performance_id, ()) if seat not in took],
            )


# --- the statements of every hold and close (shared.statements) -------------------------------


_NEW_HOLD = Statement(
    lambda _: (
        sa.insert(db.hold)
        .values(
            bound(db.hold, "institution_id", "sales_channel_id", "cart", "created_at", "expires_at")
            | {"state": HoldState.ACTIVE.value}
        )
        .returning(db.hold.c.id)
    )
)
_NEW_HOLD_LINE = Statement(
    lambda _: sa.insert(db.hold_line).values(
        bound(db.hold_line, "institution_id", "hold_id", "stock_id", "quantity")
    )
)
_NEW_HOLDS = BulkInsert(
    db.hold, ["institution_id", "sales_channel_id", "cart", "state", "created_at", "expires_at"]
)
_NEW_HOLD_LINES = BulkInsert(db.hold_line, ["institution_id", "hold_id", "stock_id", "quantity"])
_HOLD_LINES = Statement(
    lambda d: sa.select(db.hold_line.c.stock_id, db.hold_line.c.quantity).where(
        any_of(db.hold_line.c.hold_id, "hold_ids", d)
    )
)


def _claim_seats(dialect: str, *, wait: bool) -> Any:
    """Free seats among ``seat_ids`` held by ``hold_id``; those another running transaction
    claimed are skipped (``wait``: waited for)."""
    ps = db.performance_seat.c
    claimable = (
        sa.select(ps.id)
        .where(any_of(ps.id, "seat_ids", dialect), ps.state == SeatState.FREE.value)
        .with_for_update(skip_locked=not wait)
    )
    return (
        sa.update(db.performance_seat)
        .where(ps.id.in_(claimable.scalar_subquery()))
        .where(ps.state == SeatState.FREE.value)
        .values(state=SeatState.HELD.value, hold_id=sa.bindparam("hold_id"))
        .returning(ps.id, ps.block_id, ps.row, ps.number)
    )


_CLAIM = Statement(functools.partial(_claim_seats, wait=False))
_CLAIM_WAITING = Statement(functools.partial(_claim_seats, wait=True))
_UNCLAIM = Statement(  # seats claimed in this transaction, given back
    lambda d: (
        sa.update(db.performance_seat)
        .where(any_of(db.performance_seat.c.id, "seat_ids", d))
        .values(state=SeatState.FREE.value, hold_id=None)
    )
)


def _claim_seats_for_holds(dialect: str) -> Any:
    """Free seats among ``seat_ids``, each held by the hold at its place in ``hold_ids``
    (``pair_ids`` repeats ``seat_ids``); those another running transaction claimed are
    skipped. PostgreSQL only: the claim of a group of carts (:func:`claim_best_seats`)."""
    ps = db.performance_seat.c
    ids = postgresql.ARRAY(sa.BigInteger)
    wanted = sa.select(
        sa.func.unnest(sa.bindparam("pair_ids", type_=ids)).label("seat_id"),
        sa.func.unnest(sa.bindparam("hold_ids", type_=ids)).label("hold_id"),
    ).subquery("wanted")
    claimable = (
        sa.select(ps.id)
        .where(any_of(ps.id, "seat_ids", dialect), ps.state == SeatState.FREE.value)
        .with_for_update(skip_locked=True)
    )
    return (
        sa.update(db.performance_seat)
        .where(ps.id == wanted.c.seat_id)
        .where(ps.id.in_(claimable.scalar_subquery()))
        .where(ps.state == SeatState.FREE.value)
        .values(state=SeatState.HELD.value, hold_id=wanted.c.hold_id)
        .returning(ps.id, ps.block_id, ps.row, ps.number)
    )


_CLAIM_FOR_HOLDS = Statement(_claim_seats_for_holds)


def _claim_holds(dialect: str, *, unexpired: bool) -> Any:
    """Close the active holds among ``hold_ids`` (``unexpired``: not past their expiry)."""
    h = db.hold.c
    claim = sa.update(db.hold).where(
        any_of(h.id, "hold_ids", dialect),
        h.institution_id == sa.bindparam("institution"),
        h.state == HoldState.ACTIVE.value,
    )
    if unexpired:
        claim = claim.where(h.expires_at > sa.bindparam("now", type_=h.expires_at.type))
    return claim.values(
        state=sa.bindparam("state", type_=h.state.type),
        closed_at=sa.bindparam("now", type_=h.closed_at.type),
    ).returning(h.id)


_CLAIM_HOLDS = Statement(functools.partial(_claim_holds, unexpired=False))
_CLAIM_UNEXPIRED_HOLDS = Statement(functools.partial(_claim_holds, unexpired=True))


def _seats_closed(of_holds: Any, *, sold: bool) -> Any:
    """The held seats of the holds ``of_holds`` selects sold, or freed."""
    ps = db.performance_seat.c
    values: dict[str, Any] = (
        {"state": SeatState.SOLD.value}
        if sold
        else {"state": SeatState.FREE.value, "hold_id": None}
    )
    return (
        sa.update(db.performance_seat)
        .where(of_holds, ps.state == SeatState.HELD.value)
        .values(**values)
        .returning(ps.id, ps.performance_id, ps.stock_id)
    )


def _close_seats(dialect: str, *, sold: bool) -> Any:
    """The held seats of ``hold_ids`` sold, or freed."""
    return _seats_closed(any_of(db.performance_seat.c.hold_id, "hold_ids", dialect), sold=sold)


_SELL_SEATS = Statement(functools.partial(_close_seats, sold=True))
_FREE_SEATS = Statement(functools.partial(_close_seats, sold=False))


def _kind(number: int) -> Any:
    return sa.literal_column(str(number), sa.Integer)


def _closing_holds(dialect: str, *, unexpired: bool, sold: bool) -> Any:
    """PostgreSQL: :func:`_claim_holds`, the claimed holds' lines and :func:`_close_seats` for
    them in one statement. Its rows: ``(0, hold id)`` per hold claimed, ``(1, stock id,
    quantity)`` per line and ``(2, seat id, performance id, stock id)`` per seat changed. The
    seats change only if their hold was claimed: a hold's seats change with it alone."""
    claimed = _claim_holds(dialect, unexpired=unexpired).cte("claimed")
    of_claimed = sa.select(claimed.c.id)
    line = db.hold_line.c
    seats = _seats_closed(db.performance_seat.c.hold_id.in_(of_claimed), sold=sold).cte("seats")
    none = sa.cast(sa.null(), sa.BigInteger)
    return sa.union_all(
        sa.select(_kind(0).label("kind"), claimed.c.id.label("a"), none, none),
        sa.select(_kind(1), line.stock_id, sa.cast(line.quantity, sa.BigInteger), none).where(
            line.hold_id.in_(of_claimed)
        ),
        sa.select(_kind(2), seats.c.id, seats.c.performance_id, seats.c.stock_id),
    )


_CLOSING_HOLDS = {
    (unexpired, sold): Statement(functools.partial(_closing_holds, unexpired=unexpired, sold=sold))
    for unexpired in (False, True)
    for sold in (False, True)
}


def _due_holds(dialect: str, *, on_stocks: bool) -> Any:
    """The institution's active holds past their expiry (``on_stocks``: with a line on one of
    ``stock_ids``), the longest expired first, at most ``limit``: in the order of the index
    on (state, expires_at), which a plan then reads from its start (ordered by id, a plan may
    walk the primary key through every hold ever made, hoping to meet due ones early)."""
    h, line = db.hold.c, db.hold_line.c
    query = sa.select(h.id).where(
        h.institution_id == sa.bindparam("institution_id"),
        h.state == constant(HoldState.ACTIVE.value),
        h.expires_at <= sa.bindparam("now", type_=h.expires_at.type),
    )
    if on_stocks:
        query = query.where(
            h.id.in_(sa.select(line.hold_id).where(any_of(line.stock_id, "stock_ids", dialect)))
        )
    return query.order_by(h.expires_at).limit(sa.bindparam("limit", type_=sa.Integer))


_DUE = Statement(functools.partial(_due_holds, on_stocks=False))
_DUE_ON_STOCKS = Statement(functools.partial(_due_holds, on_stocks=True))


# --- expiry --------------------------------------------------------------------------------


class _Closed(NamedTuple):
    holds: list[int]  # closed here
    stocks: set[int]  # their stocks
    seats: SeatsByPerformance  # their seats
    by_stock: SeatsByStock  # the same seats, per stock


async def _close_holds(
    conn: AsyncConnection,
    institution_id: int,
    hold_ids: list[int],
    state: HoldState,
    now: datetime,
    counts: dict[int, tuple[int, int]] | None = None,
    *,
    unexpired: bool = False,
) -> _Closed:
    """Release (or confirm) the holds still active (``unexpired``: and not past their expiry)
    and the institution's: their seats and counters. Returns the holds closed here, the stock
    ids touched and the seats of the closed holds. With ``counts``, the counter changes are
    added there for the caller to apply with its own (stock rows come after every seat)."""
    if not hold_ids:
        return _Closed([], set(), {}, {})
    # Claim the holds first: a hold closes once, even when a confirm, a release, the sweeper
    # and a lazy expiry race for it (the losers wait on the hold row, then match nothing).
    # Then read their lines and change their seats, all in one statement (claimed here, no
    # other transaction changes them: a seat of a hold changes only with its hold). On
    # PostgreSQL the three are one statement, one round trip.
    params = {
        "hold_ids": sorted(hold_ids),
        "institution": institution_id,
        "now": now,
        "state": state.value,
    }
    sold = state == HoldState.CONFIRMED
    lines: list[tuple[int, int]] = []
    changed: list[tuple[int, int, int]] = []
    if conn.dialect.name == "postgresql":
        hold_ids = []
        for kind, a, b, c in await _CLOSING_HOLDS[(unexpired, sold)].rows(conn, **params):
            if kind == 0:
                hold_ids.append(a)
            elif kind == 1:
                lines.append((a, b))
            else:
                changed.append((a, b, c))
        hold_ids.sort()
    else:
        claim = _CLAIM_UNEXPIRED_HOLDS if unexpired else _CLAIM_HOLDS
        hold_ids = sorted(r.id for r in await claim.rows(conn, **params))
        if hold_ids:
            lines = [
                (r.stock_id, r.quantity) for r in await _HOLD_LINES.rows(conn, hold_ids=hold_ids)
            ]
            changed = [
                tuple(r)
                for r in await (_SELL_SEATS if sold else _FREE_SEATS).rows(conn, hold_ids=hold_ids)
            ]
    if not hold_ids:
        return _Closed([], set(), {}, {})
    seats: SeatsByPerformance = {}
    by_stock: SeatsByStock = {}
    for seat_id, performance_id, stock_id in sorted(changed):
        seats.setdefault(performance_id, []).append(seat_id)
        by_stock.setdefault(stock_id, []).append(seat_id)
    changes: dict[int, tuple[int, int]] = {} if counts is None else counts
    for stock_id, quantity in lines:
        held, sold_before = changes.get(stock_id, (0, 0))
        changes[stock_id] = (held - quantity, sold_before + (quantity if sold else 0))
    if counts is None:
        await _move_counts(conn, institution_id, changes, now)
    return _Closed(hold_ids, {stock_id for stock_id, _ in lines}, seats, by_stock)


async def _expire_due(
    conn: AsyncConnection,
    institution_id: int,
    now: datetime,
    *,
    stock_ids: Sequence[int] | None = None,
    limit: int = 500,
    counts: dict[int, tuple[int, int]] | None = None,
) -> _Closed:
    if stock_ids is not None:
        stocks = sorted(set(stock_ids))
        checked = engine_cache(conn, "inventory.due_checked")
        key = (institution_id, tuple(stocks))
        last = checked.get(key)
        if last is not None and last <= now < last + DUE_CHECK_INTERVAL:
            return _Closed([], set(), {}, {})
        found = await _DUE_ON_STOCKS.rows(
            conn, institution_id=institution_id, now=now, stock_ids=stocks, limit=limit
        )
        if not found:
            checked[key] = now
    else:
        found = await _DUE.rows(conn, institution_id=institution_id, now=now, limit=limit)
    hold_ids = sorted(r.id for r in found)
    return await _close_holds(conn, institution_id, hold_ids, HoldState.EXPIRED, now, counts)


async def expire_holds(
    engine: AsyncEngine,
    *,
    now: datetime,
    limit: int = 500,
    seat_indexes: SeatIndexes | None = None,
) -> int:
    """Release every hold past its expiry (the sweeper). Returns how many were released."""
    indexes = indexes_of(engine) if seat_indexes is None else seat_indexes

    async def work(conn: AsyncConnection, after: _Afterwards) -> int:
        h = db.hold.c
        due = (
            await conn.execute(
                sa.select(h.institution_id, sa.func.count())
                .where(h.state == constant(HoldState.ACTIVE.value), h.expires_at <= now)
                .group_by(h.institution_id)
            )
        ).all()
        released = 0
        for institution_id, _ in sorted(due):
            closed = await _expire_due(conn, institution_id, now, limit=limit)
            for hold_id in closed.holds:
                await audit.record(
                    conn,
                    institution_id=institution_id,
                    action="inventory.hold.expired",
                    actor="sweeper",
                    at=now,
                    hold_id=hold_id,
                )
            await log_changes(conn, institution_id, closed.stocks, now, freed=closed.by_stock)
            after.committed.append(functools.partial(_apply_own, indexes, freed=closed.seats))
            released += len(closed.holds)
        return released

    result: int = await _with_retries(engine, work)
    return result


# --- hold ----------------------------------------------------------------------------------


_STOCK_COLUMNS = sa.select(
    db.stock.c.id,
    db.stock.c.numbered,
    db.stock.c.contingent_id,
    db.stock.c.capacity,
    db.stock.c.product_id,
    db.stock.c.performance_id,
    db.stock.c.seat_category_id,
    db.stock.c.product_item_id,
    db.stock.c.timeslot_id,
)
_PERFORMANCE_STOCKS = Statement(
    lambda _: _STOCK_COLUMNS.where(
        db.stock.c.institution_id == sa.bindparam("institution_id"),
        db.stock.c.performance_id == sa.bindparam("performance_id"),
        db.stock.c.seat_category_id == sa.bindparam("seat_category_id"),
    )
)


async def _candidate_stocks(
    conn: AsyncConnection,
    institution_id: int,
    sales_channel_id: int,
    request: PlaceRequest,
    contingent_ids: Sequence[int],
    setup_version: int = 0,
) -> list[Any]:
    """The stocks a channel may take the request from: its contingents first, then the pool.
    With ``setup_version`` (read in the caller's transaction), the stocks of a request are read
    once per process and version: stocks change only with the setup."""
    key = (
        institution_id,
        setup_version,
        request.performance_id,
        request.seat_category_id,
        request.product_item_id,
        request.timeslot_id,
    )
    cache = engine_cache(conn, "inventory.stocks") if setup_version else None
    found = None if cache is None else cache.get(key)
    if found is None:
        found = await _stocks_of(conn, institution_id, request)
        if cache is not None:
            cache[key] = found
    rows = [r for r in found if r.contingent_id is None or r.contingent_id in contingent_ids]
    if not rows:
        raise UnknownInventory("no such places for this sales channel")
    return sorted(rows, key=lambda r: (r.contingent_id is None, r.id))


async def _stocks_of(
    conn: AsyncConnection, institution_id: int, request: PlaceRequest
) -> list[Any]:
    if request.performance_id is not None:
        if request.seat_category_id is None:
            raise InvalidQuantity("a seat category is required with a performance")
        found = await _PERFORMANCE_STOCKS.rows(
            conn,
            institution_id=institution_id,
            performance_id=request.performance_id,
            seat_category_id=request.seat_category_id,
        )
    elif request.product_item_id is not None:
        s = db.stock.c
        query = _STOCK_COLUMNS.where(
            s.institution_id == institution_id, s.product_item_id == request.product_item_id
        )
        query = query.where(
            s.timeslot_id == request.timeslot_id
            if request.timeslot_id is not None
            else s.timeslot_id.is_(None)
        )
        found = list((await conn.execute(query)).all())
    else:
        raise InvalidQuantity("name a performance and seat category, or a product item")
    return found


def _drop(counter: Counter[int], seat_ids: list[int]) -> None:
    counter.subtract(seat_ids)
    for seat_id in seat_ids:
        if counter[seat_id] <= 0:
            del counter[seat_id]


def _drop_from(seat_ids: list[int], dropped: Collection[int]) -> None:
    """Remove ``dropped`` from ``seat_ids`` (each once), in place."""
    left = Counter(dropped)
    kept = []
    for seat_id in seat_ids:
        if left[seat_id] > 0:
            left[seat_id] -= 1
        else:
            kept.append(seat_id)
    seat_ids[:] = kept


class _Picker:
    """The seat indexes one hold attempt uses, the seats it reserved there, and the seats of
    the holds it expired (free as its transaction sees them)."""

    def __init__(self, indexes: SeatIndexes, institution_id: int, after: _Afterwards) -> None:
        self.indexes = indexes
        self.institution_id = institution_id
        self.entries: dict[int, PerformanceSeats] = {}
        self.mine: dict[int, Counter[int]] = {}  # performance -> seats reserved here
        self.taken: SeatsByPerformance = {}  # performance -> seats held in this transaction
        self.got: dict[int, set[int]] = {}  # performance -> seats its claims got (and kept)
        self.expired: SeatsByPerformance = {}
        self.details: dict[int, tuple[int, str, str]] = {}  # seat -> block id, row, number
        self.caught_up = after.caught_up
        after.rolled_back.append(self._rolled_back)

    def _rolled_back(self) -> None:
        """What the transaction did to the seats did not happen. The seats its claims got were
        free (a claim takes free seats only) and are free again: the index says so at once.
        The seats of expired holds it released are held again, unless the sweeper or another
        process released them since: those stocks are read again next time."""
        with self._dropping_on_failure():
            self._forget_attempt()

    def _forget_attempt(self) -> None:
        for performance_id, entry in self.entries.items():
            entry.unreserve(list(self.mine.get(performance_id, ())))
            got = self.got.get(performance_id)
            if got:
                entry.mark_free(got)
            entry.dirty.update(
                entry.stock_of[seat_id]
                for seat_id in self.expired.get(performance_id, ())
                if seat_id in entry.stock_of
            )

    def committed(self) -> None:
        with self._dropping_on_failure():
            _apply_own(self.indexes, taken=self.taken, freed=self.expired)
            for performance_id, entry in self.entries.items():
                entry.unreserve(list(self.mine.get(performance_id, ())))

    @contextlib.contextmanager
    def _dropping_on_failure(self) -> Iterator[None]:
        """An index whose bookkeeping failed is not trusted again: the next hold rebuilds it."""
        try:
            yield
        except Exception:
            for performance_id in set(self.entries) | set(self.taken) | set(self.expired):
                self.indexes.drop(performance_id)
            raise

    async def entry(
        self, conn: AsyncConnection, performance_id: int, stock_ids: list[int]
    ) -> PerformanceSeats:
        """The performance's index, up to date as this transaction sees it (as an earlier hold
        of the transaction caught it up: a seat taken since loses its claim, as any race)."""
        entry = self.entries.get(performance_id)
        if entry is not None:
            return entry
        entry = self.indexes.get(performance_id)
        if entry is not None and (
            entry.institution_id != self.institution_id or not set(stock_ids) <= entry.stocks
        ):
            entry.stale = True
        if (
            entry is not None
            and not entry.stale
            and self.caught_up.get(performance_id) is not entry
        ):
            await indexing.refresh(conn, entry)
        if entry is None or entry.stale:
            entry = await self._build(conn, performance_id)
        self.caught_up[performance_id] = entry
        freed = self.expired.get(performance_id)
        if freed:  # released by this transaction: free as it sees them
            entry.mark_free(freed)
        self.entries[performance_id] = entry
        return entry

    async def _build(self, conn: AsyncConnection, performance_id: int) -> PerformanceSeats:
        """Index the performance; when another transaction of this process is building it
        already (the first sales of an on-sale arrive together), wait for that one and catch
        up from the change log instead of reading every seat again."""
        building = self.indexes.building.get(performance_id)
        if building is not None:
            built = await asyncio.shield(building)
            if built is not None and not built.stale:
                await indexing.refresh(conn, built)
                if not built.stale:
                    return built
        future: asyncio.Future[PerformanceSeats | None] = asyncio.get_running_loop().create_future()
        self.indexes.building[performance_id] = future
        built = None
        try:
            built = await indexing.build(conn, self.institution_id, performance_id)
            if built is None:
                raise UnknownInventory("the institution's inventory has not been provisioned")
            return self.indexes.put(built)
        finally:
            future.set_result(built)
            if self.indexes.building.get(performance_id) is future:
                del self.indexes.building[performance_id]

    async def claim(
        self,
        conn: AsyncConnection,
        claim: tuple[int, PerformanceSeats, list[int]],
        hold_id: int,
        *,
        wait: bool = False,
    ) -> set[int]:
        """Hold the proposed seats of ``claim`` (performance id, its index, seats) for
        ``hold_id``: the ones got. They stay reserved in the index until the transaction ends or
        :meth:`give_back`; a seat not got is taken by another transaction (committed, or claimed
        by one still running in another process): not free, whatever the index said, unless a
        transaction of this process claimed it (it stays reserved by that one and follows its
        outcome)."""
        performance_id, entry, seats = claim
        self.reserve(claim)
        got = set()
        for seat_id, block_id, row, number in await (_CLAIM_WAITING if wait else _CLAIM).rows(
            conn, seat_ids=sorted(seats), hold_id=hold_id
        ):
            got.add(seat_id)
            self.details[seat_id] = (block_id, row, number)
        self.got.setdefault(performance_id, set()).update(got)
        if len(got) < len(seats):
            self._lost(performance_id, entry, seats, got)
        return got

    def _lost(
        self, performance_id: int, entry: PerformanceSeats, seats: list[int], got: Collection[int]
    ) -> None:
        """The seats of a claim it did not get are taken elsewhere (suspect), unless a running
        transaction of this process claimed them too: they follow that one's outcome."""
        mine = self.mine[performance_id]
        entry.mark_lost(
            [
                seat_id
                for seat_id in seats
                if seat_id not in got and entry.reserved[seat_id] <= mine[seat_id]
            ]
        )

    async def give_back(
        self,
        conn: AsyncConnection,
        claims: list[tuple[int, PerformanceSeats, list[int]]],
        held: Collection[int],
    ) -> None:
        """Undo :meth:`claim` s, the last one first: the ``held`` seats free again in the
        database (one statement), the reservations ended."""
        if held:
            await _UNCLAIM.execute(conn, seat_ids=sorted(held))
        for performance_id, entry, seats in reversed(claims):
            self.got.get(performance_id, set()).difference_update(seats)
            entry.unreserve(seats)
            _drop(self.mine[performance_id], seats)
            _drop_from(self.taken[performance_id], seats)

    def reserve(self, claim: tuple[int, PerformanceSeats, list[int]]) -> None:
        """Reserve the proposed seats of ``claim`` for this transaction, before they are
        claimed (:meth:`claim_together`): not proposed to anything else meanwhile."""
        performance_id, entry, seats = claim
        entry.reserve(seats)
        self.mine.setdefault(performance_id, Counter()).update(seats)
        self.taken.setdefault(performance_id, []).extend(seats)

    async def claim_together(
        self, conn: AsyncConnection, claims: Sequence[tuple[int, PerformanceSeats, list[int], int]]
    ) -> list[bool]:
        """Claim the reserved seats of ``claims`` (performance id, its index, seats, hold id) in
        one statement: per claim, whether it got all its seats. A claim that did not is given
        back (its seats got freed, in one statement for them all) and the seats it lost are
        marked lost in their index, as :meth:`claim` does."""
        seat_ids = [seat_id for _, _, seats, _ in claims for seat_id in seats]
        rows = await _CLAIM_FOR_HOLDS.rows(
            conn,
            seat_ids=sorted(seat_ids),
            pair_ids=seat_ids,
            hold_ids=[hold_id for _, _, seats, hold_id in claims for _ in seats],
        )
        got: set[int] = set()
        for seat_id, block_id, row, number in rows:
            got.add(seat_id)
            self.details[seat_id] = (block_id, row, number)
        outcomes = []
        lost: list[tuple[int, PerformanceSeats, list[int]]] = []
        held: list[int] = []
        for performance_id, entry, seats, _ in claims:
            kept = [seat_id for seat_id in seats if seat_id in got]
            self.got.setdefault(performance_id, set()).update(kept)
            outcomes.append(len(kept) == len(seats))
            if len(kept) < len(seats):
                self._lost(performance_id, entry, seats, got)
                lost.append((performance_id, entry, seats))
                held += kept
                self.indexes.lost_races += 1
        await self.give_back(conn, lost, held)
        return outcomes

    async def take(
        self,
        conn: AsyncConnection,
        stocks: list[Any],
        request: PlaceRequest,
        hold_id: int,
        split_allowed: bool,
    ) -> list[tuple[int, int]]:
        """Best-available seats for ``request``, held by ``hold_id`` in the database, as
        (seat id, stock id).

        The index proposes; ``UPDATE ... WHERE state = 'FREE'`` decides, skipping (on
        PostgreSQL) seats another running transaction has just claimed instead of waiting for
        its commit. Seats another transaction got are marked taken and the next-best ones
        proposed, in the same transaction; after a second loss the index is refreshed first.
        Seats reserved by other running transactions of this process are proposed last (they
        may roll back). When the index has nothing left, its suspect seats (lost to another
        transaction, which may have rolled back) are read again (``seat_indexes.recheck``), and
        once more, claimed waiting, when a claim skipped seats. Raises NotAvailable, or
        LostRace after ROUNDS proposals.
        """
        assert request.performance_id is not None
        stock_ids = [r.id for r in stocks]
        entry = await self.entry(conn, request.performance_id, stock_ids)
        mine = self.mine.setdefault(request.performance_id, Counter())
        losses = 0
        everything = False  # propose seats reserved elsewhere in this process too
        rechecked = False
        # seats skipped because another running transaction had claimed them: it may still
        # give them up, so before answering "sold out" they are claimed again, waiting
        skipped = False
        wait = False
        # the buyer's preferred blocks first, then anywhere
        choices = (request.preferred_blocks, None) if request.preferred_blocks else (None,)
        for _ in range(ROUNDS):
            picked = None
            for blocks in choices:
                picked = entry.propose(
                    stock_ids,
                    request.quantity,
                    split_allowed=split_allowed,
                    ignore_reserved_except=mine if everything else None,
                    blocks=blocks,
                )
                if picked is not None:
                    break
            if picked is None:
                if not everything and entry.reserved_elsewhere(stock_ids, mine):
                    everything = True
                    continue
                if not rechecked or (skipped and not wait):
                    wait = rechecked
                    rechecked = True
                    if await indexing.recheck(conn, entry, stock_ids):
                        continue
                raise NotAvailable(SEATS_MISSING)
            claim = (request.performance_id, entry, picked)
            got = await self.claim(conn, claim, hold_id, wait=wait)
            if len(got) == len(picked):
                return [(seat_id, entry.stock_of[seat_id]) for seat_id in picked]
            skipped = skipped or not wait
            await self.give_back(conn, [claim], got)
            losses += 1
            self.indexes.lost_races += 1
            if losses == 2:  # more than one seat race: catch up with the log first
                await indexing.refresh(conn, entry)
                if entry.stale:
                    raise LostRace()
        raise LostRace()

    async def lacks(
        self,
        conn: AsyncConnection,
        stocks: list[Any],
        request: PlaceRequest,
        split_allowed: bool,
        now: datetime,
    ) -> bool:
        """Whether :meth:`take` would raise NotAvailable for ``request``, told before anything
        is written: the index has no seats for it, even among those other running
        transactions of this process reserved (they may roll back), its suspect seats read
        again are taken, and no expired hold on these stocks would free some. False
        whenever a seat may be had: the claim decides then."""
        assert request.performance_id is not None
        stock_ids = [r.id for r in stocks]
        entry = await self.entry(conn, request.performance_id, stock_ids)

        def proposal(reserved_too: bool) -> list[int] | None:
            return entry.propose(
                stock_ids,
                request.quantity,
                split_allowed=split_allowed,
                ignore_reserved_except=() if reserved_too else None,
            )

        # seats nobody reserved first: the index's own search, kept from call to call; with
        # the seats reserved by running transactions only when there are none (it takes
        # those seats out of the index and puts them back, and the rows they are in are
        # searched again after each)
        if proposal(False) is not None or proposal(True) is not None:
            return False
        if await indexing.recheck(conn, entry, stock_ids) and proposal(True) is not None:
            return False
        due = await _DUE_ON_STOCKS.rows(
            conn, institution_id=self.institution_id, now=now, stock_ids=sorted(stock_ids), limit=1
        )
        return not due


async def seats_lacking(
    conn: AsyncConnection,
    *,
    institution_id: int,
    sales_channel_id: int,
    contingent_ids: Sequence[int],
    requests: Sequence[PlaceRequest],
    now: datetime,
    split_allowed: bool = False,
    setup_version: int = 0,
) -> bool:
    """Whether :func:`hold_places_in` would refuse ``requests`` for want of seats, found with
    reads only (:meth:`_Picker.lacks`): a group of carts refuses such a cart before it writes
    anything for it, so the rest of the group goes on in the same transaction. Only
    best-available numbered requests are looked at (given seats, the same seats of a season
    ticket and unnumbered places are the hold's to decide); False when unsure."""
    picker: _Picker | None = None
    for request in requests:
        if request.performance_id is None or request.seat_ids or request.same_seats is not None:
            continue
        stocks = await _candidate_stocks(
            conn, institution_id, sales_channel_id, request, contingent_ids, setup_version
        )
        if not stocks[0].numbered:
            continue
        if picker is None:
            picker = _Picker(indexes_of(conn.engine), institution_id, _current_afterwards())
        if await picker.lacks(conn, stocks, request, split_allowed, now):
            return True
    return False


GROUP_CLAIM_ROUNDS = 2  # claims of a group's seats together; what they miss goes to each hold


@dataclass(frozen=True)
class GroupHold:
    """One hold of a group of carts, for :func:`claim_best_seats`: the requests it will give
    :func:`hold_places_in` under ``hold_id``, and where its places may come from."""

    hold_id: int
    requests: Sequence[PlaceRequest]
    sales_channel_id: int
    contingent_ids: Sequence[int]
    split_allowed: bool = False
    setup_version: int = 0


@dataclass
class Claimed:
    """Seats :func:`claim_best_seats` holds already: per (hold id, request index), its seats
    as (seat id, stock id), and where each seat is (block id, row, number)."""

    seats: dict[tuple[int, int], list[tuple[int, int]]] = field(default_factory=dict)
    details: dict[int, tuple[int, str, str]] = field(default_factory=dict)


async def claim_best_seats(
    conn: AsyncConnection, *, institution_id: int, holds: Sequence[GroupHold]
) -> Claimed:
    """Best-available seats for the holds of a group of carts, claimed together: one seat
    proposal per request from the seat indexes, each reserved as it is made so the next one
    differs, then one conditional update for every request's seats (each seat held by its own
    hold). A request that lost a race (another process got one of its seats first) is
    proposed again, in one statement for all such requests, up to GROUP_CLAIM_ROUNDS times.

    What it leaves out goes to :func:`hold_places_in` as if it ran alone (given ``claimed``):
    given seats, the same seats of a season ticket, unnumbered places, a request the indexes
    have no seats for (the hold reads suspect seats again, waits for claims, or refuses), and
    one that kept losing. Runs inside the group's transaction, on PostgreSQL only (SQLite
    runs one cart at a time) and for two requests or more: a single request claims alone."""
    claimed = Claimed()
    if conn.dialect.name != "postgresql":
        return claimed
    # per request to seat: its hold id, its index there, the request, its stocks, whether it
    # may be split
    wanted: list[tuple[int, int, PlaceRequest, list[Any], bool]] = []
    for hold in holds:
        for index, request in enumerate(hold.requests):
            if (
                request.performance_id is None
                or request.seat_ids
                or request.same_seats is not None
                or not 1 <= request.quantity <= MAX_QUANTITY
            ):
                continue
            try:
                stocks = await _candidate_stocks(
                    conn,
                    institution_id,
                    hold.sales_channel_id,
                    request,
                    hold.contingent_ids,
                    hold.setup_version,
                )
            except DomainError:  # the hold refuses it with its own error
                continue
            if stocks and stocks[0].numbered:
                wanted.append((hold.hold_id, index, request, stocks, hold.split_allowed))
    if len(wanted) < 2:
        return claimed
    after = _current_afterwards()
    picker = _Picker(indexes_of(conn.engine), institution_id, after)
    after.committed.append(picker.committed)
    for _ in range(GROUP_CLAIM_ROUNDS):
        claims: list[tuple[int, PerformanceSeats, list[int], int]] = []
        keys: list[tuple[int, int]] = []  # per claim: its hold id and request index
        for hold_id, index, request, stocks, split_allowed in wanted:
            assert request.performance_id is not None
            stock_ids = [stock.id for stock in stocks]
            entry = await picker.entry(conn, request.performance_id, stock_ids)
            picked = None
            for blocks in (request.preferred_blocks or None, None):
                picked = entry.propose(
                    stock_ids, request.quantity, split_allowed=split_allowed, blocks=blocks
                )
                if picked is not None or blocks is None:
                    break
            if picked is None:
                continue  # the hold looks further
            claim = (request.performance_id, entry, picked)
            picker.reserve(claim)
            claims.append((*claim, hold_id))
            keys.append((hold_id, index))
        if not claims:
            break
        outcomes = await picker.claim_together(conn, claims)
        lost = set()
        for key, (_, entry, seats, _), got in zip(keys, claims, outcomes, strict=True):
            if got:
                claimed.seats[key] = [(seat_id, entry.stock_of[seat_id]) for seat_id in seats]
            else:
                lost.add(key)
        wanted = [w for w in wanted if (w[0], w[1]) in lost]
        if not wanted:
            break
    claimed.details = picker.details
    return claimed


async def _take_given_seats(
    conn: AsyncConnection,
    stocks: list[Any],
    request: PlaceRequest,
    hold_id: int,
    details: dict[int, tuple[int, str, str]],
) -> list[tuple[int, int]]:
    ps = db.performance_seat.c
    stock_ids = [r.id for r in stocks]
    wanted = sorted(set(request.seat_ids))
    if len(wanted) != request.quantity:
        raise InvalidQuantity("give as many seats as the quantity, each once")
    rows = (
        await conn.execute(
            sa.select(ps.id, ps.stock_id, ps.state, ps.block_id, ps.row, ps.number).where(
                ps.id.in_(wanted), ps.stock_id.in_(stock_ids)
            )
        )
    ).all()
    if len(rows) != len(wanted):
        raise NotAvailable("some of these seats are not for sale on this channel")
    if any(r.state != SeatState.FREE.value for r in rows):
        raise NotAvailable("some of these seats are taken")
    updated = await conn.execute(
        sa.update(db.performance_seat)
        .where(ps.id.in_(wanted), ps.state == SeatState.FREE.value)
        .values(state=SeatState.HELD.value, hold_id=hold_id)
    )
    if updated.rowcount != len(wanted):
        raise NotAvailable("some of these seats were just taken")
    details.update({r.id: (r.block_id, r.row, r.number) for r in rows})
    return [(r.id, r.stock_id) for r in rows]


def _same_seat_groups(
    requests: Sequence[PlaceRequest], candidates: list[list[Any]]
) -> list[list[int]]:
    """The indexes of the requests to seat on the same plan seats, group by group: best
    available, numbered, sharing a ``same_seats`` key, one quantity, distinct performances, at
    least two (any other group is seated request by request)."""
    keyed: dict[int, list[int]] = {}
    for i, (request, stocks) in enumerate(zip(requests, candidates, strict=True)):
        if request.same_seats is not None and stocks[0].numbered and not request.seat_ids:
            keyed.setdefault(request.same_seats, []).append(i)
    return [
        members
        for members in keyed.values()
        if len(members) > 1
        and len({requests[i].quantity for i in members}) == 1
        and len({requests[i].performance_id for i in members}) == len(members)
    ]


def _aligned_stocks(members: list[list[Any]]) -> list[list[list[int]]]:
    """Stock ids to propose from, per performance: contingent by contingent in the first
    performance's order (the channel's contingents, then the pool) where every performance
    has it, then all of them together (as ``PerformanceSeats.propose``)."""
    keys = [stock.contingent_id for stock in members[0]]
    groups = []
    for key in keys:
        per = [[s.id for s in stocks if s.contingent_id == key] for stocks in members]
        if all(per):
            groups.append(per)
    if len(keys) > 1 or len(groups) != len(keys):
        groups.append([[s.id for s in stocks] for stocks in members])
    return groups


async def _take_same_seats(
    conn: AsyncConnection,
    picker: _Picker,
    requests: Sequence[PlaceRequest],
    candidates: list[list[Any]],
    hold_id: int,
) -> dict[int, list[tuple[int, int]]]:
    """Seat each group of ``same_seats`` requests on the same plan seats at each of its
    performances, held by ``hold_id``: request index -> (seat id, stock id). A group with no
    such seats together is left out (its requests are seated one by one, as any request).

    The indexes propose a common set (``seat_indexes.propose_same``: the buyer's preferred
    blocks first, then anywhere); each performance's part is claimed with the conditional
    update, skipping seats another running transaction holds. When one part falls short, the
    parts already claimed are put back (``FREE``) in the same transaction, the seats lost are
    marked taken and another common set is proposed, so no part of a set stays held alone;
    after a second loss the indexes catch up with the log first. Raises LostRace after ROUNDS
    proposals.
    """
    chosen: dict[int, list[tuple[int, int]]] = {}
    for members in _same_seat_groups(requests, candidates):
        quantity = requests[members[0]].quantity
        preferred = requests[members[0]].preferred_blocks
        choices = (preferred, None) if preferred else (None,)
        performances: list[int] = []
        entries: list[PerformanceSeats] = []
        for i in members:
            performance_id = requests[i].performance_id
            assert performance_id is not None
            performances.append(performance_id)
            entries.append(await picker.entry(conn, performance_id, [r.id for r in candidates[i]]))
        aligned = _aligned_stocks([candidates[i] for i in members])
        for losses in range(ROUNDS):  # proposals lost so far
            picked = next(
                (
                    found
                    for blocks in choices
                    for stock_ids in aligned
                    if (found := indexing.propose_same(entries, stock_ids, quantity, blocks=blocks))
                    is not None
                ),
                None,
            )
            if picked is None:
                break  # no common seats together: seated one by one
            if await _claim_same(conn, picker, hold_id, performances, entries, picked):
                for i, entry, seats in zip(members, entries, picked, strict=True):
                    chosen[i] = [(seat_id, entry.stock_of[seat_id]) for seat_id in seats]
                break
            picker.indexes.lost_races += 1
            if losses == 1:  # a second seat race: catch up with the log first
                for entry in entries:
                    await indexing.refresh(conn, entry)
                    if entry.stale:
                        raise LostRace()
        else:
            raise LostRace()
    return chosen


async def _claim_same(
    conn: AsyncConnection,
    picker: _Picker,
    hold_id: int,
    performances: list[int],
    entries: list[PerformanceSeats],
    picked: list[list[int]],
) -> bool:
    """Hold every part of a common set (one per performance), or none: a part another
    transaction got is marked taken in its index, and the parts held are put back."""
    claims: list[tuple[int, PerformanceSeats, list[int]]] = []
    held: list[int] = []
    for claim in zip(performances, entries, picked, strict=True):
        claims.append(claim)
        got = await picker.claim(conn, claim, hold_id)
        held.extend(got)
        if len(got) < len(claim[2]):
            await picker.give_back(conn, claims, held)
            return False
    return True


def _seat_lines(seats: list[tuple[int, int]]) -> list[HeldLine]:
    per_stock: dict[int, list[int]] = {}
    for seat_id, stock_id in seats:
        per_stock.setdefault(stock_id, []).append(seat_id)
    return [HeldLine(stock_id, len(ids), tuple(sorted(ids))) for stock_id, ids in per_stock.items()]


async def hold_places(
    engine: AsyncEngine,
    *,
    institution_id: int,
    sales_channel_id: int,
    contingent_ids: Sequence[int],
    cart: str,
    requests: Sequence[PlaceRequest],
    expires_at: datetime,
    now: datetime,
    split_allowed: bool = False,
    actor: str = "system",
    seat_indexes: SeatIndexes | None = None,
) -> Hold:
    """:func:`hold_places_in` in a transaction of its own."""
    return await in_transaction(
        engine,
        lambda conn: hold_places_in(
            conn,
            institution_id=institution_id,
            sales_channel_id=sales_channel_id,
            contingent_ids=contingent_ids,
            cart=cart,
            requests=requests,
            expires_at=expires_at,
            now=now,
            split_allowed=split_allowed,
            actor=actor,
            seat_indexes=seat_indexes,
        ),
    )


@dataclass(frozen=True)
class NewHold:
    """A hold to write before its places are held (:func:`new_holds`)."""

    institution_id: int
    sales_channel_id: int
    cart: str
    expires_at: datetime
    now: datetime


async def new_holds(conn: AsyncConnection, holds: Sequence[NewHold]) -> list[int]:
    """Write these holds, still without places, in one statement: their ids, in order. A group
    of carts writes its holds so, then holds each one's places with :func:`hold_places_in`
    (``hold_id``), which must run for each in the same transaction."""
    rows = [
        {
            "institution_id": h.institution_id,
            "sales_channel_id": h.sales_channel_id,
            "cart": h.cart,
            "state": HoldState.ACTIVE.value,
            "created_at": h.now,
            "expires_at": h.expires_at,
        }
        for h in holds
    ]
    return [int(row.id) for row in await _NEW_HOLDS.rows(conn, rows)]


async def write_hold_lines(conn: AsyncConnection, lines: Sequence[Mapping[str, Any]]) -> None:
    """The hold lines :func:`hold_places_in` left to write (``lines``), in one statement."""
    await _NEW_HOLD_LINES.rows(conn, lines)


async def hold_places_in(
    conn: AsyncConnection,
    *,
    institution_id: int,
    sales_channel_id: int,
    contingent_ids: Sequence[int],
    cart: str,
    requests: Sequence[PlaceRequest],
    expires_at: datetime,
    now: datetime,
    split_allowed: bool = False,
    actor: str = "system",
    seat_indexes: SeatIndexes | None = None,
    setup_version: int = 0,
    hold_id: int | None = None,
    lines_to: list[dict[str, Any]] | None = None,
    claimed: Claimed | None = None,
) -> Hold:
    """Hold every requested place for ``cart`` until ``expires_at``, all or nothing.

    ``requests`` lists one :class:`PlaceRequest` per stock family: a performance's seat
    category (best-available for ``quantity`` seats, or the given ``seat_ids``), or a product
    item and timeslot. One hold may cover **several performances**: a season ticket or a
    package takes one place in each of its performances by giving one request per performance,
    e.g. ``[PlaceRequest(1, performance_id=p, seat_category_id=c) for p in performances]``; the
    hold then has one line per stock, every line is confirmed or released together, and when
    one performance lacks a place nothing is held anywhere. Requests sharing a ``same_seats``
    key sit on the same plan seats at each of their performances when there are such seats
    together, else each is seated on its own (:func:`_take_same_seats`).

    Numbered seats are chosen from the process's seat index of each performance
    (``inventory.seat_indexes``; ``seat_indexes`` overrides the process's registry) and
    claimed with a conditional update: the database decides, a lost race proposes the
    next-best seats. Raises NotAvailable (``error.order.availability``) when places are
    missing, Busy on lock timeout or lasting contention, InvalidQuantity / UnknownInventory on
    bad input; nothing is held then. ``setup_version``: the institution's, read in this
    transaction (the stocks are then read once per process and version). ``hold_id``: the
    hold, written by :func:`new_holds` for this cart and expiry (else it is written here);
    ``lines_to``: the hold's lines are added there, for the caller to write with
    :func:`write_hold_lines` before anything reads them (else they are written here);
    ``claimed``: seats :func:`claim_best_seats` holds for ``hold_id`` already, by request index.
    """
    if not requests:
        raise InvalidQuantity("nothing to hold")
    for request in requests:
        if not 1 <= request.quantity <= MAX_QUANTITY:
            raise InvalidQuantity(f"quantity must be between 1 and {MAX_QUANTITY}")
    if expires_at <= now:
        raise InvalidQuantity("a hold must expire in the future")
    indexes = indexes_of(conn.engine) if seat_indexes is None else seat_indexes

    async def work(conn: AsyncConnection, after: _Afterwards, hold_id: int | None) -> Hold:
        if hold_id is None:
            hold_id = await _NEW_HOLD.scalar(
                conn,
                institution_id=institution_id,
                sales_channel_id=sales_channel_id,
                cart=cart,
                created_at=now,
                expires_at=expires_at,
            )
        candidates = [
            await _candidate_stocks(
                conn, institution_id, sales_channel_id, r, contingent_ids, setup_version
            )
            for r in requests
        ]
        # Seats first (those of expired holds, then the new ones), stock rows after them all:
        # the counter changes are gathered in ``counts`` and applied in stock id order.
        counts: dict[int, tuple[int, int]] = {}
        expired = await _expire_due(
            conn,
            institution_id,
            now,
            stock_ids=[s.id for c in candidates for s in c],
            counts=counts,
        )
        picker = _Picker(indexes, institution_id, after)
        picker.expired = expired.seats
        same = await _take_same_seats(conn, picker, requests, candidates, hold_id)
        taken_by_stock: SeatsByStock = {}
        taken_of: list[list[HeldLine]] = []
        for i, (request, stocks) in enumerate(zip(requests, candidates, strict=True)):
            taken: list[HeldLine] = []
            if stocks[0].numbered:
                assert request.performance_id is not None
                if request.seat_ids:
                    seats = await _take_given_seats(conn, stocks, request, hold_id, picker.details)
                    picker.taken.setdefault(request.performance_id, []).extend(
                        seat_id for seat_id, _ in seats
                    )
                elif i in same:
                    seats = same[i]
                elif claimed is not None and (hold_id, i) in claimed.seats:
                    seats = claimed.seats[(hold_id, i)]
                    picker.details.update((s, claimed.details[s]) for s, _ in seats)
                else:
                    seats = await picker.take(conn, stocks, request, hold_id, split_allowed)
                taken = _seat_lines(seats)
                for line in taken:
                    held, sold = counts.get(line.stock_id, (0, 0))
                    counts[line.stock_id] = (held + line.quantity, sold)
                    taken_by_stock.setdefault(line.stock_id, []).extend(line.seat_ids)
            elif request.seat_ids:
                raise InvalidQuantity("these places are not numbered")
            taken_of.append(taken)
        unnumbered = [i for i, stocks in enumerate(candidates) if not stocks[0].numbered]
        await _lock_stocks(conn, set(counts) | {s.id for i in unnumbered for s in candidates[i]})
        if commit_work.current(conn) is not None:
            for i in unnumbered:  # chosen now from the counters, checked again at commit
                taken_of[i] = await _choose_unnumbered(conn, candidates[i], requests[i], counts)
            await _move_counts(conn, institution_id, counts, now)
        else:
            await _move_counts(conn, institution_id, counts, now)
            for i in unnumbered:
                taken_of[i] = await _take_unnumbered(conn, candidates[i], requests[i])
        lines = [line for taken in taken_of for line in taken]
        for expired_id in expired.holds:
            await audit.record(
                conn,
                institution_id=institution_id,
                action="inventory.hold.expired",
                actor=actor,
                at=now,
                hold_id=expired_id,
            )
        line_rows = [
            {
                "institution_id": institution_id,
                "hold_id": hold_id,
                "stock_id": line.stock_id,
                "quantity": line.quantity,
            }
            for line in lines
        ]
        if lines_to is not None:
            lines_to.extend(line_rows)
        else:
            await _NEW_HOLD_LINE.execute_many(conn, line_rows)
        await audit.record(
            conn,
            institution_id=institution_id,
            action="inventory.hold.created",
            actor=actor,
            at=now,
            hold_id=hold_id,
            cart=cart,
            places=sum(line.quantity for line in lines),
        )
        await log_changes(
            conn,
            institution_id,
            {line.stock_id for line in lines} | expired.stocks,
            now,
            taken=taken_by_stock,
            freed=expired.by_stock,
        )
        after.committed.append(picker.committed)
        stock_rows = {stock.id: stock for stocks in candidates for stock in stocks}
        return Hold(
            hold_id,
            cart,
            HoldState.ACTIVE,
            expires_at,
            tuple(lines),
            _places(hold_id, lines, stock_rows, picker.details),
        )

    return await work(conn, _current_afterwards(), hold_id)


async def _take_unnumbered(
    conn: AsyncConnection, stocks: list[Any], request: PlaceRequest
) -> list[HeldLine]:
    """The first stock (contingent, then pool) that has the whole quantity free."""
    if request.seat_ids:
        raise InvalidQuantity("these places are not numbered")
    s = db.stock.c
    for stock in stocks:
        result = await conn.execute(
            sa.update(db.stock)
            .where(s.id == stock.id)
            .where(
                sa.or_(
                    s.capacity.is_(None),
                    s.capacity - s.held - s.sold - s.blocked >= request.quantity,
                )
            )
            .values(held=s.held + request.quantity)
        )
        if result.rowcount == 1:
            return [HeldLine(stock.id, request.quantity)]
    raise NotAvailable("not enough places left")


def _places(
    hold_id: int,
    lines: list[HeldLine],
    stocks: dict[int, Any],
    details: dict[int, tuple[int, str, str]],
) -> tuple[HeldPlace, ...]:
    places: list[HeldPlace] = []
    for line in sorted(lines, key=lambda line: line.stock_id):
        stock = stocks[line.stock_id]
        if line.seat_ids:
            for seat_id in sorted(line.seat_ids):
                block_id, row, number = details[seat_id]
                places.append(
                    HeldPlace.of_stock(
                        hold_id, stock, seat_id=seat_id, block_id=block_id, row=row, number=number
                    )
                )
        else:
            places.extend(HeldPlace.of_stock(hold_id, stock) for _ in range(line.quantity))
    return tuple(places)


async def _choose_unnumbered(
    conn: AsyncConnection,
    stocks: list[Any],
    request: PlaceRequest,
    counts: dict[int, tuple[int, int]],
) -> list[HeldLine]:
    """The first stock (contingent, then pool) whose counters, less what this transaction
    already takes from it, leave the whole quantity; added to ``counts``, which the commit
    applies only if it still fits (else the attempt starts again)."""
    if request.seat_ids:
        raise InvalidQuantity("these places are not numbered")
    s = db.stock.c
    free = {
        r.id: r.free
        for r in (
            await conn.execute(
                sa.select(s.id, (s.capacity - s.held - s.sold - s.blocked).label("free")).where(
                    s.id.in_([stock.id for stock in stocks])
                )
            )
        ).all()
    }
    for stock in stocks:
        held, sold = counts.get(stock.id, (0, 0))
        left = free.get(stock.id)
        if stock.id in free and (left is None or left - held - sold >= request.quantity):
            counts[stock.id] = (held + request.quantity, sold)
            return [HeldLine(stock.id, request.quantity)]
    raise NotAvailable("not enough places left")


# --- confirm / release -------------------------------------------------------------------------


async def _active_hold(
    conn: AsyncConnection, institution_id: int, hold_id: int, now: datetime
) -> Any:
    h = db.hold.c
    row = (
        await conn.execute(
            sa.select(db.hold).where(h.id == hold_id, h.institution_id == institution_id)
        )
    ).first()
    if row is None:
        raise UnknownHold(f"no hold {hold_id}")
    if row.state != HoldState.ACTIVE.value:
        raise HoldClosed(f"hold {hold_id} is {row.state.lower()}")
    if row.expires_at <= now:
        raise HoldClosed(f"hold {hold_id} has expired")
    return row


async def confirm_hold(
    engine: AsyncEngine,
    *,
    institution_id: int,
    hold_id: int,
    now: datetime,
    actor: str = "system",
    seat_indexes: SeatIndexes | None = None,
) -> None:
    """Sell the hold's places (in every performance it covers). Refused when the hold expired,
    was released or confirmed."""
    await in_transaction(
        engine,
        lambda conn: confirm_hold_in(
            conn,
            institution_id=institution_id,
            hold_id=hold_id,
            now=now,
            actor=actor,
            seat_indexes=seat_indexes,
        ),
    )


async def confirm_hold_in(
    conn: AsyncConnection,
    *,
    institution_id: int,
    hold_id: int,
    now: datetime,
    actor: str = "system",
    seat_indexes: SeatIndexes | None = None,
) -> None:
    """:func:`confirm_hold` inside the caller's transaction (see :func:`in_transaction`)."""
    closed = await confirm_holds_in(
        conn,
        institution_id=institution_id,
        holds={hold_id: actor},
        now=now,
        seat_indexes=seat_indexes,
    )
    if not closed:  # unknown, another institution's, closed or expired: say which
        await _active_hold(conn, institution_id, hold_id, now)
        raise HoldClosed(f"hold {hold_id} was just closed")


async def confirm_holds_in(
    conn: AsyncConnection,
    *,
    institution_id: int,
    holds: Mapping[int, str],
    now: datetime,
    seat_indexes: SeatIndexes | None = None,
) -> set[int]:
    """Sell the places of ``holds`` (hold id -> the actor confirming it) still active and
    unexpired, in one statement, inside the caller's transaction (see :func:`in_transaction`);
    the ids of the holds confirmed here (the others are left as they are: the caller refuses)."""
    indexes = indexes_of(conn.engine) if seat_indexes is None else seat_indexes
    after = _current_afterwards(required=False)
    closed = await _close_holds(
        conn, institution_id, list(holds), HoldState.CONFIRMED, now, unexpired=True
    )
    for hold_id in closed.holds:
        await audit.record(
            conn,
            institution_id=institution_id,
            action="inventory.hold.confirmed",
            actor=holds[hold_id],
            at=now,
            hold_id=hold_id,
        )
    if closed.holds:
        # held seats become sold: taken before and after
        await log_changes(conn, institution_id, closed.stocks, now, taken={}, freed={})
        after.committed.append(lambda: _apply_own(indexes, taken=closed.seats))
    return set(closed.holds)


async def release_hold(
    engine: AsyncEngine,
    *,
    institution_id: int,
    hold_id: int,
    now: datetime,
    actor: str = "system",
    seat_indexes: SeatIndexes | None = None,
) -> None:
    """Give the hold's places back (in every performance it covers). Idempotent on a hold
    already released or expired."""
    await in_transaction(
        engine,
        lambda conn: release_hold_in(
            conn,
            institution_id=institution_id,
            hold_id=hold_id,
            now=now,
            actor=actor,
            seat_indexes=seat_indexes,
        ),
    )


async def release_hold_in(
    conn: AsyncConnection,
    *,
    institution_id: int,
    hold_id: int,
    now: datetime,
    actor: str = "system",
    seat_indexes: SeatIndexes | None = None,
) -> None:
    """:func:`release_hold` inside the caller's transaction (see :func:`in_transaction`)."""
    indexes = indexes_of(conn.engine) if seat_indexes is None else seat_indexes

    async def work(conn: AsyncConnection, after: _Afterwards) -> None:
        h = db.hold.c
        row = (
            await conn.execute(
                sa.select(h.state).where(h.id == hold_id, h.institution_id == institution_id)
            )
        ).first()
        if row is None:
            raise UnknownHold(f"no hold {hold_id}")
        if row.state in (HoldState.RELEASED.value, HoldState.EXPIRED.value):
            return
        if row.state == HoldState.CONFIRMED.value:
            raise HoldClosed(f"hold {hold_id} is confirmed")
        closed = await _close_holds(conn, institution_id, [hold_id], HoldState.RELEASED, now)
        if not closed.holds:  # closed meanwhile: nothing to give back, unless it was sold
            state = (await conn.execute(sa.select(h.state).where(h.id == hold_id))).scalar_one()
            if state == HoldState.CONFIRMED.value:
                raise HoldClosed(f"hold {hold_id} is confirmed")
            return
        await audit.record(
            conn,
            institution_id=institution_id,
            action="inventory.hold.released",
            actor=actor,
            at=now,
            hold_id=hold_id,
        )
        await log_changes(conn, institution_id, closed.stocks, now, freed=closed.by_stock)
        after.committed.append(lambda: _apply_own(indexes, freed=closed.seats))

    await work(conn, _current_afterwards(required=False))
