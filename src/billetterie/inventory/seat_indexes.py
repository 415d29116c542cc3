"""Per-process seat indexes: best-available on the hold path without reading every free seat.

A server process keeps, per performance it sells, a :class:`~billetterie.inventory.seating.
SeatIndex` of the whole plan (:class:`PerformanceSeats`). The index only **proposes** seats; the
database decides with ``UPDATE performance_seat ... WHERE state = 'FREE'`` in the hold's
transaction (``inventory.services``). How the index keeps up with the database:

- **watermark** - the institution's change sequence up to which the index reflects every seat
  change of the performance. Sequence order is commit order (``inventory_change``), so on each
  hold one small query reads the sequence's head and the performance's changes after the
  watermark (an index range scan on ``(institution_id, sequence)``), with the seats each change
  took and freed: they are applied in sequence order, and the watermark moves to the head read
  in the same statement. Only a change whose seats the log does not tell (a setup import) makes
  the index read that stock's free seats again (:meth:`PerformanceSeats.replace_stock`).
- **own changes** - what this process's own transactions did (held, released, expired seats) is
  applied right after their commit (:meth:`PerformanceSeats.apply_own`), before the log says
  it; reading it again from the log later changes nothing.
- **reservations** - seats proposed to a transaction still running in this process are
  reserved (a counter per seat) and not proposed to another one, so the coroutines of one
  process do not race each other for the same block; reservations end with the transaction.
- **lost races** - a seat the conditional update did not get is taken by another process: it
  is marked taken at once (:meth:`PerformanceSeats.mark_lost`) and the next-best block is
  proposed in the same transaction. Until the change log tells what became of it, the seat is
  **suspect**: the transaction that got it may still roll back, and a rollback logs nothing. When
  the index has no seats left for a request, only its suspect seats are read again
  (:func:`recheck`, by primary key), not every free seat of its stocks.
- **the same seats** - :func:`propose_same` proposes, for a season ticket, seats of the same
  plan seats (``performance_seat.seat_id``) at several performances, from their indexes.
- **rollbacks** - the seats a transaction's claims got were free and are free again when it
  rolls back: the index frees them at once. Seats of expired holds it released (free in its
  own uncommitted view) mark their stocks **dirty**: the next hold reads their free seats
  again, since the sweeper may have released them meanwhile. A plan that changed under the index (a
  setup import added, removed or moved seats, or a stock the index does not know) makes it
  **stale**: it is rebuilt from the database.

Staleness only ever costs a lost race or a slightly worse proposal, never a seat sold twice:
the conditional update is the truth. :class:`SeatIndexes` keeps at most ``capacity``
performances per engine (least recently used out). Nothing here awaits while the index changes,
so the coroutines of one event loop see it consistent; it is not thread-safe.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.inventory import db
from billetterie.inventory.models import SeatState
from billetterie.inventory.seating import PlanSeat, SeatIndex, best_common, best_common_of
from billetterie.shared.statements import Statement, any_of

__all__ = [
    "MAX_INDEXES",
    "PerformanceSeats",
    "SeatIndexes",
    "build",
    "indexes_of",
    "propose_same",
    "recheck",
    "refresh",
    "reread",
]

MAX_INDEXES = 64  # performances indexed per process and engine


class PerformanceSeats:
    """One performance's seats as this process knows them (see the module docstring)."""

    def __init__(
        self,
        institution_id: int,
        performance_id: int,
        seats: Iterable[tuple[int, int, int, int, int, int, bool]],
        watermark: int,
        stock_ids: Iterable[int] = (),
        plan_seats: dict[int, int] | None = None,
    ) -> None:
        """``seats``: (seat id, stock id, block id, row order, position, rank, free) of every
        seat of the performance, read at or after sequence ``watermark``; ``stock_ids``: its
        numbered stocks (some may have no seat); ``plan_seats``: seat id -> the plan seat it
        stands for (``performance_seat.seat_id``; each seat its own when not given)."""
        self.institution_id = institution_id
        self.performance_id = performance_id
        plan: list[PlanSeat] = []
        # the database's free seats, per stock
        self.free_by_stock: dict[int, set[int]] = {stock_id: set() for stock_id in stock_ids}
        self.stock_of: dict[int, int] = {}
        for seat_id, stock_id, block_id, row_order, position, rank, free in seats:
            plan.append(PlanSeat(seat_id, block_id, row_order, position, rank, free, stock_id))
            self.stock_of[seat_id] = stock_id
            known = self.free_by_stock.setdefault(stock_id, set())
            if free:
                known.add(seat_id)
        self.index = SeatIndex(plan)
        self.stocks = frozenset(self.free_by_stock)
        self.plan_seat_of = plan_seats if plan_seats is not None else {s: s for s in self.stock_of}
        self._layout: tuple[Any, ...] | None = None
        self.watermark = watermark
        # refreshes begun, and how many had begun when the watermark last moved (``refresh``)
        self.refreshes = 0
        self.settled = 0
        self.reserved: Counter[int] = Counter()
        self.dirty: set[int] = set()  # stocks whose free seats must be read again
        # seats marked taken on a lost race, that no change read since has told the fate of
        self.suspect: set[int] = set()
        self.stale = False  # rebuild before the next use

    @property
    def layout(self) -> tuple[Any, ...]:
        """Per row, its key and the plan seat at each bit: performances of equal layouts are
        compared on their bitmasks by :func:`propose_same`. Computed on first use (only season
        tickets ask); a plan that changes makes a new entry."""
        if self._layout is None:
            self._layout = tuple(
                (key, tuple(self.plan_seat_of[i] if i >= 0 else -1 for i in ids))
                for key, ids in self.index.layout()
            )
        return self._layout

    # -- keeping the index equal to (database's free seats) - (reservations) -------------------

    def _sync(self, seat_ids: Iterable[int]) -> None:
        to_take: list[int] = []
        to_free: list[int] = []
        index, reserved, stock_of, free_by_stock = (
            self.index,
            self.reserved,
            self.stock_of,
            self.free_by_stock,
        )
        for seat_id in set(seat_ids):
            stock_id = stock_of.get(seat_id)
            if stock_id is None:
                continue
            wanted = seat_id in free_by_stock[stock_id] and not reserved[seat_id]
            if wanted != index.is_free(seat_id):
                (to_free if wanted else to_take).append(seat_id)
        if to_take:
            index.take(to_take)
        if to_free:
            index.free(to_free)

    def reserve(self, seat_ids: Collection[int]) -> None:
        """Proposed to a running transaction of this process: not proposed again meanwhile."""
        self.reserved.update(seat_ids)
        self._sync(seat_ids)

    def unreserve(self, seat_ids: Collection[int]) -> None:
        self.reserved.subtract(seat_ids)
        for seat_id in seat_ids:
            if self.reserved[seat_id] <= 0:
                del self.reserved[seat_id]
        self._sync(seat_ids)

    def mark_taken(self, seat_ids: Collection[int]) -> None:
        """Seats the database showed taken (committed)."""
        for seat_id in seat_ids:
            stock_id = self.stock_of.get(seat_id)
            if stock_id is not None:
                self.free_by_stock[stock_id].discard(seat_id)
        if self.suspect:
            self.suspect.difference_update(seat_ids)
        self._sync(seat_ids)

    def mark_lost(self, seat_ids: Collection[int]) -> None:
        """Seats a claim did not get: taken by another transaction, committed or still running
        (it may roll back), so taken and suspect until a change or :func:`recheck` tells."""
        self.mark_taken(seat_ids)
        self.suspect.update(s for s in seat_ids if s in self.stock_of)

    def mark_free(self, seat_ids: Collection[int]) -> None:
        """Seats the database showed free (committed, or in the current transaction)."""
        for seat_id in seat_ids:
            stock_id = self.stock_of.get(seat_id)
            if stock_id is not None:
                self.free_by_stock[stock_id].add(seat_id)
        if self.suspect:
            self.suspect.difference_update(seat_ids)
        self._sync(seat_ids)

    def suspects_of(self, stock_ids: Collection[int]) -> list[int]:
        """The suspect seats of these stocks, in id order."""
        return sorted(s for s in self.suspect if self.stock_of[s] in stock_ids)

    def replace_stock(self, stock_id: int, free_ids: Collection[int]) -> None:
        """The database's free seats of one stock, read anew. A seat the index does not know
        in that stock means the plan changed: the index is marked stale."""
        known = self.free_by_stock.get(stock_id)
        if known is None or any(self.stock_of.get(seat_id) != stock_id for seat_id in free_ids):
            self.stale = True
            return
        fresh = set(free_ids)
        changed = known ^ fresh
        self.free_by_stock[stock_id] = fresh
        if self.suspect:
            self.suspect.difference_update(self.suspects_of((stock_id,)))
        self._sync(changed)

    def apply_own(self, *, taken: Collection[int] = (), freed: Collection[int] = ()) -> None:
        """What an own transaction just committed did to these seats."""
        if taken:
            self.mark_taken(taken)
        if freed:
            self.mark_free(freed)

    def advance(self, head: int) -> None:
        """Every change up to ``head`` is reflected now."""
        if head > self.watermark:
            self.watermark = head

    # -- proposing -----------------------------------------------------------------------------

    def reserved_elsewhere(self, stock_ids: Collection[int], mine: Collection[int]) -> bool:
        """Whether other running transactions of this process reserved seats of these stocks
        (``mine``: the caller's own reservations)."""
        return any(
            seat_id not in mine and self.stock_of.get(seat_id) in stock_ids
            for seat_id in self.reserved
        )

    def propose(
        self,
        stock_ids: Sequence[int],
        quantity: int,
        *,
        split_allowed: bool,
        ignore_reserved_except: Collection[int] | None = None,
        blocks: Collection[int] | None = None,
    ) -> list[int] | None:
        """The best seats for ``quantity`` places in these stocks, tried in their order, then
        all of them together; seats together before split seats. With
        ``ignore_reserved_except``, seats reserved by other running transactions may be
        proposed too (they may yet roll back); those given stay excluded. ``blocks``: only
        seats of these blocks."""
        groups = [frozenset((stock_id,)) for stock_id in stock_ids]
        if len(groups) > 1:
            groups.append(frozenset(stock_ids))
        others: list[int] = []
        held_back = self.reserved
        if ignore_reserved_except is not None:
            others = [s for s in held_back if s not in ignore_reserved_except]
        if others:
            self.reserved = Counter({s: held_back[s] for s in ignore_reserved_except or ()})
            self._sync(others)
        try:
            for split in (False, True) if split_allowed else (False,):
                for allowed in groups:
                    picked = self.index.best_available(
                        quantity, split_allowed=split, allowed=allowed, blocks=blocks
                    )
                    if picked is not None:
                        return list(picked)
            return None
        finally:
            if others:
                self.reserved = held_back
                self._sync(others)


