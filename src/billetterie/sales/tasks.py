"""Background work of the sales context: carts past their expiry become ABANDONNED."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.sales.carts import expire_orders

log = logging.getLogger("billetterie.sales.tasks")


async def abandon_expired_orders(engine: AsyncEngine, now: datetime) -> int:
    """One round (a periodic task of the background loops): mark every running cart past its
    expiry ABANDONNED and release its holds; how many. Safe in several processes at once
    (each order is claimed with a conditional update)."""
    total = 0
    while expired := await expire_orders(engine, now=now):
        total += expired
    if total:
        log.info("abandoned %d expired cart(s)", total)
    return total
