"""Card payment use cases: start an intent, apply the provider's webhooks, refund, reconcile.

Who calls what
    The sales context calls :func:`start_payment` inside its own transaction (the intent is
    written there; the provider's ``start`` runs while it is open, so adapters keep it short)
    and sends the buyer to ``intent.redirect_url``. The provider's webhook reaches
    :func:`handle_webhook`, which verifies it and, in one transaction, moves the intent and
    calls the handler the sales context registered with
    :meth:`PaymentGateway.set_payment_confirmed_handler`. Refunds are two steps:
    :func:`request_refund` in the caller's transaction writes the PENDING refund and its outbox
    job (topic ``payments.refund``), so the refund exists exactly when the change that calls for
    it committed; the worker's job (:mod:`billetterie.payments.tasks`) then runs
    :func:`execute_refund` (idempotent; calls the provider outside any transaction), retried
    with backoff while the provider is unavailable.

Idempotency
    Every applied webhook event is recorded by ``(provider, event_id)``: the same event again
    changes nothing. A refund's provider call carries ``refund-<id>`` as its idempotency key,
    the same on every retry of its job, so the provider refunds once.

Lock order
    A transaction that locks both an order (a sales row) and its intent locks the order first:
    reopening and expiring a cart, cancelling, and the confirmation too (:func:`apply_event`
    has the sales context lock the order before it locks the intent), so two of them never
    wait on each other in a cycle.

Tenancy
    Webhooks and the hosted page find an intent by its provider reference (unique per
    provider); everything after that is scoped to the intent's institution.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.payments import db
from billetterie.payments.errors import (
    AmountMismatch,
    InvalidPayment,
    InvalidReturnUrl,
    PaymentClosed,
    RefundRefused,
    UnknownPayment,
    UnknownProvider,
)
from billetterie.payments.models import (
    EventKind,
    PaymentIntent,
    PaymentProvider,
    PaymentState,
    ProviderEvent,
    Refund,
    RefundState,
)
from billetterie.shared import audit, outbox
from billetterie.shared.db import read, transaction

log = logging.getLogger("billetterie.payments")

PaymentConfirmed = Callable[[AsyncConnection, PaymentIntent], Awaitable[None]]
PayerLock = Callable[[AsyncConnection, PaymentIntent], Awaitable[None]]
MAX_AMOUNT = 10**15  # a trillion units in thousandths: far beyond any order
REFUND_TOPIC = "payments.refund"  # the outbox job that pays a requested refund back


class PaymentGateway:
    """The providers an application serves and the sales context's confirmation handler.

    Built once per application (``build_app``); providers are registered at start-up.
    """

    def __init__(self) -> None:
        self._providers: dict[str, PaymentProvider] = {}
        self._confirmed: PaymentConfirmed | None = None
        self._lock_payer: PayerLock | None = None

    def register(self, provider: PaymentProvider) -> None:
        self._providers[provider.name] = provider

    def provider(self, name: str) -> PaymentProvider:
        found = self._providers.get(name)
        if found is None:
            raise UnknownProvider(f"no payment provider {name!r} is configured")
        return found

    @property
    def provider_names(self) -> list[str]:
        return sorted(self._providers)

    def set_payment_confirmed_handler(
        self, handler: PaymentConfirmed, *, lock_payer: PayerLock | None = None
    ) -> None:
        """``handler(conn, intent)`` runs in the webhook's transaction when a payment succeeds
        (once per intent). Raising rolls the confirmation back; the provider retries.

        ``lock_payer(conn, intent)`` locks what the handler changes (the sales order) and runs
        *before* the intent's row is locked: the sales context locks an order, then its intent
        (reopening, cart expiry, cancellation), so a confirmation that locked the intent first
        and the order second could deadlock with them."""
        self._confirmed = handler
        self._lock_payer = lock_payer

    async def lock_payer(self, conn: AsyncConnection, intent: PaymentIntent) -> None:
        if self._lock_payer is not None:
            await self._lock_payer(conn, intent)

    async def payment_confirmed(self, conn: AsyncConnection, intent: PaymentIntent) -> None:
        if self._confirmed is None:
            log.warning("payment %s confirmed but no handler is registered", intent.id)
            return
        await self._confirmed(conn, intent)


def _intent(row: Any) -> PaymentIntent:
    return PaymentIntent(
        id=row.id,
        institution_id=row.institution_id,
        order_id=row.order_id,
        amount=row.amount,
        currency=row.currency,
        provider=row.provider,
        reference=row.reference,
        state=PaymentState(row.state),
        return_url=row.return_url,
        redirect_url=row.redirect_url,
        refunded_amount=row.refunded_amount,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _refund(row: Any) -> Refund:
    return Refund(
        id=row.id,
        intent_id=row.payment_intent_id,
        amount=row.amount,
        state=RefundState(row.state),
        provider_reference=row.provider_reference,
    )


_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")
_URL_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces


def check_return_url(url: str) -> str:
    """An absolute http(s) URL without credentials, printable ASCII only (it goes into a
    ``Location`` header and the hosted page's CSP), at most 2048 characters."""
    problem = InvalidReturnUrl(
        "returnUrl must be an absolute http(s) URL (printable ASCII, no credentials, "
        "at most 2048 characters)"
    )
    if len(url) > 2048 or not _URL_CHARS.fullmatch(url):
        raise problem
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise problem from None
    if parts.scheme not in {"http", "https"} or "@" in parts.netloc or not parts.hostname:
        raise problem
    host = parts.netloc if parts.port is None else parts.netloc.rsplit(":", 1)[0]
    if not _HOST.fullmatch(host):
        raise problem
    return url


async def start_payment(
    conn: AsyncConnection,
    gateway: PaymentGateway,
    *,
    institution_id: int,
    order_id: int,
    amount: int,
    currency: str,
    return_url: str,
    provider: str,
    now: datetime,
    actor: str,
) -> PaymentIntent:
    """Create a PENDING intent and start it with ``provider``; send the buyer to
    ``redirect_url``. Runs in the caller's transaction. Refuses (nothing written) a
    non-positive amount, a currency that is not three letters, a non-http(s) return URL or
    an unknown provider."""
    adapter = gateway.provider(provider)
    if not 0 < amount <= MAX_AMOUNT:
        raise InvalidPayment("the amount must be positive (thousandths of the currency)")
    if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
        raise InvalidPayment("the currency must be an ISO 4217 code such as EUR")
    check_return_url(return_url)
    intent_id = (
        await conn.execute(
            sa.insert(db.payment_intent)
            .values(
                institution_id=institution_id,
                order_id=order_id,
                amount=amount,
                currency=currency,
                provider=provider,
                state=PaymentState.PENDING.value,
                return_url=return_url,
                refunded_amount=0,
                created_at=now,
                updated_at=now,
            )
            .returning(db.payment_intent.c.id)
        )
    ).scalar_one()
    intent = await get_payment(conn, institution_id=institution_id, intent_id=intent_id)
    started = await adapter.start(intent)
    await conn.execute(
        sa.update(db.payment_intent)
        .where(db.payment_intent.c.id == intent_id)
        .values(reference=started.reference, redirect_url=started.redirect_url)
    )
    await audit.record(
        conn,
        institution_id=institution_id,
        action="payments.intent.started",
        actor=actor,
        at=now,
        intent_id=intent_id,
        order_id=order_id,
        amount=amount,
        currency=currency,
        provider=provider,
        reference=started.reference,
    )
    return await get_payment(conn, institution_id=institution_id, intent_id=intent_id)


async def get_payment(
    conn: AsyncConnection, *, institution_id: int, intent_id: int, lock: bool = False
) -> PaymentIntent:
    query = sa.select(db.payment_intent).where(
        db.payment_intent.c.institution_id == institution_id, db.payment_intent.c.id == intent_id
    )
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    if row is None:
        raise UnknownPayment(f"no payment {intent_id} in this institution")
    return _intent(row)


async def payments_of_order(
    conn: AsyncConnection, *, institution_id: int, order_id: int
) -> list[PaymentIntent]:
    rows = (
        await conn.execute(
            sa.select(db.payment_intent)
            .where(
                db.payment_intent.c.institution_id == institution_id,
                db.payment_intent.c.order_id == order_id,
            )
            .order_by(db.payment_intent.c.id)
        )
    ).all()
    return [_intent(row) for row in rows]


async def payment_by_reference(
    conn: AsyncConnection, *, provider: str, reference: str, lock: bool = False
) -> PaymentIntent:
    """The intent a provider reference names (the provider's references are unique)."""
    query = sa.select(db.payment_intent).where(
        db.payment_intent.c.provider == provider, db.payment_intent.c.reference == reference
    )
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    if row is None:
        raise UnknownPayment(f"no {provider} payment {reference!r}")
    return _intent(row)


async def _set_state(
    conn: AsyncConnection, intent: PaymentIntent, state: PaymentState, now: datetime
) -> PaymentIntent:
    await conn.execute(
        sa.update(db.payment_intent)
        .where(db.payment_intent.c.id == intent.id)
        .values(state=state.value, updated_at=now)
    )
    return await get_payment(conn, institution_id=intent.institution_id, intent_id=intent.id)


async def cancel_payment(
    conn: AsyncConnection, *, institution_id: int, intent_id: int, now: datetime, actor: str
) -> PaymentIntent:
    """Give up a PENDING or FAILED intent (the cart expired, the order was reopened).
    Cancelling twice changes nothing; a SUCCEEDED one answers ``error.payment.closed`` (refund
    it instead). A confirmation that still arrives for a cancelled intent is applied: the money
    was taken, so the sales handler must decide (usually: refund)."""
    intent = await get_payment(conn, institution_id=institution_id, intent_id=intent_id, lock=True)
    if intent.state is PaymentState.CANCELLED:
        return intent
    if intent.state not in {PaymentState.PENDING, PaymentState.FAILED}:
        raise PaymentClosed(f"payment {intent_id} is {intent.state.value}; refund it instead")
    intent = await _set_state(conn, intent, PaymentState.CANCELLED, now)
    await audit.record(
        conn,
        institution_id=institution_id,
        action="payments.intent.cancelled",
        actor=actor,
        at=now,
        intent_id=intent_id,
    )
    return intent


@dataclass(frozen=True)
class WebhookOutcome:
    intent: PaymentIntent
    applied: bool  # False when the event had been applied before (or changed nothing)


_TRANSITIONS: dict[EventKind, tuple[frozenset[PaymentState], PaymentState]] = {
    EventKind.SUCCEEDED: (
        frozenset({PaymentState.PENDING, PaymentState.FAILED, PaymentState.CANCELLED}),
        PaymentState.SUCCEEDED,
    ),
    EventKind.FAILED: (frozenset({PaymentState.PENDING}), PaymentState.FAILED),
}


async def apply_event(
    conn: AsyncConnection,
    gateway: PaymentGateway,
    *,
    provider: str,
    event: ProviderEvent,
    now: datetime,
) -> WebhookOutcome:
    """Apply a verified event in the caller's transaction (the intent row is locked).
    A SUCCEEDED event calls the confirmation handler in the same transaction, once; what the
    handler changes is locked first, then the intent (see
    :meth:`PaymentGateway.set_payment_confirmed_handler`: one lock order with the sales
    context)."""
    if event.kind is EventKind.SUCCEEDED:
        # which order an intent pays never changes: read without a lock, lock the order, then
        # the intent
        unlocked = await payment_by_reference(conn, provider=provider, reference=event.reference)
        await gateway.lock_payer(conn, unlocked)
    intent = await payment_by_reference(
        conn, provider=provider, reference=event.reference, lock=True
    )
    seen = (
        await conn.execute(
            sa.select(db.payment_event.c.id).where(
                db.payment_event.c.provider == provider,
                db.payment_event.c.event_id == event.event_id,
            )
        )
    ).first()
    if seen is not None:
        return WebhookOutcome(intent, applied=False)
    if event.kind is EventKind.SUCCEEDED and (
        event.amount != intent.amount or event.currency != intent.currency
    ):
        raise AmountMismatch(
            f"the provider confirmed {event.amount} {event.currency}, "
            f"the payment is {intent.amount} {intent.currency}"
        )
    await conn.execute(
        sa.insert(db.payment_event).values(
            institution_id=intent.institution_id,
            payment_intent_id=intent.id,
            provider=provider,
            event_id=event.event_id,
            kind=event.kind.value,
            received_at=now,
        )
    )
    sources, target = _TRANSITIONS[event.kind]
    if intent.state not in sources:
        return WebhookOutcome(intent, applied=False)
    intent = await _set_state(conn, intent, target, now)
    await audit.record(
        conn,
        institution_id=intent.institution_id,
        action=f"payments.intent.{target.value.lower()}",
        actor=f"provider:{provider}",
        at=now,
        intent_id=intent.id,
        order_id=intent.order_id,
        event_id=event.event_id,
    )
    if target is PaymentState.SUCCEEDED:
        await gateway.payment_confirmed(conn, intent)
    return WebhookOutcome(intent, applied=True)


async def handle_webhook(
    engine: AsyncEngine,
    gateway: PaymentGateway,
    *,
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
) -> WebhookOutcome:
    """Verify a provider's webhook and apply it in one transaction. Refusals (unknown
    provider, bad signature, stale or malformed event, unknown reference, amount mismatch)
    raise a domain error and change nothing; the same event twice changes nothing."""
    event = gateway.provider(provider).parse_event(headers, body, now=now)
    async with transaction(engine) as conn:
        return await apply_event(conn, gateway, provider=provider, event=event, now=now)


async def reconcile_payment(
    engine: AsyncEngine,
    gateway: PaymentGateway,
    *,
    institution_id: int,
    intent_id: int,
    now: datetime,
) -> PaymentIntent:
    """Ask the provider for a PENDING intent's outcome and apply it as a webhook would (for a
    buyer back from the hosted page before the webhook, or a lost webhook)."""
    async with read(engine) as conn:
        intent = await get_payment(conn, institution_id=institution_id, intent_id=intent_id)
    if intent.reference is None or intent.state is not PaymentState.PENDING:
        return intent
    status = await gateway.provider(intent.provider).status(intent.reference)
    kind = {
        PaymentState.SUCCEEDED: EventKind.SUCCEEDED,
        PaymentState.REFUNDED: EventKind.SUCCEEDED,
        PaymentState.FAILED: EventKind.FAILED,
    }.get(status.state)
    if kind is None:
        return intent
    event = ProviderEvent(
        event_id=f"status:{intent.reference}:{kind.value}",
        kind=kind,
        reference=intent.reference,
        amount=status.amount,
        currency=intent.currency,
    )
    async with transaction(engine) as conn:
        return (
            await apply_event(conn, gateway, provider=intent.provider, event=event, now=now)
        ).intent


async def request_refund(
    conn: AsyncConnection,
    *,
    institution_id: int,
    intent_id: int,
    amount: int,
    reason: str,
    now: datetime,
    actor: str,
) -> Refund:
    """Record a PENDING refund of ``amount`` and its outbox job (``payments.refund``, keyed
    ``refund-<id>``) in the caller's transaction; the worker runs :func:`execute_refund` after
    commit. The intent must be SUCCEEDED and the amount at most what is left once earlier
    non-failed refunds are counted; otherwise ``error.payment.refund_refused`` and nothing is
    written. The intent row is locked."""
    intent = await get_payment(conn, institution_id=institution_id, intent_id=intent_id, lock=True)
    if intent.state is not PaymentState.SUCCEEDED:
        raise RefundRefused(f"payment {intent_id} is {intent.state.value}, not SUCCEEDED")
    reserved = (
        await conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(db.payment_refund.c.amount), 0)).where(
                db.payment_refund.c.institution_id == institution_id,
                db.payment_refund.c.payment_intent_id == intent_id,
                db.payment_refund.c.state != RefundState.FAILED.value,
            )
        )
    ).scalar_one()
    if not 0 < amount <= intent.amount - int(reserved):
        raise RefundRefused(
            f"refundable: {intent.amount - int(reserved)} of {intent.amount}; asked {amount}"
        )
    refund_id = (
        await conn.execute(
            sa.insert(db.payment_refund)
            .values(
                institution_id=institution_id,
                payment_intent_id=intent_id,
                amount=amount,
                state=RefundState.PENDING.value,
                reason=reason[:255],
                created_at=now,
                updated_at=now,
            )
            .returning(db.payment_refund.c.id)
        )
    ).scalar_one()
    await audit.record(
        conn,
        institution_id=institution_id,
        action="payments.refund.requested",
        actor=actor,
        at=now,
        intent_id=intent_id,
        refund_id=refund_id,
        amount=amount,
        reason=reason[:255],
    )
    await outbox.enqueue(
        conn,
        institution_id=institution_id,
        topic=REFUND_TOPIC,
        payload={"refund_id": int(refund_id)},
        now=now,
        key=refund_key(int(refund_id)),
    )
    return await get_refund(conn, institution_id=institution_id, refund_id=refund_id)


