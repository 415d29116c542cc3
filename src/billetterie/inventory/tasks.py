"""Background work of a server process: the availability board follows the change log, and the
sweeper releases expired holds (reads treat them as free before that)."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.inventory.board import Board
from billetterie.inventory.queries import has_expired_holds
from billetterie.inventory.services import expire_holds
from billetterie.shared.clock import Clock
from billetterie.shared.db import read

log = logging.getLogger("billetterie.inventory.tasks")


async def sweep_expired_holds(
    engine: AsyncEngine, clock: Clock, *, every_seconds: float = 1.0
) -> None:
    """Run forever: release holds past their expiry. Idempotent across processes: two sweepers
    racing release each hold once (the release is a conditional update on ACTIVE holds)."""
    while True:
        try:
            now = clock.now()
            async with read(engine) as conn:
                due = await has_expired_holds(conn, now)
            if due:
                released = await expire_holds(engine, now=now)
                if released:
                    log.info("released %d expired hold(s)", released)
        except Exception:  # the sweeper must survive a failed round; the next one retries
            log.exception("expired-hold sweep failed")
        await asyncio.sleep(every_seconds)


def start(engine: AsyncEngine, clock: Clock, board: Board) -> list[asyncio.Task[None]]:
    return [
        asyncio.create_task(board.follow(), name="availability-board"),
        asyncio.create_task(sweep_expired_holds(engine, clock), name="hold-sweeper"),
    ]
