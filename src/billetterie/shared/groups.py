"""Requests that arrive together, run together: one transaction for a group of them.

Under an on-sale rush what a sale costs both the server and PostgreSQL follows the number of
statements and transactions, far more than what each does (docs/scaling.md). A :class:`Groups`
gathers the requests of one kind (the closes of orders, the carts) that a process receives
while its earlier ones are in the database, and has them run as one group by its ``run``
function: one transaction, one commit-time work row for them all and, where the steps allow,
one statement per step for every request of the group.

- A request that finds fewer than ``concurrent`` groups running starts one at once: alone, it
  waits for nothing. Otherwise it waits for the next group, which a running group starts when
  it ends, with every request waiting then (at most ``size``, those of the first one's ``key``
  only, and none whose ``distinct`` value is already in it).
- Each request is answered as if it ran alone. ``run`` returns a :class:`Declined` in the
  place of a request refused before anything was written for it: that request gets its
  error, the others' results stand, in the same transaction. It raises :class:`Refused` for
  the first request refused once it may have written: the transaction rolls back, that
  request gets its error, the others run again without it. A group refused twice, or that
  fails otherwise (a commit refusing the group's counters or debits together, a lock
  timeout), runs one request at a time, so that each gets its own answer.
- ``run`` raises :class:`RunAlone` for a request the group's transaction cannot decide (it
  lost its seat races round after round, twice: running the whole group again would most
  likely lose them again): the transaction rolls back, the others run again without it (it
  counts as a refusal), then it runs alone, in a transaction of its own with its own retries.
  ``run`` must decide a request that runs alone.
- Only on PostgreSQL: SQLite runs one writing transaction at a time, so every request runs
  alone, through the same ``run``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["Declined", "Groups", "Refused", "RunAlone"]


class Refused(Exception):
    """The request ``index`` of a group was refused with ``error``; its transaction must roll
    back (the other requests may have written already)."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index, error)
        self.index, self.error = index, error


class RunAlone(Exception):
    """The request ``index`` of a group is to run alone, after the others; the group's
    transaction must roll back."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


@dataclass(frozen=True)
class Declined:
    """The result of a request of a group refused with ``error`` before anything was written
    for it: the group's transaction goes on for the others."""

    error: Exception


@dataclass
class _Waiting(Generic[T, R]):
    request: T
    future: asyncio.Future[R]

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        if self.future.done():  # its caller went away
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)


@dataclass
class _State(Generic[T, R]):
    """One process's requests of a kind on one engine and event loop."""

    waiting: list[_Waiting[T, R]] = field(default_factory=list)
    running: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Groups(Generic[T, R]):
    """Requests of one kind run in groups (see the module's contract). ``run(engine,
    requests)`` runs a group in one transaction and returns each request's result in order."""

    def __init__(
        self,
        run: Callable[[AsyncEngine, list[T]], Awaitable[Sequence[R | Declined]]],
        *,
        key: Callable[[T], Hashable],
        distinct: Callable[[T], Hashable | None] = lambda _: None,
        concurrent: int = 4,
        size: int = 32,
    ) -> None:
        self.run = run
        self.key, self.distinct = key, distinct
        self.concurrent, self.size = concurrent, size
        self._states: weakref.WeakKeyDictionary[Any, dict[Any, _State[T, R]]] = (
            weakref.WeakKeyDictionary()
        )

    def state(self, engine: AsyncEngine) -> _State[T, R]:
        per_loop = self._states.setdefault(engine.sync_engine, {})
        loop = asyncio.get_running_loop()
        found = per_loop.get(loop)
        if found is None:
            found = per_loop[loop] = _State()
        return found

    async def submit(self, engine: AsyncEngine, request: T) -> R:
        """Run ``request`` in a group; its result, or its error raised."""
        waiting: _Waiting[T, R] = _Waiting(request, asyncio.get_running_loop().create_future())
        if engine.dialect.name != "postgresql":
            await self._run_group(engine, [waiting])
        else:
            state = self.state(engine)
            state.waiting.append(waiting)
            if state.running < self.concurrent:
                state.running += 1
                task = asyncio.get_running_loop().create_task(self._groups(engine, state))
                state.tasks.add(task)
                task.add_done_callback(state.tasks.discard)
        return await waiting.future

    def _next(self, state: _State[T, R]) -> list[_Waiting[T, R]]:
        key = self.key(state.waiting[0].request)
        group: list[_Waiting[T, R]] = []
        seen: set[Hashable] = set()
        rest: list[_Waiting[T, R]] = []
        for waiting in state.waiting:
            distinct = self.distinct(waiting.request)
            if (
                len(group) < self.size
                and self.key(waiting.request) == key
                and (distinct is None or distinct not in seen)
            ):
                group.append(waiting)
                if distinct is not None:
                    seen.add(distinct)
            else:
                rest.append(waiting)
        state.waiting = rest
        return group

    async def _groups(self, engine: AsyncEngine, state: _State[T, R]) -> None:
        try:
            while state.waiting:
                group = self._next(state)
                try:
                    await self._run_group(engine, group)
                except BaseException as exc:  # cancelled: the group's callers hear of it
                    for waiting in group:
                        waiting.settle(error=exc)
                    raise
        finally:
            state.running -= 1

    async def _run_group(self, engine: AsyncEngine, group: list[_Waiting[T, R]]) -> None:
        remaining = list(group)
        alone: list[_Waiting[T, R]] = []  # taken out by RunAlone, run after the others
        refusals = 0
        while remaining:
            if refusals == 2 and len(remaining) > 1:
                break
            try:
                results = await self.run(engine, [w.request for w in remaining])
            except Refused as refused:
                remaining.pop(refused.index).settle(error=refused.error)
                refusals += 1
                continue
            except RunAlone as taken:
                if len(remaining) == 1:  # a broken ``run``: its caller hears of it
                    remaining[0].settle(error=RuntimeError("a request alone must be decided"))
                    remaining = []
                    break
                alone.append(remaining.pop(taken.index))
                refusals += 1
                continue
            except Exception as exc:
                if len(remaining) == 1:
                    remaining[0].settle(error=exc)
                    remaining = []
                break
            for waiting, result in zip(remaining, results, strict=True):
                if isinstance(result, Declined):
                    waiting.settle(error=result.error)
                else:
                    waiting.settle(result)
            remaining = []
        for waiting in remaining + alone:  # one at a time
            await self._run_group(engine, [waiting])