def refund_key(refund_id: int) -> str:
    """The idempotency key of a refund towards the provider (and of its outbox job)."""
    return f"refund-{refund_id}"


async def get_refund(conn: AsyncConnection, *, institution_id: int, refund_id: int) -> Refund:
    row = (
        await conn.execute(
            sa.select(db.payment_refund).where(
                db.payment_refund.c.institution_id == institution_id,
                db.payment_refund.c.id == refund_id,
            )
        )
    ).first()
    if row is None:
        raise UnknownPayment(f"no refund {refund_id} in this institution")
    return _refund(row)


async def execute_refund(
    engine: AsyncEngine,
    gateway: PaymentGateway,
    *,
    institution_id: int,
    refund_id: int,
    now: datetime,
) -> Refund:
    """Ask the provider to pay a PENDING refund back, then record the outcome. Idempotent: a
    refund already settled is returned as is, and the provider call carries ``refund-<id>`` as
    its idempotency key, so a retry after a crash (the provider refunded, the outcome was not
    recorded) refunds once. A provider that cannot be reached leaves the refund PENDING
    (``error.payment.provider_unavailable`` or the adapter's own error: the outbox job retries);
    one that refuses marks it FAILED (``error.payment.refund_refused``)."""
    async with read(engine) as conn:
        refund = await get_refund(conn, institution_id=institution_id, refund_id=refund_id)
        intent = await get_payment(conn, institution_id=institution_id, intent_id=refund.intent_id)
    if refund.state is not RefundState.PENDING:
        return refund
    assert intent.reference is not None  # a SUCCEEDED intent has been started
    adapter = gateway.provider(intent.provider)
    try:
        reference = await adapter.refund(
            intent.reference, refund.amount, idempotency_key=refund_key(refund.id)
        )
    except RefundRefused:
        async with transaction(engine) as conn:
            await _settle_refund(conn, refund, intent, RefundState.FAILED, None, now)
        raise
    async with transaction(engine) as conn:
        return await _settle_refund(conn, refund, intent, RefundState.SUCCEEDED, reference, now)


