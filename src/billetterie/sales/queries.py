"""Reading orders and tickets back, as the wire shows them. Nothing here writes.

Every read is scoped to the caller's institution and sales channel: another channel's order or
ticket does not exist for it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.payments.services import order_card_payments
from billetterie.sales import db
from billetterie.sales.errors import UnknownOrder
from billetterie.sales.models import OrderState, Seller, TicketState

Json = dict[str, Any]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _movement(row: Any, ticket: Any | None) -> Json:
    labels = row.labels or {}
    seat = None
    if row.performance_seat_id is not None:
        seat = {
            "id": row.performance_seat_id,
            "area": labels.get("area"),
            "block": labels.get("block"),
            "row": labels.get("row"),
            "number": labels.get("number"),
        }
    return {
        "movementId": row.id,
        "operationId": row.operation_id,
        "state": row.state,
        "productId": row.product_id,
        "performanceId": row.performance_id,
        "seatCategoryId": row.seat_category_id,
        "audienceSubCategoryId": row.audience_sub_category_id,
        "priceLevelId": row.price_level_id,
        "itemId": row.product_item_id,
        "timeslotId": row.timeslot_id,
        "contingentId": row.contingent_id,
        "seat": seat,
        "amount": row.amount,
        "vatRate": row.vat_rate,
        "holder": row.holder,
        "ticket": None
        if ticket is None
        else {"ticketId": ticket.id, "ticketState": ticket.state, "barcode": ticket.barcode},
    }


async def _card_payments(conn: AsyncConnection, order: Any, payments: Sequence[Any]) -> list[Json]:
    """The order's card payment attempts with their refunds. Read only for an order that can
    have one (awaiting a card payment, abandoned, or paid by card), so the other sales' reads
    stay as they were."""
    if not (
        order.pending_payments is not None
        or order.state == OrderState.ABANDONNED.value
        or any(p.payment_type == "CARD" for p in payments)
    ):
        return []
    return [
        {
            "paymentState": c.intent.state.value,
            "provider": c.intent.provider,
            "reference": c.intent.reference,
            "amount": c.intent.amount,
            "refundedAmount": c.intent.refunded_amount,
            "refunds": [
                {
                    "refundId": r.refund.id,
                    "amount": r.refund.amount,
                    "state": r.refund.state.value,
                    "reason": r.reason,
                    "attempts": r.attempts,
                    "lastError": r.last_error,
                }
                for r in c.refunds
            ],
        }
        for c in await order_card_payments(
            conn, institution_id=order.institution_id, order_id=order.id
        )
    ]


async def order_document(
    conn: AsyncConnection,
    order: Any,
    *,
    operation_ids: Sequence[int] | None = None,
    contents: OrderContents | None = None,
) -> Json:
    """The order as ``getOrderDetails`` renders it (``operationDataUpdates`` and
    ``movementDataUpdates`` list only ``operation_ids``' when given). ``contents``: the
    order's rows when the caller has them all (a cart it just created), else they are read."""
    if contents is None:
        contents = await order_contents(conn, order.id)
    operations, movements, payments = contents.operations, contents.movements, contents.payments
    tickets = {r.movement_id: r for r in contents.tickets}
    by_operation: dict[int, list[Json]] = defaultdict(list)
    rendered = []
    for row in movements:
        item = _movement(row, tickets.get(row.id))
        by_operation[row.operation_id].append(item)
        rendered.append(item)
    document: Json = {
        "orderId": order.id,
        "orderSecretId": order.secret_id,
        "orderType": order.order_type,
        "orderState": order.state,
        "pointOfSalesId": order.point_of_sale_id,
        "salesChannelId": order.sales_channel_id,
        "currencyCode": order.currency,
        "totalAmount": order.total,
        "paidAmount": order.paid,
        "remainingAmount": order.total - order.paid if order.state == "RUNNING" else 0,
        "creationDate": _iso(order.created_at),
        "expirationDate": _iso(order.expires_at),
        "closingDate": _iso(order.closed_at),
        "contactNumber": order.contact_number,
        "externalReference": order.external_reference,
        "originOrderId": order.origin_order_id,
        "cardPaymentPending": order.pending_payments is not None,
        "operations": [
            {
                "operationId": o.id,
                "operationType": o.kind,
                "productId": o.product_id,
                "state": o.state,
                "quantity": o.quantity,
                "movements": by_operation[o.id],
            }
            for o in operations
        ],
        "payments": [
            {
                "paymentId": r.id,
                "paymentMethodId": r.payment_method_id,
                "paymentMethodCode": r.method_code,
                "paymentType": r.payment_type,
                "amount": r.amount,
                "reference": r.reference if r.payment_type != "VOUCHER" else None,
                "date": _iso(r.created_at),
            }
            for r in payments
        ],
    }
    document["cardPayments"] = await _card_payments(conn, order, payments)
    if operation_ids is not None:
        wanted = set(operation_ids)
        document["operationDataUpdates"] = [
            o for o in document["operations"] if o["operationId"] in wanted
        ]
        document["movementDataUpdates"] = [mv for mv in rendered if mv["operationId"] in wanted]
    return document


@dataclass(frozen=True)
class OrderContents:
    """An order's operations, movements, tickets and payments, each in id order."""

    operations: Sequence[Any]
    movements: Sequence[Any]
    tickets: Sequence[Any] = ()
    payments: Sequence[Any] = ()


async def order_contents(conn: AsyncConnection, order_id: int) -> OrderContents:
    m, op, t, p = db.movement.c, db.operation.c, db.ticket.c, db.payment.c
    return OrderContents(
        (
            await conn.execute(
                sa.select(db.operation).where(op.order_id == order_id).order_by(op.id)
            )
        ).all(),
        (
            await conn.execute(sa.select(db.movement).where(m.order_id == order_id).order_by(m.id))
        ).all(),
        (
            await conn.execute(sa.select(db.ticket).where(t.order_id == order_id).order_by(t.id))
        ).all(),
        (
            await conn.execute(sa.select(db.payment).where(p.order_id == order_id).order_by(p.id))
        ).all(),
    )


async def order_row(conn: AsyncConnection, seller: Seller, order_id: int) -> Any:
    o = db.sales_order.c
    row = (
        await conn.execute(
            sa.select(db.sales_order).where(
                o.id == order_id,
                o.institution_id == seller.institution_id,
                o.sales_channel_id == seller.sales_channel_id,
            )
        )
    ).first()
    if row is None:
        raise UnknownOrder(f"no order {order_id}")
    return row


async def order_by_secret(conn: AsyncConnection, institution_id: int, secret: str) -> Any:
    """The order whose public secret this is, in the institution (any channel: the secret is
    the proof of possession)."""
    o = db.sales_order.c
    row = (
        await conn.execute(
            sa.select(db.sales_order).where(
                o.secret_id == secret, o.institution_id == institution_id
            )
        )
    ).first()
    if row is None:
        raise UnknownOrder("no order with this secret")
    return row


@dataclass(frozen=True)
class TicketFilter:
    product_id: int | None = None
    performance_id: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    states: tuple[str, ...] = ()


async def list_tickets(
    conn: AsyncConnection,
    seller: Seller,
    criteria: TicketFilter,
    *,
    start_position: int,
    max_results: int,
    tariff_codes: dict[int, str],
) -> tuple[list[Json], bool]:
    """Tickets sold on the seller's channel, oldest first; ``truncated`` when more follow.
    ``start``/``end`` bound the issue date."""
    t, m, o = db.ticket.c, db.movement.c, db.sales_order.c
    query = (
        sa.select(
            t.id,
            t.state,
            t.order_id,
            t.movement_id,
            t.product_id,
            t.performance_id,
            t.barcode,
            t.issued_at,
            m.seat_category_id,
            m.audience_sub_category_id,
            m.price_level_id,
            m.amount,
            m.product_item_id,
            m.timeslot_id,
        )
        .join(db.movement, m.id == t.movement_id)
        .join(db.sales_order, o.id == t.order_id)
        .where(
            t.institution_id == seller.institution_id,
            o.sales_channel_id == seller.sales_channel_id,
        )
    )
    if criteria.product_id is not None:
        query = query.where(t.product_id == criteria.product_id)
    if criteria.performance_id is not None:
        query = query.where(t.performance_id == criteria.performance_id)
    if criteria.start is not None:
        query = query.where(t.issued_at >= criteria.start)
    if criteria.end is not None:
        query = query.where(t.issued_at < criteria.end)
    if criteria.states:
        query = query.where(t.state.in_(criteria.states))
    rows = (
        await conn.execute(query.order_by(t.id).offset(start_position).limit(max_results + 1))
    ).all()
    summaries = [
        {
            "ticketId": r.id,
            "ticketState": TicketState(r.state).listed_as,
            "orderId": r.order_id,
            "movementId": r.movement_id,
            "productId": r.product_id,
            "performanceId": r.performance_id,
            "itemId": r.product_item_id,
            "timeslotId": r.timeslot_id,
            "seatCategoryId": r.seat_category_id,
            "audienceSubCategoryId": r.audience_sub_category_id,
            "audienceSubCategory": tariff_codes.get(r.audience_sub_category_id),
            "priceLevelId": r.price_level_id,
            "price": r.amount,
            "barcode": r.barcode,
            "issueDate": _iso(r.issued_at),
        }
        for r in rows[:max_results]
    ]
    return summaries, len(rows) > max_results


@dataclass(frozen=True)
class OrderFilter:
    contact_number: str | None = None
    external_reference: str | None = None
    states: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None


async def search_orders(
    conn: AsyncConnection,
    seller: Seller,
    criteria: OrderFilter,
    *,
    start_position: int,
    max_results: int,
) -> tuple[list[Json], bool]:
    """Orders of the seller's channel by contact, external reference, state and creation
    date, newest first; ``truncated`` when more follow."""
    o = db.sales_order.c
    query = sa.select(db.sales_order).where(
        o.institution_id == seller.institution_id,
        o.sales_channel_id == seller.sales_channel_id,
    )
    if criteria.contact_number is not None:
        query = query.where(o.contact_number == criteria.contact_number)
    if criteria.external_reference is not None:
        query = query.where(o.external_reference == criteria.external_reference)
    if criteria.states:
        query = query.where(o.state.in_(criteria.states))
    if criteria.start is not None:
        query = query.where(o.created_at >= criteria.start)
    if criteria.end is not None:
        query = query.where(o.created_at < criteria.end)
    rows = (
        await conn.execute(
            query.order_by(o.created_at.desc(), o.id.desc())
            .offset(start_position)
            .limit(max_results + 1)
        )
    ).all()
    return [
        {
            "orderId": r.id,
            "orderType": r.order_type,
            "orderState": r.state,
            "totalAmount": r.total,
            "paidAmount": r.paid,
            "currencyCode": r.currency,
            "contactNumber": r.contact_number,
            "externalReference": r.external_reference,
            "originOrderId": r.origin_order_id,
            "creationDate": _iso(r.created_at),
            "closingDate": _iso(r.closed_at),
        }
        for r in rows[:max_results]
    ], len(rows) > max_results


async def order_by_public_secret(conn: AsyncConnection, secret: str) -> Any:
    """The order whose public secret this is (for links given to the buyer: the PDF)."""
    o = db.sales_order.c
    row = (await conn.execute(sa.select(db.sales_order).where(o.secret_id == secret))).first()
    if row is None:
        raise UnknownOrder("no order with this secret")
    return row
