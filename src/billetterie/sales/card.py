"""Paying an order by card: the provider's hosted page, then its confirmation closes the order.

Flow:

1. :func:`start_card_payment` (``createPaymentsAndCloseOrder``): the running cart's total is
   paid by one card payment, optionally next to voucher, credit-balance and pending-account
   payments that cover part of it (mixed payment). An intent is started with the provider for
   the card's part, the order records it in ``pending_payments`` (the cart can no longer
   change: ``reopenOrder`` first) and its holds are kept ``CARD_GRACE`` longer, so a buyer on
   the payment page does not lose the seats. The other parts are **held**: debited from their
   accounts in the same transaction (the conditional debit of :mod:`~billetterie.sales.accounts`,
   last, so the account's row lock is held only for the end), so they cannot be spent twice
   while the buyer is on the card page.
2. The provider confirms through its webhook; :func:`on_payment_confirmed` (registered with the
   payment gateway, with :func:`lock_paid_order`: the order is locked before the intent, the
   lock order of every path here) closes the order in the webhook's transaction, with the card
   payment and the held parts recorded (not debited again) and the tickets issued. If the order
   can no longer be closed (it was reopened and expired, say), the money is refunded instead: a
   refund is requested in the same transaction (an outbox job pays it back after commit), the
   held parts are given back if they still are held, and the order stays unpaid.
3. :func:`reopen_order` (``reopenOrder``) gives the card payment up while it is pending, so the
   cart can be changed or paid otherwise; the held parts are credited back. So does the expiry
   of the cart (:func:`billetterie.sales.carts.expire_orders`). A declined card does not give
   them back: the buyer may try another card on the same page until the cart is reopened or
   expires.
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
from billetterie.sales import accounts, db
from billetterie.sales.barcode_keys import KeyVault
from billetterie.sales.carts import load_order, running
from billetterie.sales.closing import _account_for, close_order_in
from billetterie.sales.errors import (
    ContactRequired,
    EmptyOrder,
    InsufficientFunds,
    InvalidOperation,
    OrderClosed,
    PaymentMethodNotAllowed,
    WrongTotal,
)
from billetterie.sales.models import (
    ACCOUNT_OF_PAYMENT,
    AccountKind,
    MovementState,
    OrderState,
    PaymentRequest,
    Seller,
)
from billetterie.shared import audit
from billetterie.shared.errors import DomainError

CARD_GRACE = timedelta(minutes=15)
TEST_PROVIDER = "test"

# seller of an order's point of sale, inside a transaction: the composition root provides it
SellerOf = Callable[[AsyncConnection, int], Awaitable[Seller]]


def split_payments(
    seller: Seller, payments: list[PaymentRequest], total: int
) -> tuple[PaymentRequest, list[PaymentRequest]]:
    """The card payment and the others (voucher, credit balance, pending account) of a mixed
    payment, checked: exactly one card payment, every method accepted at this point of sale and
    held on an account, every amount positive, the sum the order's total."""
    cards: list[PaymentRequest] = []
    others: list[PaymentRequest] = []
    for payment in payments:
        method = seller.method(payment.payment_method_id)
        if method is None or not method.for_payment:
            raise PaymentMethodNotAllowed(
                f"payment method {payment.payment_method_id} is not accepted at this point of sale"
            )
        if method.payment_type == "CARD":
            cards.append(payment)
        elif method.payment_type in ACCOUNT_OF_PAYMENT:
            others.append(payment)
        else:
            raise PaymentMethodNotAllowed(
                f"{method.payment_type.lower()} cannot be paired with a card payment: "
                "close the order with closeOrder"
            )
        if payment.amount <= 0:
            raise WrongTotal("every payment must be a positive amount")
    if len(cards) != 1:
        raise InvalidOperation("give exactly one card payment (and any voucher or account ones)")
    paid = sum(p.amount for p in payments)
    if paid != total:
        raise WrongTotal(f"the payments add up to {paid}, the order costs {total}")
    return cards[0], others


async def _accounts_of(
    conn: AsyncConnection,
    seller: Seller,
    order: Any,
    parts: list[PaymentRequest],
    contact_number: str | None,
    now: datetime,
) -> list[accounts.Account]:
    """The account of each non-card part, checked (without a lock) to hold its amount, so a
    refusal comes before the provider is called; the debit itself decides."""
    found: list[accounts.Account] = []
    wanted: dict[int, int] = {}
    for part in parts:
        method = seller.method(part.payment_method_id)
        assert method is not None
        kind = ACCOUNT_OF_PAYMENT[method.payment_type]
        account = await _account_for(conn, seller, kind, order, part.reference, contact_number)
        wanted[account.id] = wanted.get(account.id, 0) + part.amount
        if account.expires_at is not None and account.expires_at <= now:
            raise InsufficientFunds(f"{account.kind.value.lower()} {account.code} has expired")
        if account.balance + account.credit_limit < wanted[account.id]:
            raise InsufficientFunds(
                "over the pending account's credit limit"
                if kind == AccountKind.PENDING_ACCOUNT
                else f"not enough left on {kind.value.lower()} {account.code}"
            )
        found.append(account)
    return found