async def _settle_refund(
    conn: AsyncConnection,
    refund: Refund,
    intent: PaymentIntent,
    state: RefundState,
    reference: str | None,
    now: datetime,
) -> Refund:
    intent = await get_payment(
        conn, institution_id=intent.institution_id, intent_id=intent.id, lock=True
    )
    settled = (
        await conn.execute(
            sa.update(db.payment_refund)
            .where(
                db.payment_refund.c.id == refund.id,
                db.payment_refund.c.state == RefundState.PENDING.value,
            )
            .values(state=state.value, provider_reference=reference, updated_at=now)
        )
    ).rowcount
    if settled and state is RefundState.SUCCEEDED:
        refunded = intent.refunded_amount + refund.amount
        values: dict[str, Any] = {"refunded_amount": refunded, "updated_at": now}
        if refunded >= intent.amount:
            values["state"] = PaymentState.REFUNDED.value
        await conn.execute(
            sa.update(db.payment_intent).where(db.payment_intent.c.id == intent.id).values(values)
        )
    if settled:
        await audit.record(
            conn,
            institution_id=intent.institution_id,
            action=f"payments.refund.{state.value.lower()}",
            actor=f"provider:{intent.provider}",
            at=now,
            intent_id=intent.id,
            refund_id=refund.id,
            amount=refund.amount,
            reference=reference,
        )
    return await get_refund(conn, institution_id=intent.institution_id, refund_id=refund.id)


