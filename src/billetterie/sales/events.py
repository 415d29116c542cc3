"""What the sales context tells partners, inside its own transactions.

An order closed or cancelled is emitted to the point of sale's webhook subscriptions through
the outbox (:func:`billetterie.webhooks.services.emit`) in the same transaction as the change,
so a partner hears of an order exactly when it is committed, and never of one rolled back. The
full payload of ``payload: full`` subscriptions is ``getOrderDetails``' ``orderData``, rendered
when the delivery is sent (:func:`register_webhook_payloads`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.sales import db
from billetterie.sales.models import Seller
from billetterie.sales.queries import order_document
from billetterie.webhooks.models import SubjectFacts
from billetterie.webhooks.services import emit, register_payload_renderer


async def order_closed(
    conn: AsyncConnection,
    seller: Seller,
    order_id: int,
    now: datetime,
    *,
    labels: Sequence[dict[str, Any]] | None = None,
    setup_version: int = 0,
) -> None:
    """``labels``: those of every movement of the order, when the caller has them;
    ``setup_version``: the seller's, when the transaction checked it is the institution's."""
    await _emit(conn, seller, "order.closed", order_id, now, labels, setup_version)


async def order_cancelled(
    conn: AsyncConnection, seller: Seller, order_id: int, now: datetime
) -> None:
    await _emit(conn, seller, "order.cancelled", order_id, now)


async def _facts(
    conn: AsyncConnection, order_id: int, labels: Sequence[dict[str, Any]] | None
) -> SubjectFacts:
    m = db.movement.c
    if labels is None:
        labels = [
            r.labels
            for r in (await conn.execute(sa.select(m.labels).where(m.order_id == order_id)))
        ]
    return SubjectFacts(
        product_codes=frozenset(lb["productCode"] for lb in labels if lb.get("productCode")),
        product_families=frozenset(lb["productFamily"] for lb in labels if lb.get("productFamily")),
    )


async def _emit(
    conn: AsyncConnection,
    seller: Seller,
    event: str,
    order_id: int,
    now: datetime,
    labels: Sequence[dict[str, Any]] | None = None,
    setup_version: int = 0,
) -> None:
    await emit(
        conn,
        institution_id=seller.institution_id,
        point_of_sale_id=seller.point_of_sale_id,
        event=event,
        subject_id=order_id,
        now=now,
        facts=await _facts(conn, order_id, labels),
        dedupe_key=f"{event}:{order_id}:{now.isoformat()}",
        setup_version=setup_version,
    )


async def _order_payload(
    conn: AsyncConnection, institution_id: int, order_id: Any
) -> dict[str, Any]:
    o = db.sales_order.c
    row = (
        await conn.execute(
            sa.select(db.sales_order).where(
                o.id == int(order_id), o.institution_id == institution_id
            )
        )
    ).first()
    if row is None:  # the delivery fails for good: there is nothing to send
        raise LookupError(f"no order {order_id}")
    return {"orderData": await order_document(conn, row)}


def register_webhook_payloads() -> None:
    for event in ("order.closed", "order.cancelled"):
        register_payload_renderer(event, _order_payload)
