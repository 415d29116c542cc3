"""The contract every card provider adapter passes: the built-in test provider here, and a real
processor's adapter when its credentials are set (``BILLETTERIE_STRIPE_SECRET_KEY``; no such
adapter ships yet, so that half is skipped). Each test drives the port only: start, pay on the
provider's side, verify the webhook, status, refund."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.payments.errors import (
    InvalidSignature,
    MalformedEvent,
    RefundRefused,
    StaleEvent,
    UnknownPayment,
)
from billetterie.payments.models import EventKind, PaymentIntent, PaymentProvider, PaymentState
from billetterie.payments.services import PaymentGateway, start_payment
from billetterie.payments.test_provider import (
    DECLINED_CARD,
    SUCCESS_CARD,
    TestCardProvider,
    read_card,
)
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import transaction
from tests.conftest import NOW
from tests.factories import import_document, setup_document

Webhook = tuple[dict[str, str], bytes]


@dataclass
class Harness:
    provider: PaymentProvider
    gateway: PaymentGateway
    engine: AsyncEngine
    institution_id: int
    pay: Callable[[PaymentIntent, str], Awaitable[Webhook]]  # the buyer pays on the hosted page

    async def start(self, amount: int = 12500) -> PaymentIntent:
        async with transaction(self.engine) as conn:
            return await start_payment(
                conn,
                self.gateway,
                institution_id=self.institution_id,
                order_id=77,
                amount=amount,
                currency="EUR",
                return_url="https://shop.example/return",
                provider=self.provider.name,
                now=NOW,
                actor="test",
            )


@pytest.fixture(params=["test", "stripe"])
async def harness(
    request: pytest.FixtureRequest, scratch_engine: AsyncEngine, clock: FixedClock
) -> AsyncIterator[Harness]:
    if request.param == "stripe":
        if not os.environ.get("BILLETTERIE_STRIPE_SECRET_KEY"):
            pytest.skip("set BILLETTERIE_STRIPE_SECRET_KEY to run the contract against Stripe")
        pytest.skip("no Stripe adapter ships in this tree yet; it must pass this suite")
    result = await import_document(scratch_engine, setup_document("ACME"))
    provider = TestCardProvider(scratch_engine, clock, secret="contract-secret")
    gateway = PaymentGateway()
    gateway.register(provider)

    async def pay(intent: PaymentIntent, number: str) -> Webhook:
        card = read_card(number, "12/30", "123", now=NOW)
        _, signed = await provider.charge(intent, card, now=NOW)
        return signed.headers, signed.body

    yield Harness(provider, gateway, scratch_engine, result.institution_id, pay)


async def test_start_answers_a_unique_reference_and_the_hosted_page(harness: Harness) -> None:
    first, second = await harness.start(), await harness.start()
    assert first.reference and second.reference and first.reference != second.reference
    assert first.redirect_url and first.reference in first.redirect_url
    assert first.state is PaymentState.PENDING
    status = await harness.provider.status(first.reference)
    assert (status.state, status.amount, status.refunded_amount) == (PaymentState.PENDING, 12500, 0)


async def test_a_paid_intent_sends_a_verifiable_success_event(harness: Harness) -> None:
    intent = await harness.start()
    assert intent.reference is not None
    headers, body = await harness.pay(intent, SUCCESS_CARD)
    event = harness.provider.parse_event(headers, body, now=NOW)
    assert (event.kind, event.reference, event.amount, event.currency) == (
        EventKind.SUCCEEDED,
        intent.reference,
        12500,
        "EUR",
    )
    assert event.event_id
    assert (await harness.provider.status(intent.reference)).state is PaymentState.SUCCEEDED
    # Paying again does not charge twice: the same event comes back.
    again = harness.provider.parse_event(*(await harness.pay(intent, SUCCESS_CARD)), now=NOW)
    assert again.event_id == event.event_id


async def test_a_declined_card_sends_a_failure_event(harness: Harness) -> None:
    intent = await harness.start()
    assert intent.reference is not None
    event = harness.provider.parse_event(*(await harness.pay(intent, DECLINED_CARD)), now=NOW)
    assert (event.kind, event.reference) == (EventKind.FAILED, intent.reference)
    assert (await harness.provider.status(intent.reference)).state is PaymentState.FAILED


async def test_tampered_stale_and_unsigned_events_are_refused(harness: Harness) -> None:
    intent = await harness.start()
    headers, body = await harness.pay(intent, SUCCESS_CARD)
    ((name, value),) = headers.items()
    tampered_body = body.replace(b"12500", b"12501")
    assert tampered_body != body
    signature = value[:-1] + ("0" if value[-1] != "0" else "1")
    cases: list[tuple[dict[str, str], bytes, type[Exception], str]] = [
        (headers, tampered_body, InvalidSignature, "error.payment.invalid_signature"),
        ({name: signature}, body, InvalidSignature, "error.payment.invalid_signature"),
        ({}, body, InvalidSignature, "error.payment.invalid_signature"),
        ({name: "t=abc,v1=00"}, body, InvalidSignature, "error.payment.invalid_signature"),
    ]
    for case_headers, case_body, error, code in cases:
        with pytest.raises(error) as caught:
            harness.provider.parse_event(case_headers, case_body, now=NOW)
        assert caught.value.code == code  # type: ignore[attr-defined]
    with pytest.raises(StaleEvent) as stale:
        harness.provider.parse_event(headers, body, now=NOW + timedelta(minutes=10))
    assert stale.value.code == "error.payment.stale_event"
    # Header names are case-insensitive, as HTTP says.
    assert harness.provider.parse_event({name.upper(): value}, body, now=NOW).amount == 12500


async def test_a_signed_event_that_is_not_a_payment_event_is_malformed(harness: Harness) -> None:
    if not isinstance(harness.provider, TestCardProvider):
        pytest.skip("needs the provider's signing key")
    for body in (b"not json", b"[]", b'{"id": "e", "type": "payment.unknown"}'):
        headers = harness.provider.sign_body(body, now=NOW)
        with pytest.raises(MalformedEvent) as caught:
            harness.provider.parse_event(headers, body, now=NOW)
        assert caught.value.code == "error.payment.malformed_event"


async def test_refunds_are_bounded_and_idempotent(harness: Harness) -> None:
    intent = await harness.start(amount=10000)
    assert intent.reference is not None
    await harness.pay(intent, SUCCESS_CARD)
    first = await harness.provider.refund(intent.reference, 4000, idempotency_key="r1")
    assert first == await harness.provider.refund(intent.reference, 4000, idempotency_key="r1")
    status = await harness.provider.status(intent.reference)
    assert (status.state, status.refunded_amount) == (PaymentState.SUCCEEDED, 4000)
    with pytest.raises(RefundRefused) as caught:
        await harness.provider.refund(intent.reference, 6001, idempotency_key="r2")
    assert caught.value.code == "error.payment.refund_refused"
    second = await harness.provider.refund(intent.reference, 6000, idempotency_key="r3")
    assert second != first
    status = await harness.provider.status(intent.reference)
    assert (status.state, status.refunded_amount) == (PaymentState.REFUNDED, 10000)
    # A refund job retried after the answer was lost asks again with the same key once nothing
    # is left to refund: the provider answers the refund it made, it does not refuse it.
    assert await harness.provider.refund(intent.reference, 6000, idempotency_key="r3") == second
    assert await harness.provider.refund(intent.reference, 4000, idempotency_key="r1") == first
    assert (await harness.provider.status(intent.reference)).refunded_amount == 10000


async def test_unpaid_and_unknown_payments(harness: Harness) -> None:
    intent = await harness.start()
    assert intent.reference is not None
    with pytest.raises(RefundRefused):
        await harness.provider.refund(intent.reference, 100, idempotency_key="x")
    await harness.pay(intent, DECLINED_CARD)
    with pytest.raises(RefundRefused):
        await harness.provider.refund(intent.reference, 100, idempotency_key="y")
    with pytest.raises(UnknownPayment) as caught:
        await harness.provider.status("tp_" + "x" * 24)
    assert caught.value.code == "error.payment.unknown_reference"