async def refund_payment(
    engine: AsyncEngine,
    gateway: PaymentGateway,
    *,
    institution_id: int,
    intent_id: int,
    amount: int,
    reason: str,
    now: datetime,
    actor: str,
) -> Refund:
    """:func:`request_refund` in its own transaction, then :func:`execute_refund` at once (an
    operator's refund); its outbox job then finds it settled, or retries it if the provider
    was unavailable."""
    async with transaction(engine) as conn:
        refund = await request_refund(
            conn,
            institution_id=institution_id,
            intent_id=intent_id,
            amount=amount,
            reason=reason,
            now=now,
            actor=actor,
        )
    return await execute_refund(
        engine, gateway, institution_id=institution_id, refund_id=refund.id, now=now
    )


@dataclass(frozen=True)
class RefundProgress:
    """A refund as an operator follows it: its state and its outbox job's attempts, last error
    and state (PENDING while retried, DONE, FAILED once given up)."""

    refund: Refund
    reason: str
    attempts: int
    last_error: str | None
    job_state: str | None


@dataclass(frozen=True)
class CardPayment:
    intent: PaymentIntent
    refunds: list[RefundProgress]


async def order_card_payments(
    conn: AsyncConnection, *, institution_id: int, order_id: int
) -> list[CardPayment]:
    """The order's card payment attempts, oldest first, each with its refunds in order."""
    intents = await payments_of_order(conn, institution_id=institution_id, order_id=order_id)
    if not intents:
        return []
    r, o = db.payment_refund.c, outbox.outbox.c
    rows = (
        await conn.execute(
            sa.select(db.payment_refund, o.attempts, o.last_error, o.state.label("job_state"))
            .outerjoin(
                outbox.outbox,
                sa.and_(
                    o.institution_id == r.institution_id,
                    o.topic == REFUND_TOPIC,
                    o.key == sa.literal("refund-") + sa.cast(r.id, sa.String),
                ),
            )
            .where(
                r.institution_id == institution_id,
                r.payment_intent_id.in_([i.id for i in intents]),
            )
            .order_by(r.id)
        )
    ).all()
    refunds: dict[int, list[RefundProgress]] = {i.id: [] for i in intents}
    for row in rows:
        refunds[row.payment_intent_id].append(
            RefundProgress(
                _refund(row), row.reason, row.attempts or 0, row.last_error, row.job_state
            )
        )
    return [CardPayment(intent, refunds[intent.id]) for intent in intents]
