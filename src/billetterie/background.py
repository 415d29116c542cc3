"""The background loops: the outbox dispatcher and the periodic sweepers.

``billetterie worker`` runs them in a process of their own; ``serve`` and ``demo`` run the same
loops inside each server process unless ``BILLETTERIE_BACKGROUND_TASKS=false``. Running them
in several processes at once is safe: the dispatcher claims rows with a lease (see
:mod:`billetterie.shared.outbox`) and every sweeper round is a conditional update.

Periodic tasks registered here: the expired-hold sweeper (inventory), the expired-cart
sweeper (sales), the purge of expired
idempotency keys and of old finished outbox rows, the planner statistics of growing tables
(:mod:`billetterie.shared.statistics`), and the five functions of every external
printing interface (each on its interface's schedule). Other contexts add theirs with
:func:`billetterie.shared.periodic.register_periodic` at app build.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.config import Settings
from billetterie.inventory.queries import has_expired_holds
from billetterie.inventory.services import expire_holds
from billetterie.printing import tasks as printing_tasks
from billetterie.printing.models import Function as PrintingFunction
from billetterie.sales.tasks import abandon_expired_orders
from billetterie.shared import idempotency, outbox, statistics
from billetterie.shared.clock import Clock
from billetterie.shared.db import read
from billetterie.shared.periodic import register_periodic, registered_periodics, run_periodic
from billetterie.webhooks import tasks as webhook_tasks

MAX_ATTEMPTS = 12


async def release_expired_holds(engine: AsyncEngine, now: datetime) -> int:
    """One round of the hold sweeper (a cheap read first; the release is conditional)."""
    async with read(engine) as conn:
        due = await has_expired_holds(conn, now)
    return await expire_holds(engine, now=now) if due else 0


async def purge_outbox(engine: AsyncEngine, now: datetime) -> int:
    return await outbox.purge_finished(engine, now)


def register_defaults() -> None:
    register_periodic("inventory.expired_holds", 1.0, release_expired_holds)
    register_periodic("sales.expired_orders", 5.0, abandon_expired_orders)
    register_periodic("idempotency.expired_keys", 300.0, idempotency.purge_expired)
    register_periodic("outbox.purge_finished", 3600.0, purge_outbox)
    register_periodic("database.statistics", 2.0, statistics.analyze_grown_tables)
    # External printing: each round runs the interfaces whose own schedule is due.
    for function in PrintingFunction:
        register_periodic(
            f"printing.{function.value}",
            printing_tasks.TICK_SECONDS,
            printing_tasks.periodic_round(function),
        )


def schedules() -> list[tuple[str, float]]:
    """What the loops run: ``(name, every_seconds)``; the dispatcher first."""
    register_defaults()
    return [("outbox.dispatcher", 0.0)] + [
        (p.name, p.every_seconds) for p in registered_periodics()
    ]


async def run(
    settings: Settings,
    engine: AsyncEngine,
    clock: Clock,
    stop: asyncio.Event,
    *,
    client: httpx.AsyncClient | None = None,
    handlers: Mapping[str, outbox.Handler] | None = None,
) -> None:
    """Run the dispatcher and every periodic task until ``stop`` is set; in-flight jobs finish
    (or, if cancelled, their lease lets another dispatcher retry them). ``handlers`` adds
    outbox handlers bound to this process's collaborators (the card refunds, bound to the
    payment gateway)."""
    register_defaults()
    own_client = client is None
    http = client or httpx.AsyncClient(
        timeout=settings.webhook_timeout_seconds, follow_redirects=False
    )
    # This process's handlers: registered ones, and the webhook sender bound to this engine
    # (not registered globally, so two apps in one process never cross their engines), and
    # the caller's.
    bound: dict[str, outbox.Handler] = {
        **outbox.registered_handlers(),
        webhook_tasks.TOPIC: webhook_tasks.WebhookSender(
            engine, clock, http, max_attempts=MAX_ATTEMPTS
        ),
        **(handlers or {}),
    }
    dispatcher = outbox.Dispatcher(
        engine,
        clock,
        handlers=bound,
        poll_seconds=settings.outbox_poll_seconds,
        max_attempts=MAX_ATTEMPTS,
    )
    loops = [asyncio.create_task(dispatcher.run(stop), name="outbox-dispatcher")]
    loops += [
        asyncio.create_task(run_periodic(p, engine, clock, stop), name=p.name)
        for p in registered_periodics()
    ]
    try:
        await asyncio.gather(*loops)
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        if own_client:
            with contextlib.suppress(Exception):
                await http.aclose()


def start(
    settings: Settings,
    engine: AsyncEngine,
    clock: Clock,
    *,
    handlers: Mapping[str, outbox.Handler] | None = None,
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    """The loops as one task of a server process; set the event (then await) to stop."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(settings, engine, clock, stop, handlers=handlers), name="background"
    )
    return stop, task
