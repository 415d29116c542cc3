"""Paying an order by card: the provider's hosted page, then its confirmation closes the order.

Flow:

1. :func:`start_card_payment` (``createPaymentsAndCloseOrder``): the running cart's total is
   paid by one card payment; an intent is started with the provider, the order records it in
   ``pending_payments`` (the cart can no longer change: ``reopenOrder`` first) and its holds are
   kept ``CARD_GRACE`` longer, so a buyer on the payment page does not lose the seats.
2. The provider confirms through its webhook; :func:`on_payment_confirmed` (registered with the
   payment gateway) closes the order in the webhook's transaction, with the card payment
   recorded and the tickets issued. If the order can no longer be closed (it was reopened and
   expired, say), the money is refunded instead: a refund is requested in the same
   transaction, and the order stays as it is.
3. :func:`reopen_order` (``reopenOrder``) gives the card payment up while it is pending, so the
   cart can be changed or paid otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.inventory.returns import extend_holds_in
from billetterie.inventory.services import in_transaction
from billetterie.payments.models import PaymentIntent
from billetterie.payments.services import (
    PaymentGateway,
    cancel_payment,
    get_payment,
    payment_by_reference,
    request_refund,
    start_payment,
)
from billetterie.sales import db
from billetterie.sales.barcode_keys import KeyVault
from billetterie.sales.carts import load_order, running
from billetterie.sales.closing import close_order_in
from billetterie.sales.errors import (
    ContactRequired,
    EmptyOrder,
    InvalidOperation,
    OrderClosed,
    PaymentMethodNotAllowed,
    WrongTotal,
)
from billetterie.sales.models import MovementState, PaymentRequest, Seller
from billetterie.shared import audit
from billetterie.shared.errors import DomainError

CARD_GRACE = timedelta(minutes=15)
TEST_PROVIDER = "test"

# seller of an order's point of sale, inside a transaction: the composition root provides it
SellerOf = Callable[[AsyncConnection, int], Awaitable[Seller]]


def _card_method(seller: Seller, payments: list[PaymentRequest]) -> PaymentRequest:
    if len(payments) != 1:
        raise InvalidOperation("a card payment pays the whole order: give one payment")
    payment = payments[0]
    method = seller.method(payment.payment_method_id)
    if method is None or not method.for_payment or method.payment_type != "CARD":
        raise PaymentMethodNotAllowed("this point of sale takes no card payment with this method")
    return payment


async def start_card_payment(
    engine: AsyncEngine,
    gateway: PaymentGateway,
    seller: Seller,
    order_id: int,
    payments: list[PaymentRequest],
    *,
    return_url: str,
    contact_number: str | None,
    with_barcodes: bool,
    now: datetime,
    provider: str = TEST_PROVIDER,
) -> str:
    """Start paying a running cart by card; returns the provider page's URL."""
    payment = _card_method(seller, payments)

    async def work(conn: AsyncConnection) -> str:
        order = await load_order(conn, seller, order_id, for_update=True)
        running(order, now)
        if order.pending_payments is not None:
            raise OrderClosed(f"order {order.id} already awaits a card payment")
        m, op = db.movement.c, db.operation.c
        movements = (
            await conn.execute(
                sa.select(m.labels).where(
                    m.order_id == order.id, m.state == MovementState.RESERVED.value
                )
            )
        ).all()
        if not movements:
            raise EmptyOrder(f"order {order.id} has nothing to sell")
        contact = contact_number or order.contact_number
        if contact is None and any(r.labels.get("contactRequired") for r in movements):
            raise ContactRequired("these products are sold to a known contact")
        if payment.amount != order.total or order.total <= 0:
            raise WrongTotal(f"the card payment must be the order's total, {order.total}")
        intent = await start_payment(
            conn,
            gateway,
            institution_id=seller.institution_id,
            order_id=order.id,
            amount=order.total,
            currency=order.currency,
            return_url=return_url,
            provider=provider,
            now=now,
            actor=seller.actor,
        )
        expires_at = max(order.expires_at, now + CARD_GRACE)
        holds = (
            await conn.execute(
                sa.select(op.hold_id).where(
                    op.order_id == order.id,
                    op.state == MovementState.RESERVED.value,
                    op.hold_id.is_not(None),
                )
            )
        ).all()
        await extend_holds_in(
            conn,
            institution_id=seller.institution_id,
            hold_ids=[r.hold_id for r in holds],
            expires_at=expires_at,
        )
        await conn.execute(
            sa.update(db.sales_order)
            .where(db.sales_order.c.id == order.id)
            .values(
                pending_payments={
                    "intentId": intent.id,
                    "provider": provider,
                    "paymentMethodId": payment.payment_method_id,
                    "contactNumber": contact,
                    "generateBarCodes": with_barcodes,
                },
                expires_at=expires_at,
                updated_at=now,
            )
        )
        await audit.record(
            conn,
            institution_id=seller.institution_id,
            action="sales.order.card_payment_started",
            actor=seller.actor,
            at=now,
            order_id=order.id,
            intent_id=intent.id,
        )
        assert intent.redirect_url is not None
        return intent.redirect_url

    result: str = await in_transaction(engine, work)
    return result


