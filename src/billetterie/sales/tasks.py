"""Background work of the sales context: carts past their expiry become ABANDONNED."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.sales.carts import expire_orders
from billetterie.shared.clock import Clock

log = logging.getLogger("billetterie.sales.tasks")


async def sweep_expired_orders(engine: AsyncEngine, clock: Clock) -> int:
    """One round: mark every running cart past its expiry ABANDONNED; how many. Safe in several
    processes at once (each order is claimed with a conditional update)."""
    total = 0
    while expired := await expire_orders(engine, now=clock.now()):
        total += expired
    if total:
        log.info("abandoned %d expired cart(s)", total)
    return total


async def run_order_sweeper(engine: AsyncEngine, clock: Clock, every_seconds: float = 5.0) -> None:
    while True:
        try:
            await sweep_expired_orders(engine, clock)
        except Exception:  # a failed round must not stop the sweeper; the next one retries
            log.exception("expired-order sweep failed")
        await asyncio.sleep(every_seconds)