async def _hold_parts(
    conn: AsyncConnection,
    seller: Seller,
    order_id: int,
    parts: list[PaymentRequest],
    found: list[accounts.Account],
    now: datetime,
) -> list[dict[str, Any]]:
    """Debit each part from its account (the hold); what ``pending_payments`` records."""
    held: list[dict[str, Any]] = []
    for part, account in zip(parts, found, strict=True):
        await accounts.debit(
            conn,
            account,
            institution_id=seller.institution_id,
            amount=part.amount,
            order_id=order_id,
            description=f"order {order_id} (held while the card is paid)",
            now=now,
        )
        held.append(
            {
                "paymentMethodId": part.payment_method_id,
                "amount": part.amount,
                "reference": part.reference,
                "accountId": account.id,
            }
        )
    return held


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
    """Start paying a running cart by card, alone or with held voucher, credit-balance or
    pending-account parts (see the module); returns the provider page's URL. Refusals
    (``error.payment.wrong_total``, ``error.payment.method_not_allowed``,
    ``error.payment.insufficient_funds``, ``error.payment.unknown_account``...) change nothing."""

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
        if order.total <= 0:
            raise WrongTotal("nothing to pay by card: close the order with closeOrder")
        payment, parts = split_payments(seller, payments, order.total)
        found = await _accounts_of(conn, seller, order, parts, contact, now)
        intent = await start_payment(
            conn,
            gateway,
            institution_id=seller.institution_id,
            order_id=order.id,
            amount=payment.amount,
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
        held = await _hold_parts(conn, seller, order.id, parts, found, now)
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
                    "held": held,
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
            card_amount=payment.amount,
            held=[{"accountId": h["accountId"], "amount": h["amount"]} for h in held],
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
        await accounts.release_held(
            conn,
            institution_id=seller.institution_id,
            order_id=order.id,
            held=pending.get("held", []),
            reason="card payment given up",
            now=now,
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


async def lock_paid_order(conn: AsyncConnection, intent: PaymentIntent) -> None:
    """Lock the order an intent pays, before the gateway locks the intent (registered with
    the confirmation handler): every transaction that locks both locks the order first, as
    :func:`reopen_order`, the cart's expiry and cancellations do, so none waits on another in a
    cycle. SQLite has one writer at a time and no row locks."""
    if conn.dialect.name != "postgresql":
        return
    o = db.sales_order.c
    await conn.execute(
        sa.select(o.id)
        .where(o.id == intent.order_id, o.institution_id == intent.institution_id)
        .with_for_update()
    )


def confirmation_handler(
    seller_of: SellerOf, vault: KeyVault, now: Callable[[], datetime]
) -> Callable[[AsyncConnection, PaymentIntent], Awaitable[None]]:
    """The gateway's confirmed-payment handler: close the order the intent pays."""

    async def on_payment_confirmed(conn: AsyncConnection, intent: PaymentIntent) -> None:
        o = db.sales_order.c
        query = sa.select(db.sales_order).where(
            o.id == intent.order_id, o.institution_id == intent.institution_id
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()  # held already when the gateway ran lock_paid_order
        order: Any = (await conn.execute(query)).first()
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
                        ),
                        *(
                            PaymentRequest(
                                int(h["paymentMethodId"]),
                                int(h["amount"]),
                                h.get("reference"),
                                account_id=int(h["accountId"]),
                            )
                            for h in pending.get("held", [])
                        ),
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
            # The order was locked before the savepoint, so it is as read above (the
            # savepoint's changes are rolled back): if it still waits for this payment, it no
            # longer does.
            if (
                order.state == OrderState.RUNNING.value
                and int(pending.get("intentId", 0)) == intent.id
            ):
                await accounts.release_held(
                    conn,
                    institution_id=intent.institution_id,
                    order_id=order.id,
                    held=pending.get("held", []),
                    reason=f"card payment refunded ({refusal.code})",
                    now=at,
                )
                await conn.execute(
                    sa.update(db.sales_order)
                    .where(o.id == order.id)
                    .values(pending_payments=None, updated_at=at)
                )
                await audit.record(
                    conn,
                    institution_id=intent.institution_id,
                    action="sales.order.card_payment_refunded",
                    actor="payments",
                    at=at,
                    order_id=order.id,
                    intent_id=intent.id,
                    code=refusal.code,
                )

    return on_payment_confirmed


async def refund_card_in(conn: AsyncConnection, payment: Any, amount: int, now: datetime) -> int:
    """Request the refund of ``amount`` of a card payment row in the caller's transaction, with
    its outbox job (the worker calls the provider after commit); the refund's id."""
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