def propose_same(
    entries: Sequence[PerformanceSeats],
    stock_ids: Sequence[Collection[int]],
    quantity: int,
    *,
    blocks: Collection[int] | None = None,
) -> list[list[int]] | None:
    """The best seats for ``quantity`` places on the same plan seats at each performance of
    ``entries`` (a season ticket), in its stocks of ``stock_ids`` (one collection per entry);
    seats together only (:func:`~billetterie.inventory.seating.best_common`). Per entry its
    seat ids, or None. Seats reserved by running transactions of this process are not free in
    the indexes, so they are not proposed. Performances of one plan (equal layouts: the same
    plan seat at each bit of each row) are compared on their bitmasks
    (:func:`~billetterie.inventory.seating.best_common_of`), others seat by seat."""
    if all(entry.layout == entries[0].layout for entry in entries[1:]):
        return best_common_of(
            [entry.index for entry in entries], quantity, allowed=stock_ids, blocks=blocks
        )
    free = [
        {entry.plan_seat_of[seat.id]: seat for seat in entry.index.free_seats(stocks, blocks)}
        for entry, stocks in zip(entries, stock_ids, strict=True)
    ]
    return best_common(free, quantity)


class SeatIndexes:
    """The performances indexed by one process for one engine, least recently used out."""

    def __init__(self, capacity: int = MAX_INDEXES) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[int, PerformanceSeats] = OrderedDict()
        # performances being indexed by a running transaction, for the others to wait on
        self.building: dict[int, asyncio.Future[PerformanceSeats | None]] = {}
        # for tests and benchmarks: indexes built, seat races lost (seats proposed that another
        # transaction had taken)
        self.builds = 0
        self.lost_races = 0

    def get(self, performance_id: int) -> PerformanceSeats | None:
        entry = self._entries.get(performance_id)
        if entry is not None:
            self._entries.move_to_end(performance_id)
        return entry

    def put(self, entry: PerformanceSeats) -> PerformanceSeats:
        self.builds += 1
        self._entries[entry.performance_id] = entry
        self._entries.move_to_end(entry.performance_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return entry

    def drop(self, performance_id: int) -> None:
        self._entries.pop(performance_id, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_of_engine: weakref.WeakKeyDictionary[Any, SeatIndexes] = weakref.WeakKeyDictionary()


def indexes_of(engine: AsyncEngine) -> SeatIndexes:
    """This process's seat indexes for ``engine`` (one database)."""
    key = engine.sync_engine  # one object per engine, whichever async proxy names it
    indexes = _of_engine.get(key)
    if indexes is None:
        indexes = _of_engine[key] = SeatIndexes()
    return indexes


# --- reading the database ------------------------------------------------------------------------


async def _head(conn: AsyncConnection, institution_id: int) -> int | None:
    q = db.inventory_sequence.c
    value = (
        await conn.execute(sa.select(q.value).where(q.institution_id == institution_id))
    ).scalar_one_or_none()
    return None if value is None else int(value)


async def build(
    conn: AsyncConnection, institution_id: int, performance_id: int
) -> PerformanceSeats | None:
    """Index every seat of a performance as ``conn`` sees it; None when the institution's
    inventory is not provisioned. The head is read first: the seats read after it reflect at
    least every change up to it."""
    head = await _head(conn, institution_id)
    if head is None:
        return None
    ps, s = db.performance_seat.c, db.stock.c
    stock_ids = (
        await conn.execute(
            sa.select(s.id).where(
                s.institution_id == institution_id,
                s.performance_id == performance_id,
                s.numbered.is_(True),
            )
        )
    ).scalars()
    rows = (
        await conn.execute(
            sa.select(
                ps.id,
                ps.stock_id,
                ps.block_id,
                ps.row_order,
                ps.position,
                ps.rank,
                ps.state,
                ps.seat_id,
            ).where(ps.institution_id == institution_id, ps.performance_id == performance_id)
        )
    ).all()
    free = SeatState.FREE.value
    return PerformanceSeats(
        institution_id,
        performance_id,
        (
            (seat_id, stock_id, block_id, row_order, position, rank, state == free)
            for seat_id, stock_id, block_id, row_order, position, rank, state, _ in rows
        ),
        head,
        list(stock_ids),
        {row[0]: row[7] for row in rows},
    )


def _changes_after(dialect: str) -> Any:
    """The head of the institution's change log, with each change of ``stock_ids`` after the
    ``watermark`` (its sequence, stock and seats), in sequence order; one row with the head
    alone when there is none."""
    q, c = db.inventory_sequence.c, db.inventory_change.c
    sub = (
        sa.select(c.sequence, c.stock_id, c.seats)
        .where(
            c.institution_id == sa.bindparam("institution_id"),
            c.sequence > sa.bindparam("watermark", type_=c.sequence.type),
            any_of(c.stock_id, "stock_ids", dialect),
        )
        .subquery()
    )
    return (
        sa.select(q.value, sub.c.sequence, sub.c.stock_id, sub.c.seats)
        .select_from(db.inventory_sequence.outerjoin(sub, sa.true()))
        .where(q.institution_id == sa.bindparam("institution_id"))
        .order_by(sub.c.sequence)
    )


_CHANGES_AFTER = Statement(_changes_after)


async def refresh(conn: AsyncConnection, entry: PerformanceSeats) -> None:
    """Bring ``entry`` up to the head of the change log, as ``conn`` sees it.

    One statement reads the head and the performance's changes after the watermark with their
    seats, applied in sequence order; the free seats of the stocks whose change does not tell
    its seats, and of the dirty ones, are then read again. A head behind the watermark read by a
    refresh begun after the watermark moved (the database was replaced), or a seat the index
    does not know, marks the entry stale.
    """
    entry.refreshes += 1
    ticket = entry.refreshes
    rows = await _CHANGES_AFTER.rows(
        conn,
        institution_id=entry.institution_id,
        watermark=entry.watermark,
        stock_ids=sorted(entry.stocks),
    )
    if not rows:
        entry.stale = True
        return
    head = int(rows[0][0])
    if head < entry.watermark:
        # A refresh that began before the watermark last moved may see an older head (its
        # statement's snapshot is older than the one that moved it, though its answer came
        # later): the index is ahead of it, nothing to do. One that began after it cannot,
        # unless the log went back: the database was replaced.
        if ticket > entry.settled:
            entry.stale = True
        return
    stocks = set(entry.dirty)
    for _, sequence, stock_id, seats in rows:
        if sequence is None:
            continue
        if seats is None:
            stocks.add(stock_id)
            continue
        if seats.get("freed"):
            entry.mark_free(seats["freed"])
        if seats.get("taken"):
            entry.mark_taken(seats["taken"])
    if stocks:
        await reread(conn, entry, stocks)
    if head > entry.watermark:
        entry.advance(head)
        entry.settled = entry.refreshes


async def reread(
    conn: AsyncConnection, entry: PerformanceSeats, stock_ids: Collection[int]
) -> None:
    """Read the free seats of these stocks again (as ``conn`` sees them)."""
    ps = db.performance_seat.c
    ordered = sorted(stock_ids)
    fresh: dict[int, list[int]] = {stock_id: [] for stock_id in ordered}
    # the state as a parameter, not a constant: a generic plan then reads the pick index's
    # entries of that state (stock, state, rank), whatever share of the seats was free when
    # the table was last analyzed (most, early in an on-sale; a reread comes near sold out)
    rows = await conn.execute(
        sa.select(ps.id, ps.stock_id).where(
            ps.stock_id.in_(ordered), ps.state == SeatState.FREE.value
        )
    )
    for seat_id, stock_id in rows:
        fresh[stock_id].append(seat_id)
    for stock_id, free_ids in fresh.items():
        entry.replace_stock(stock_id, free_ids)
    entry.dirty.difference_update(ordered)


_FREE_AMONG = Statement(
    lambda d: sa.select(db.performance_seat.c.id).where(
        any_of(db.performance_seat.c.id, "seat_ids", d),
        db.performance_seat.c.state == SeatState.FREE.value,
    )
)


async def recheck(
    conn: AsyncConnection, entry: PerformanceSeats, stock_ids: Collection[int]
) -> bool:
    """Read again, by primary key, the suspect seats of these stocks (as ``conn`` sees them):
    the free ones are free again in the index (the transaction that got them rolled back, or
    still runs: a claim then skips them again), the others were taken by a commit that the
    change log tells. Every other seat the index holds taken, the log or this process's own
    commits said so. False when there was no suspect seat to read."""
    suspects = entry.suspects_of(stock_ids)
    if not suspects:
        return False
    free = [seat_id for (seat_id,) in await _FREE_AMONG.rows(conn, seat_ids=suspects)]
    entry.suspect.difference_update(suspects)
    entry.mark_free(free)
    return True
