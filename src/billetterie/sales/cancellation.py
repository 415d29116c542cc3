"""Cancelling operations and movements.

Before the order is closed, cancelling is abandoning: the places go back at once
(:func:`billetterie.sales.carts.release_movements_in`). After it is closed, in one inventory
transaction: the movements become CANCELED, their tickets CANCELLED (and their barcodes enter
the revocation list), their places return to inventory, and a refund order (type REFUND,
``origin_order_id`` the sale) pays the amount back through the sale's own payments, newest
first, each up to what it paid less what was already refunded: vouchers, credit balances and
pending accounts are credited, cash and card are recorded as refunds (card through the
provider). A controlled ticket cannot be cancelled. Cancelling what is already cancelled
changes nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.inventory.returns import return_places_in
from billetterie.inventory.services import in_transaction
from billetterie.sales import accounts, db, events
from billetterie.sales.barcode_keys import revoke
from billetterie.sales.carts import (
    close_emptied_operations,
    load_order,
    refresh_total,
    release_movements_in,
    running,
)
from billetterie.sales.errors import InvalidOperation, NotCancellable, UnknownMovement
from billetterie.sales.models import (
    AccountKind,
    MovementState,
    OrderState,
    Seller,
    TicketState,
)
from billetterie.shared import audit

# (connection, payment row, amount): requests the card refund in the caller's transaction
CardRefund = Callable[[AsyncConnection, Any, int], Awaitable[None]]


async def _movements_of(
    conn: AsyncConnection,
    order_id: int,
    operation_ids: Sequence[int],
    movement_ids: Sequence[int],
) -> list[Any]:
    m, op = db.movement.c, db.operation.c
    if operation_ids:
        found = {
            r.id
            for r in (
                await conn.execute(
                    sa.select(op.id).where(op.order_id == order_id, op.id.in_(operation_ids))
                )
            ).all()
        }
        if found != set(operation_ids):
            raise UnknownMovement("some of these operations are not in this order")
    rows = (
        await conn.execute(
            sa.select(db.movement, op.hold_id)
            .join(db.operation, op.id == m.operation_id)
            .where(
                m.order_id == order_id,
                sa.or_(m.operation_id.in_(operation_ids), m.id.in_(movement_ids)),
            )
            .order_by(m.id)
        )
    ).all()
    if not {r.id for r in rows} >= set(movement_ids):
        raise UnknownMovement("some of these movements are not in this order")
    return list(rows)


async def _refund(
    conn: AsyncConnection,
    seller: Seller,
    order: Any,
    refund_order_id: int,
    amount: int,
    now: datetime,
    card_refund: CardRefund | None,
) -> None:
    p = db.payment.c
    payments = (
        await conn.execute(
            sa.select(db.payment).where(p.order_id == order.id).order_by(p.id.desc())
        )
    ).all()
    refunded_of: dict[int, int] = {}
    for row in (
        await conn.execute(
            sa.select(db.payment).where(
                p.order_id.in_(
                    sa.select(db.sales_order.c.id).where(
                        db.sales_order.c.origin_order_id == order.id
                    )
                )
            )
        )
    ).all():
        origin = (
            int(row.reference.split(":", 1)[1])
            if (row.reference or "").startswith("payment:")
            else None
        )
        if origin is not None:
            refunded_of[origin] = refunded_of.get(origin, 0) - row.amount
    left = amount
    for payment in payments:
        if left == 0:
            break
        share = min(left, payment.amount - refunded_of.get(payment.id, 0))
        if share <= 0:
            continue
        if payment.account_id is not None:
            account = (
                await conn.execute(
                    sa.select(db.account).where(db.account.c.id == payment.account_id)
                )
            ).one()
            await accounts.credit(
                conn,
                accounts.Account(
                    account.id,
                    AccountKind(account.kind),
                    account.code,
                    account.currency,
                    account.balance,
                    account.credit_limit,
                    account.expires_at,
                ),
                institution_id=seller.institution_id,
                amount=share,
                order_id=refund_order_id,
                description=f"refund of order {order.id}",
                now=now,
            )
        elif payment.payment_type == "CARD" and card_refund is not None:
            await card_refund(conn, payment, share)
        await conn.execute(
            sa.insert(db.payment).values(
                institution_id=seller.institution_id,
                order_id=refund_order_id,
                payment_method_id=payment.payment_method_id,
                method_code=payment.method_code,
                payment_type=payment.payment_type,
                amount=-share,
                account_id=payment.account_id,
                reference=f"payment:{payment.id}",
                created_at=now,
            )
        )
        left -= share
    if left:
        raise NotCancellable("the order's payments cannot cover this refund")


async def cancel_operations(
    engine: AsyncEngine,
    seller: Seller,
    order_id: int,
    *,
    operation_ids: Sequence[int] = (),
    movement_ids: Sequence[int] = (),
    now: datetime,
    card_refund: CardRefund | None = None,
) -> int | None:
    """Cancel operations and movements of an order (see the module). Returns the refund
    order's id when money was paid back, else None."""
    if not operation_ids and not movement_ids:
        raise InvalidOperation("name the operations or movements to cancel")

    async def work(conn: AsyncConnection) -> int | None:
        order = await load_order(conn, seller, order_id, for_update=True)
        rows = await _movements_of(conn, order.id, operation_ids, movement_ids)
        if order.state == OrderState.RUNNING.value:
            running(order, now)
            await release_movements_in(conn, seller, order, [r.id for r in rows], now)
            return None
        if order.state not in (OrderState.CLOSED.value, OrderState.CANCELED.value):
            raise NotCancellable(f"order {order.id} is {order.state}")
        sold = [r for r in rows if r.state == MovementState.SOLD.value]
        if not sold:
            return None
        t = db.ticket.c
        tickets = (
            await conn.execute(
                sa.select(t.id, t.state).where(
                    t.movement_id.in_([r.id for r in sold]),
                    t.state.not_in([TicketState.CANCELLED.value, TicketState.INVALIDATED.value]),
                )
            )
        ).all()
        if any(r.state == TicketState.CONTROLLED.value for r in tickets):
            raise NotCancellable("a controlled ticket cannot be cancelled")
        await return_places_in(
            conn,
            institution_id=seller.institution_id,
            places=[(r.hold_id, r.stock_id, r.performance_seat_id) for r in sold],
            now=now,
            actor=seller.actor,
        )
        amount = sum(r.amount for r in sold)
        refund_order_id = None
        if amount > 0:
            refund_order_id = (
                await conn.execute(
                    sa.insert(db.sales_order)
                    .values(
                        institution_id=seller.institution_id,
                        point_of_sale_id=seller.point_of_sale_id,
                        sales_channel_id=seller.sales_channel_id,
                        secret_id=secrets.token_urlsafe(24),
                        operator=seller.operator,
                        order_type="REFUND",
                        state=OrderState.CLOSED.value,
                        currency=order.currency,
                        total=-amount,
                        paid=-amount,
                        language=order.language,
                        contact_number=order.contact_number,
                        purchaser=order.purchaser,
                        origin_order_id=order.id,
                        created_at=now,
                        updated_at=now,
                        closed_at=now,
                    )
                    .returning(db.sales_order.c.id)
                )
            ).scalar_one()
            await _refund(conn, seller, order, refund_order_id, amount, now, card_refund)
        m = db.movement.c
        await conn.execute(
            sa.update(db.movement)
            .where(m.id.in_([r.id for r in sold]))
            .values(
                state=MovementState.CANCELED.value,
                cancelled_at=now,
                refund_order_id=refund_order_id,
            )
        )
        if tickets:
            ticket_ids = [r.id for r in tickets]
            await conn.execute(
                sa.update(db.ticket)
                .where(t.id.in_(ticket_ids))
                .values(state=TicketState.CANCELLED.value, cancelled_at=now)
            )
            await revoke(
                conn,
                institution_id=seller.institution_id,
                ticket_ids=ticket_ids,
                reason="CANCELLED",
                now=now,
            )
        await close_emptied_operations(
            conn,
            {r.operation_id for r in sold},
            was=MovementState.SOLD,
            becomes=MovementState.CANCELED,
        )
        await refresh_total(conn, order.id, now)
        still_sold = (
            await conn.execute(
                sa.select(sa.func.count()).where(
                    m.order_id == order.id, m.state == MovementState.SOLD.value
                )
            )
        ).scalar_one()
        o = db.sales_order.c
        await conn.execute(
            sa.update(db.sales_order)
            .where(o.id == order.id)
            .values(
                paid=o.paid - amount,
                state=OrderState.CLOSED.value if still_sold else OrderState.CANCELED.value,
            )
        )
        await audit.record(
            conn,
            institution_id=seller.institution_id,
            action="sales.order.cancelled",
            actor=seller.actor,
            at=now,
            order_id=order.id,
            movements=[r.id for r in sold],
            refund_order_id=refund_order_id,
            amount=amount,
        )
        await events.order_cancelled(conn, seller, order.id, now)
        return None if refund_order_id is None else int(refund_order_id)

    result: int | None = await in_transaction(engine, work)
    return result
