"""Periodic tasks of the background loops (the worker, or a server process in-process).

A context registers a sweeper once, at app build: ``register_periodic(name, every_seconds,
fn)`` where ``fn(engine, now)`` does one round and returns. The loop calls it every
``every_seconds`` with ``now`` from the clock; a round that raises is logged and the next one
runs as scheduled. Rounds must be idempotent and safe to run in several processes at once
(conditional updates), since every server process and the worker may run the same loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.shared.clock import Clock

log = logging.getLogger("billetterie.periodic")

Round = Callable[[AsyncEngine, datetime], Awaitable[Any]]


@dataclass(frozen=True)
class Periodic:
    name: str
    every_seconds: float
    run: Round


_registry: dict[str, Periodic] = {}


def register_periodic(name: str, every_seconds: float, fn: Round) -> None:
    """Add (or replace, by name) a periodic task."""
    if every_seconds <= 0:
        raise ValueError("every_seconds must be positive")
    _registry[name] = Periodic(name, float(every_seconds), fn)


def registered_periodics() -> list[Periodic]:
    return sorted(_registry.values(), key=lambda p: p.name)


async def run_periodic(
    task: Periodic, engine: AsyncEngine, clock: Clock, stop: asyncio.Event
) -> None:
    """Run ``task`` every ``every_seconds`` until ``stop`` is set (or the task is cancelled)."""
    while not stop.is_set():
        try:
            await task.run(engine, clock.now())
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed round is logged; the next one retries
            log.exception("periodic task %s failed", task.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), task.every_seconds)