async def reopen_order(
    engine: AsyncEngine, seller: Seller, order_id: int, *, now: datetime
) -> None:
    """Give up the order's pending card payment; the cart is running again. Reopening an order
    without one changes nothing."""

    async def work(conn: AsyncConnection) -> None:
        order = await load_order(conn, seller, order_id, for_update=True)
        running(order, now)
        pending = order.pending_payments
        if pending is None:
            return
        await cancel_payment(
            conn,
            institution_id=seller.institution_id,
            intent_id=int(pending["intentId"]),
            now=now,
            actor=seller.actor,
        )
        await conn.execute(
            sa.update(db.sales_order)
            .where(db.sales_order.c.id == order.id)
            .values(pending_payments=None, updated_at=now)
        )
        await audit.record(
            conn,
            institution_id=seller.institution_id,
            action="sales.order.reopened",
            actor=seller.actor,
            at=now,
            order_id=order.id,
        )

    await in_transaction(engine, work)


async def pending_card_page(conn: AsyncConnection, seller: Seller, order_id: int) -> str | None:
    """The provider's page of the order's pending card payment (None when none is pending),
    for a buyer who left it and comes back."""
    order = await load_order(conn, seller, order_id)
    pending = order.pending_payments
    if pending is None:
        return None
    intent = await get_payment(
        conn, institution_id=seller.institution_id, intent_id=int(pending["intentId"])
    )
    return intent.redirect_url


def confirmation_handler(
    seller_of: SellerOf, vault: KeyVault, now: Callable[[], datetime]
) -> Callable[[AsyncConnection, PaymentIntent], Awaitable[None]]:
    """The gateway's confirmed-payment handler: close the order the intent pays."""

    async def on_payment_confirmed(conn: AsyncConnection, intent: PaymentIntent) -> None:
        o = db.sales_order.c
        order: Any = (
            await conn.execute(
                sa.select(db.sales_order).where(
                    o.id == intent.order_id, o.institution_id == intent.institution_id
                )
            )
        ).first()
        if order is None:
            return
        seller = await seller_of(conn, order.point_of_sale_id)
        pending = order.pending_payments or {}
        at = now()
        try:
            async with conn.begin_nested():
                if int(pending.get("intentId", 0)) != intent.id:
                    raise OrderClosed("the order no longer waits for this payment")
                await close_order_in(
                    conn,
                    seller,
                    order.id,
                    [
                        PaymentRequest(
                            int(pending["paymentMethodId"]),
                            intent.amount,
                            f"{intent.provider}:{intent.reference}",
                        )
                    ],
                    contact_number=pending.get("contactNumber"),
                    with_barcodes=bool(pending.get("generateBarCodes", True)),
                    vault=vault,
                    now=at,
                    card_confirmation=True,
                )
        except DomainError as refusal:
            await request_refund(
                conn,
                institution_id=intent.institution_id,
                intent_id=intent.id,
                amount=intent.amount,
                reason=f"order {order.id} could not be closed: {refusal.code}",
                now=at,
                actor="payments",
            )

    return on_payment_confirmed


async def refund_card_in(conn: AsyncConnection, payment: Any, amount: int, now: datetime) -> int:
    """Request the refund of ``amount`` of a card payment row; the refund's id (the provider is
    called after commit)."""
    provider, _, reference = (payment.reference or ":").partition(":")
    intent = await payment_by_reference(conn, provider=provider, reference=reference)
    refund = await request_refund(
        conn,
        institution_id=intent.institution_id,
        intent_id=intent.id,
        amount=amount,
        reason=f"cancellation in order {intent.order_id}",
        now=now,
        actor="sales",
    )
    return refund.id
