"""The availability board: every stock counter of the institutions a process serves, in memory,
following the change log.

The board is a read model. It loads the ``stock`` table once, then applies ``inventory_change``
rows in sequence order (each row carries the counter's new absolute values, so applying a row
twice is harmless). ``follow`` polls the log; with PostgreSQL it also wakes on
``NOTIFY billetterie_inventory`` sent by the writer in its transaction, so a committed change
reaches every process within one round trip. The sale path never reads the board.

The board also keeps what availability reads check their caches against: each channel's setup
and catalog versions (``channel_states``, as ``catalog.services.channel_state`` would read
them). A setup import sends ``NOTIFY billetterie_inventory, '<institution>:setup'`` at commit
(``inventory.provision``); the board then reads the versions again, and the product facts when
a setup version moved. Without NOTIFY (SQLite) the versions are read at every poll tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.catalog.models import CatalogScope
from billetterie.catalog.services import (
    ChannelState,
    ProductFacts,
    channel_states,
    product_facts,
    timeslot_times,
)
from billetterie.inventory import db
from billetterie.inventory.models import Counts, HoldState
from billetterie.inventory.services import NOTIFY_CHANNEL
from billetterie.shared.clock import Clock, SystemClock
from billetterie.shared.db import read
from billetterie.shared.statements import constant

log = logging.getLogger("billetterie.inventory.board")
CHANNEL = NOTIFY_CHANNEL
BATCH = 10000
# Under a rush every sale's commit notifies: catch-ups begin at most this often, each taking
# every change since the one before (a notification after a quiet moment is applied at once).
MIN_CATCH_UP_SECONDS = 0.1
# ... and read the places of expired holds (which only time makes, and the sweeper releases
# every second) at most this often; a stock whose counters moved in between shows them held
EXPIRED_EVERY_SECONDS = 1.0
MEMO_SIZE = 10000  # answers memoised per generation


@dataclass(slots=True)
class StockView:
    id: int
    institution_id: int
    product_id: int
    performance_id: int | None
    seat_category_id: int | None
    contingent_id: int | None
    product_item_id: int | None
    timeslot_id: int | None
    numbered: bool
    raw: Counts  # as the log says
    counts: Counts  # as partners see it: places of expired holds count as free


class Board:
    def __init__(
        self, engine: AsyncEngine, *, clock: Clock | None = None, poll_seconds: float = 0.2
    ) -> None:
        self.engine = engine
        self.clock = clock or SystemClock()
        self.poll_seconds = poll_seconds
        self.expired: dict[int, int] = {}  # stock -> places of expired holds not yet released
        self.stocks: dict[int, StockView] = {}
        self.by_performance: dict[int, list[StockView]] = defaultdict(list)
        self.by_product: dict[int, list[StockView]] = defaultdict(list)
        self.sequence: dict[int, int] = {}  # institution -> last applied sequence
        self.updated_at: dict[int, datetime] = {}  # product -> when its availability last changed
        self.products: dict[int, ProductFacts] = {}
        self.timeslots: dict[int, tuple[datetime, datetime]] = {}
        # (sales channel, scope) -> setup and catalog versions
        self.channel_states: dict[tuple[int, CatalogScope], ChannelState] = {}
        self._states_due = False  # a setup import was notified
        self._states_read_at = 0.0  # time.monotonic() of the last read of the versions
        self._expired_read_at = 0.0  # time.monotonic() of the last read of expired holds
        # bumped by every change of counts or product facts; answers derived from the board
        # are memoised for one generation
        self.generation = 0
        self._memo: dict[Any, Any] = {}
        self._memo_generation = 0
        self._wake = asyncio.Event()
        self._loaded = False

    # --- loading and following -------------------------------------------------------------

    async def load(self) -> None:
        c, q = db.inventory_change.c, db.inventory_sequence.c
        async with read(self.engine) as conn:
            rows = (await conn.execute(sa.select(db.stock))).all()
            sequences = (await conn.execute(sa.select(q.institution_id, q.value))).all()
            updated = (
                await conn.execute(
                    sa.select(c.product_id, sa.func.max(c.at)).group_by(c.product_id)
                )
            ).all()
            self.products = await product_facts(conn)
            self.timeslots = await timeslot_times(conn)
            states = await channel_states(conn)
        self._set_states(states)
        self.stocks.clear()
        self.by_performance.clear()
        self.by_product.clear()
        for row in rows:
            self._put(row)
        self.sequence = {r.institution_id: r.value for r in sequences}
        self.updated_at = {product_id: at for product_id, at in updated}
        self.expired = {}
        self.generation += 1
        await self._refresh_expired()
        self._loaded = True

    def _set_states(self, states: dict[tuple[int, CatalogScope], ChannelState]) -> bool:
        """Keep the versions read; whether a setup version moved."""
        self._states_read_at = time.monotonic()
        self._states_due = False
        moved = {k: v.setup_version for k, v in states.items()} != {
            k: v.setup_version for k, v in self.channel_states.items()
        }
        self.channel_states = states
        return moved

    async def _refresh_states(self) -> None:
        async with read(self.engine) as conn:
            states = await channel_states(conn)
            if self._set_states(states):  # products' facts come with the setup
                self.products = await product_facts(conn)
                self.timeslots = await timeslot_times(conn)
                self.generation += 1

    def states_due(self) -> bool:
        return self._states_due or time.monotonic() - self._states_read_at >= self.poll_seconds

    def _put(self, row: Any) -> None:
        view = StockView(
            row.id,
            row.institution_id,
            row.product_id,
            row.performance_id,
            row.seat_category_id,
            row.contingent_id,
            row.product_item_id,
            row.timeslot_id,
            row.numbered,
            Counts(row.capacity, row.held, row.sold, row.blocked),
            Counts(row.capacity, row.held, row.sold, row.blocked),
        )
        if row.id not in self.stocks:
            if view.performance_id is not None:
                self.by_performance[view.performance_id].append(view)
            self.by_product[view.product_id].append(view)
            self.stocks[row.id] = view
        else:
            self._set(self.stocks[row.id], view.raw)

    def _set(self, view: StockView, raw: Counts) -> None:
        self.generation += 1
        view.raw = raw
        expired = min(self.expired.get(view.id, 0), raw.held)
        view.counts = (
            raw if not expired else Counts(raw.capacity, raw.held - expired, raw.sold, raw.blocked)
        )

    async def _refresh_expired(self) -> None:
        """Places of holds past their expiry that the sweeper has not released yet."""
        async with read(self.engine) as conn:
            expired = await self._expired_of(conn)
        self._apply_expired(expired)

    async def _expired_of(self, conn: AsyncConnection) -> dict[int, int]:
        h, line = db.hold.c, db.hold_line.c
        rows = (
            await conn.execute(
                sa.select(line.stock_id, sa.func.sum(line.quantity))
                .join(db.hold, h.id == line.hold_id)
                .where(
                    h.state == constant(HoldState.ACTIVE.value),
                    h.expires_at <= self.clock.now(),
                )
                .group_by(line.stock_id)
            )
        ).all()
        self._expired_read_at = time.monotonic()
        return {int(stock_id): int(quantity) for stock_id, quantity in rows}

    def _apply_expired(self, expired: dict[int, int]) -> None:
        touched = set(expired) | set(self.expired)
        self.expired = expired
        for stock_id in touched:
            view = self.stocks.get(stock_id)
            if view is not None:
                self._set(view, view.raw)

    async def catch_up(self, *, expired_every: float = 0.0) -> int:
        """Apply every change logged since the last one applied; returns how many. The places
        of expired holds are read in the same transaction, unless they were read less than
        ``expired_every`` seconds ago (then a stock whose counters moved shows them held until
        the next read: never more free places than there are).

        Changes are followed by sequence per institution, never by row id: sequence order is
        commit order, while ids of two concurrent transactions may commit out of order."""
        if not self._loaded:
            await self.load()
            return 0
        c, q = db.inventory_change.c, db.inventory_sequence.c
        rows: list[Any] = []
        expired: dict[int, int] | None = None
        async with read(self.engine) as conn:
            # the sequence rows are few; only institutions whose sequence moved are read
            heads = (await conn.execute(sa.select(q.institution_id, q.value))).all()
            for institution, head in heads:
                after = self.sequence.get(institution, 0)
                if head <= after:
                    continue
                query = (
                    sa.select(db.inventory_change)
                    .where(c.institution_id == institution, c.sequence > after)
                    .order_by(c.sequence, c.id)
                )
                batch = (await conn.execute(query.limit(BATCH))).all()
                if len(batch) == BATCH:  # never apply half a sequence
                    last = batch[-1].sequence
                    if batch[0].sequence == last:
                        batch = (await conn.execute(query.where(c.sequence == last))).all()
                    else:
                        batch = [r for r in batch if r.sequence != last]
                rows.extend(batch)
            if time.monotonic() - self._expired_read_at >= expired_every:
                expired = await self._expired_of(conn)
        unknown = False
        for row in rows:
            view = self.stocks.get(row.stock_id)
            if view is None:
                unknown = True  # a stock provisioned after the load
            else:
                if expired is None:  # its expired holds may have been released in it
                    self.expired.pop(row.stock_id, None)
                self._set(view, Counts(row.capacity, row.held, row.sold, row.blocked))
            self.sequence[row.institution_id] = max(
                self.sequence.get(row.institution_id, 0), row.sequence
            )
            self.updated_at[row.product_id] = row.at
        if unknown:
            await self.load()
        else:
            if expired is not None:
                self._apply_expired(expired)
            if self.states_due():
                await self._refresh_states()
        return len(rows)

    def notify(self, payload: str = "") -> None:
        if payload.endswith(":setup"):
            self._states_due = True
        self._wake.set()

    async def follow(self) -> None:
        """Run forever: catch up on every wake-up (NOTIFY) or poll tick, at most once every
        MIN_CATCH_UP_SECONDS (the notifications of a rush are taken together)."""
        listener = await self._listen()
        try:
            while True:
                self._wake.clear()  # before catching up: a NOTIFY during it wakes the next round
                began = time.monotonic()
                try:
                    await self.catch_up(expired_every=EXPIRED_EVERY_SECONDS)
                except Exception:  # the board must survive a failed poll; the next one retries
                    log.exception("availability board catch-up failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                pause = began + MIN_CATCH_UP_SECONDS - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
        finally:
            if listener is not None:
                await listener.close()

    async def _listen(self) -> Any:
        if self.engine.dialect.name != "postgresql":
            return None
        try:
            import asyncpg  # type: ignore[import-untyped]

            url = self.engine.url.set(drivername="postgresql")
            connection = await asyncpg.connect(url.render_as_string(hide_password=False))
            await connection.add_listener(
                CHANNEL, lambda _connection, _pid, _channel, payload: self.notify(str(payload))
            )
            return connection
        except Exception:  # polling still works without LISTEN
            log.warning("LISTEN %s unavailable; polling every %ss", CHANNEL, self.poll_seconds)
            return None

    # --- reads -----------------------------------------------------------------------------

    def memo_get(self, key: Any) -> Any:
        """An answer memoised under ``key`` in this generation, else None."""
        if self._memo_generation != self.generation:
            self._memo.clear()
            self._memo_generation = self.generation
            return None
        return self._memo.get(key)

    def memo_put(self, key: Any, answer: Any) -> Any:
        if self._memo_generation != self.generation:
            self._memo.clear()
            self._memo_generation = self.generation
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = answer
        return answer

    def performance_stocks(self, performance_id: int) -> list[StockView]:
        return self.by_performance.get(performance_id, [])

    def product_stocks(self, product_id: int) -> list[StockView]:
        return self.by_product.get(product_id, [])

    def alert_ratio(self, product_id: int) -> int:
        facts = self.products.get(product_id)
        return facts.alert_ratio if facts is not None else 0

    async def fresh(self) -> Board:
        """The board, loaded at least once (the first reader of a process pays the load)."""
        if not self._loaded:
            await self.load()
        return self
