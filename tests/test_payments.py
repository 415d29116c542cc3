"""Card payments end to end: start an intent, the hosted test page (CSRF, card validation,
success, decline), the signed webhook (idempotent, tampering refused, amount checked), the
sales callback in the webhook's transaction, refunds and cancellation — on both databases,
and once over real HTTP with uvicorn."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.app import build_app
from billetterie.payments import db
from billetterie.payments.errors import (
    InvalidPayment,
    InvalidReturnUrl,
    PaymentClosed,
    RefundRefused,
)
from billetterie.payments.models import PaymentIntent, PaymentState, RefundState
from billetterie.payments.services import (
    PaymentGateway,
    cancel_payment,
    execute_refund,
    get_payment,
    reconcile_payment,
    refund_payment,
    request_refund,
    start_payment,
)
from billetterie.payments.test_provider import (
    DECLINED_CARD,
    SUCCESS_CARD,
    TestCardProvider,
    read_card,
)
from billetterie.shared import audit
from billetterie.shared.audit import audit_entry
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import read, transaction
from billetterie.shared.errors import Conflict
from tests.conftest import NOW, Backend, settings_for
from tests.factories import import_document, setup_document

RETURN_URL = "https://shop.example/orders/77/paid"


@dataclass
class Confirmations:
    """The sales side's stand-in: records each call and writes in the webhook's transaction."""

    calls: list[int] = field(default_factory=list)
    refuse: bool = False

    async def __call__(self, conn: AsyncConnection, intent: PaymentIntent) -> None:
        if self.refuse:
            raise Conflict("the order cannot be closed", code="error.order.closed")
        self.calls.append(intent.id)
        await audit.record(
            conn,
            institution_id=intent.institution_id,
            action="sales.order.paid",
            actor="test",
            at=NOW,
            intent_id=intent.id,
            state=intent.state.value,
        )


@dataclass
class Shop:
    app: FastAPI
    client: httpx.AsyncClient
    engine: AsyncEngine
    institution_id: int
    confirmations: Confirmations

    @property
    def gateway(self) -> PaymentGateway:
        gateway: PaymentGateway = self.app.state.payments
        return gateway

    @property
    def provider(self) -> TestCardProvider:
        provider = self.gateway.provider("test")
        assert isinstance(provider, TestCardProvider)
        return provider

    async def start(self, amount: int = 12500, order_id: int = 77) -> PaymentIntent:
        async with transaction(self.engine) as conn:
            return await start_payment(
                conn,
                self.gateway,
                institution_id=self.institution_id,
                order_id=order_id,
                amount=amount,
                currency="EUR",
                return_url=RETURN_URL,
                provider="test",
                now=NOW,
                actor="test",
            )

    async def intent(self, intent_id: int) -> PaymentIntent:
        async with read(self.engine) as conn:
            return await get_payment(conn, institution_id=self.institution_id, intent_id=intent_id)

    async def form(self, intent: PaymentIntent) -> str:
        page = await self.client.get(f"/payments/test/{intent.reference}")
        assert page.status_code == 200, page.text
        match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
        assert match
        return match.group(1)

    async def submit(
        self, intent: PaymentIntent, card: str = SUCCESS_CARD, **fields: str
    ) -> httpx.Response:
        data = {"card_number": card, "expiry": "12/30", "cvc": "123"}
        data["csrf_token"] = await self.form(intent)
        data.update(fields)
        return await self.client.post(f"/payments/test/{intent.reference}", data=data)

    async def count(self, table: sa.Table) -> int:
        async with read(self.engine) as conn:
            return int(
                (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            )

    async def actions(self, prefix: str) -> list[str]:
        async with read(self.engine) as conn:
            rows = await conn.execute(
                sa.select(audit_entry.c.action)
                .where(audit_entry.c.action.like(prefix + "%"))
                .order_by(audit_entry.c.id)
            )
            return list(rows.scalars())


@pytest.fixture
async def shop(
    scratch_engine: AsyncEngine, backend: Backend, clock: FixedClock, tmp_path: Path
) -> AsyncIterator[Shop]:
    result = await import_document(scratch_engine, setup_document("ACME"))
    settings = settings_for(backend.scratch_url, tmp_path)
    app = build_app(settings.model_copy(update={"background_tasks": False}), clock=clock)
    confirmations = Confirmations()
    app.state.payments.set_payment_confirmed_handler(confirmations)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Shop(app, client, scratch_engine, result.institution_id, confirmations)


async def test_start_payment_writes_a_pending_intent(shop: Shop) -> None:
    intent = await shop.start()
    assert intent.state is PaymentState.PENDING
    assert intent.reference and intent.redirect_url == f"/payments/test/{intent.reference}"
    assert (intent.amount, intent.currency, intent.order_id, intent.return_url) == (
        12500,
        "EUR",
        77,
        RETURN_URL,
    )
    assert await shop.actions("payments.") == ["payments.intent.started"]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"amount": 0}, InvalidPayment),
        ({"amount": -5}, InvalidPayment),
        ({"currency": "eur"}, InvalidPayment),
        ({"currency": "EURO"}, InvalidPayment),
        ({"return_url": "javascript:alert(1)"}, InvalidReturnUrl),
        ({"return_url": "/relative"}, InvalidReturnUrl),
        ({"return_url": "https://user:pw@shop.example/"}, InvalidReturnUrl),
        ({"return_url": "https://shop.example;script-src */"}, InvalidReturnUrl),
        ({"return_url": "https://shop.example:99999/"}, InvalidReturnUrl),
        ({"return_url": "https://shöp.example/"}, InvalidReturnUrl),
        ({"return_url": "https://shop.example/a b"}, InvalidReturnUrl),
        ({"return_url": "https://" + "a" * 2048 + ".example/"}, InvalidReturnUrl),
        ({"provider": "nope"}, Exception),
    ],
)
async def test_bad_starts_change_nothing(
    shop: Shop, changes: dict[str, Any], error: type[Exception]
) -> None:
    values: dict[str, Any] = {
        "institution_id": shop.institution_id,
        "order_id": 1,
        "amount": 100,
        "currency": "EUR",
        "return_url": RETURN_URL,
        "provider": "test",
        "now": NOW,
        "actor": "test",
    }
    values.update(changes)
    with pytest.raises(error) as caught:
        async with transaction(shop.engine) as conn:
            await start_payment(conn, shop.gateway, **values)
    assert getattr(caught.value, "code", "").startswith("error.payment.")
    assert await shop.count(db.payment_intent) == 0


async def test_paying_on_the_test_page_confirms_once_and_redirects(shop: Shop) -> None:
    intent = await shop.start()
    page = await shop.client.get(f"/payments/test/{intent.reference}")
    assert page.status_code == 200
    assert "12.50 EUR" in page.text and "Pay order 77" in page.text
    assert "billetterie_payment_csrf" in page.headers["set-cookie"]
    assert page.headers["x-frame-options"] == "DENY"

    response = await shop.submit(intent, "4242 4242 4242 4242")
    assert response.status_code == 303
    assert response.headers["location"] == RETURN_URL
    paid = await shop.intent(intent.id)
    assert paid.state is PaymentState.SUCCEEDED
    assert shop.confirmations.calls == [intent.id]
    assert await shop.actions("sales.order.paid") == ["sales.order.paid"]
    assert await shop.actions("payments.") == [
        "payments.intent.started",
        "payments.intent.succeeded",
    ]

    # Submitting again charges nothing and confirms nothing more; the page says it is closed.
    closed = await shop.client.get(f"/payments/test/{intent.reference}")
    assert "This payment is succeeded" in closed.text
    async with read(shop.engine) as conn:
        ledger = (await conn.execute(sa.select(db.payment_test_ledger))).all()
    assert [(row.kind, row.amount, row.card_last4) for row in ledger] == [("CHARGE", 12500, "4242")]
    assert shop.confirmations.calls == [intent.id]


async def test_a_declined_card_fails_then_a_good_one_succeeds(shop: Shop) -> None:
    intent = await shop.start()
    declined = await shop.submit(intent, DECLINED_CARD)
    assert declined.status_code == 402
    assert "Your card was declined." in declined.text
    assert (await shop.intent(intent.id)).state is PaymentState.FAILED
    assert shop.confirmations.calls == []
    paid = await shop.submit(intent, SUCCESS_CARD)
    assert paid.status_code == 303
    assert (await shop.intent(intent.id)).state is PaymentState.SUCCEEDED
    assert shop.confirmations.calls == [intent.id]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"card_number": "4242 4242 4242 4241"}, "not a valid card number"),
        ({"card_number": "5555 5555 5555 4444"}, "not a test card"),
        ({"expiry": "10/26"}, "this card has expired"),
        ({"expiry": "13/30"}, "expiry must be MM/YY"),
        ({"cvc": "12"}, "the CVC is 3 or 4 digits"),
        ({"cvc": "12a"}, "the CVC is 3 or 4 digits"),
    ],
)
async def test_invalid_card_details_record_nothing(
    shop: Shop, fields: dict[str, str], problem: str
) -> None:
    intent = await shop.start()
    response = await shop.submit(intent, **fields)
    assert response.status_code == 422
    assert problem in response.text
    assert await shop.count(db.payment_test_ledger) == 0
    assert (await shop.intent(intent.id)).state is PaymentState.PENDING


async def test_forms_without_the_csrf_token_are_refused(shop: Shop) -> None:
    intent = await shop.start()
    await shop.form(intent)
    url = f"/payments/test/{intent.reference}"
    card = {"card_number": SUCCESS_CARD, "expiry": "12/30", "cvc": "123"}
    missing = await shop.client.post(url, data=card)
    assert missing.status_code == 403
    forged = await shop.client.post(url, data={**card, "csrf_token": "0" * 64})
    assert forged.status_code == 403
    not_ascii = await shop.client.post(url, data={**card, "csrf_token": "é" * 64})
    assert not_ascii.status_code == 403
    # A token from another payment's page does not fit this one.
    other = await shop.start(order_id=78)
    token = await shop.form(other)
    crossed = await shop.client.post(url, data={**card, "csrf_token": token})
    assert crossed.status_code == 403
    # Without the cookie, the right token is refused too.
    token = await shop.form(intent)
    shop.client.cookies.clear()
    no_cookie = await shop.client.post(url, data={**card, "csrf_token": token})
    assert no_cookie.status_code == 403
    assert await shop.count(db.payment_test_ledger) == 0
    assert (await shop.intent(intent.id)).state is PaymentState.PENDING


async def test_unknown_test_payments_are_404_pages(shop: Shop) -> None:
    for path in (
        "/payments/test/tp_nothing_here_at_all",
        "/payments/test/" + "x" * 300,
        "/payments/test/tp_%00%00%00%00%00%00%00%00%00%00%00%00%00%00%00%00",
        "/payments/test/%C3%A9",
    ):
        assert (await shop.client.get(path)).status_code == 404
        assert (await shop.client.post(path, data={"card_number": "1"})).status_code == 404


async def webhook_for(
    shop: Shop, intent: PaymentIntent, card: str = SUCCESS_CARD
) -> tuple[dict[str, str], bytes]:
    _, signed = await shop.provider.charge(
        intent, read_card(card, "12/30", "123", now=NOW), now=NOW
    )
    return signed.headers, signed.body


async def post_webhook(
    shop: Shop, headers: dict[str, str], body: bytes, provider: str = "test"
) -> httpx.Response:
    return await shop.client.post(
        f"/payments/webhooks/{provider}",
        content=body,
        headers={**headers, "Content-Type": "application/json"},
    )


async def test_the_same_webhook_twice_changes_nothing_the_second_time(shop: Shop) -> None:
    intent = await shop.start()
    headers, body = await webhook_for(shop, intent)
    first = await post_webhook(shop, headers, body)
    assert first.status_code == 200
    assert first.json() == {"applied": True, "state": "SUCCEEDED"}
    second = await post_webhook(shop, headers, body)
    assert second.json() == {"applied": False, "state": "SUCCEEDED"}
    assert shop.confirmations.calls == [intent.id]
    assert await shop.count(db.payment_event) == 1
    assert await shop.actions("payments.intent.succeeded") == ["payments.intent.succeeded"]


async def test_tampered_webhooks_are_refused_with_a_code(shop: Shop) -> None:
    intent = await shop.start()
    headers, body = await webhook_for(shop, intent)
    cases = [
        (
            headers,
            body.replace(b"SUCCEEDED", b"SUCCEEDED ") + b" ",
            "error.payment.invalid_signature",
        ),
        (
            {"Billetterie-Signature": headers["Billetterie-Signature"][:-2] + "00"},
            body,
            "error.payment.invalid_signature",
        ),
        ({}, body, "error.payment.invalid_signature"),
    ]
    for case_headers, case_body, code in cases:
        response = await post_webhook(shop, case_headers, case_body)
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == code
    unknown = await post_webhook(shop, headers, body, provider="stripe")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "error.payment.unknown_provider")
    assert (await shop.intent(intent.id)).state is PaymentState.PENDING
    assert await shop.count(db.payment_event) == 0
    assert shop.confirmations.calls == []


async def test_events_for_unknown_references_or_other_amounts_change_nothing(shop: Shop) -> None:
    intent = await shop.start()
    body = (
        b'{"id":"evt_1","type":"payment.succeeded","reference":"%s","amount":1,"currency":"EUR"}'
        % intent.reference.encode()  # type: ignore[union-attr]
    )
    wrong_amount = await post_webhook(shop, shop.provider.sign_body(body, now=NOW), body)
    assert (wrong_amount.status_code, wrong_amount.json()["code"]) == (
        409,
        "error.payment.amount_mismatch",
    )
    body = (
        b'{"id":"evt_2","type":"payment.succeeded","reference":"tp_nope",'
        b'"amount":1,"currency":"EUR"}'
    )
    unknown = await post_webhook(shop, shop.provider.sign_body(body, now=NOW), body)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "error.payment.unknown_reference")
    for body in (
        b'{"id": 5}',
        b'{"id":"e\\u0000","type":"payment.failed","reference":"r","amount":1,"currency":"EUR"}',
    ):
        malformed = await post_webhook(shop, shop.provider.sign_body(body, now=NOW), body)
        assert (malformed.status_code, malformed.json()["code"]) == (
            400,
            "error.payment.malformed_event",
        )
    assert (await shop.intent(intent.id)).state is PaymentState.PENDING
    assert await shop.count(db.payment_event) == 0


async def test_a_refusing_sales_handler_rolls_the_confirmation_back(shop: Shop) -> None:
    intent = await shop.start()
    headers, body = await webhook_for(shop, intent)
    shop.confirmations.refuse = True
    refused = await post_webhook(shop, headers, body)
    assert (refused.status_code, refused.json()["code"]) == (409, "error.order.closed")
    assert (await shop.intent(intent.id)).state is PaymentState.PENDING
    assert await shop.count(db.payment_event) == 0
    assert await shop.actions("payments.intent.succeeded") == []
    shop.confirmations.refuse = False  # the provider retries the same event later
    retried = await post_webhook(shop, headers, body)
    assert retried.json() == {"applied": True, "state": "SUCCEEDED"}
    assert shop.confirmations.calls == [intent.id]


async def test_refunds(shop: Shop) -> None:
    intent = await shop.start(amount=10000)
    await shop.submit(intent)
    refund = await refund_payment(
        shop.engine,
        shop.gateway,
        institution_id=shop.institution_id,
        intent_id=intent.id,
        amount=3000,
        reason="one seat cancelled",
        now=NOW,
        actor="test",
    )
    assert refund.state is RefundState.SUCCEEDED and refund.provider_reference
    after = await shop.intent(intent.id)
    assert (after.state, after.refunded_amount) == (PaymentState.SUCCEEDED, 3000)
    # Executing a settled refund again does not refund again.
    again = await execute_refund(
        shop.engine, shop.gateway, institution_id=shop.institution_id, refund_id=refund.id, now=NOW
    )
    assert again == refund
    with pytest.raises(RefundRefused):
        await refund_payment(
            shop.engine,
            shop.gateway,
            institution_id=shop.institution_id,
            intent_id=intent.id,
            amount=7001,
            reason="too much",
            now=NOW,
            actor="test",
        )
    rest = await refund_payment(
        shop.engine,
        shop.gateway,
        institution_id=shop.institution_id,
        intent_id=intent.id,
        amount=7000,
        reason="order cancelled",
        now=NOW,
        actor="test",
    )
    assert rest.state is RefundState.SUCCEEDED
    final = await shop.intent(intent.id)
    assert (final.state, final.refunded_amount) == (PaymentState.REFUNDED, 10000)
    status = await shop.provider.status(intent.reference or "")
    assert (status.state, status.refunded_amount) == (PaymentState.REFUNDED, 10000)
    assert await shop.actions("payments.refund") == [
        "payments.refund.requested",
        "payments.refund.succeeded",
        "payments.refund.requested",
        "payments.refund.succeeded",
    ]


async def test_a_pending_refund_is_retried_once_to_the_provider(shop: Shop) -> None:
    """A crash between request and execution leaves a PENDING refund; executing it twice (a
    retried job) refunds once at the provider."""
    intent = await shop.start(amount=5000)
    await shop.submit(intent)
    async with transaction(shop.engine) as conn:
        pending = await request_refund(
            conn,
            institution_id=shop.institution_id,
            intent_id=intent.id,
            amount=5000,
            reason="cancelled",
            now=NOW,
            actor="test",
        )
    assert pending.state is RefundState.PENDING
    with pytest.raises(RefundRefused):  # a pending refund already reserves the amount
        async with transaction(shop.engine) as conn:
            await request_refund(
                conn,
                institution_id=shop.institution_id,
                intent_id=intent.id,
                amount=1,
                reason="more",
                now=NOW,
                actor="test",
            )
    for _ in range(2):
        done = await execute_refund(
            shop.engine,
            shop.gateway,
            institution_id=shop.institution_id,
            refund_id=pending.id,
            now=NOW,
        )
        assert done.state is RefundState.SUCCEEDED
    async with read(shop.engine) as conn:
        kinds = (await conn.execute(sa.select(db.payment_test_ledger.c.kind))).scalars().all()
    assert sorted(kinds) == ["CHARGE", "REFUND"]


async def test_unpaid_payments_cannot_be_refunded_and_can_be_cancelled(shop: Shop) -> None:
    intent = await shop.start()
    with pytest.raises(RefundRefused):
        async with transaction(shop.engine) as conn:
            await request_refund(
                conn,
                institution_id=shop.institution_id,
                intent_id=intent.id,
                amount=1,
                reason="x",
                now=NOW,
                actor="test",
            )
    for _ in range(2):
        async with transaction(shop.engine) as conn:
            cancelled = await cancel_payment(
                conn, institution_id=shop.institution_id, intent_id=intent.id, now=NOW, actor="test"
            )
        assert cancelled.state is PaymentState.CANCELLED
    assert await shop.actions("payments.intent.cancelled") == ["payments.intent.cancelled"]
    page = await shop.client.get(f"/payments/test/{intent.reference}")
    assert "This payment is cancelled" in page.text
    paid = await shop.start(order_id=90)
    await shop.submit(paid)
    with pytest.raises(PaymentClosed):
        async with transaction(shop.engine) as conn:
            await cancel_payment(
                conn, institution_id=shop.institution_id, intent_id=paid.id, now=NOW, actor="test"
            )


async def test_reconcile_applies_what_the_provider_knows(shop: Shop) -> None:
    """A lost webhook: the provider charged, the intent is still PENDING; reconciling applies
    the outcome once (and calls the sales handler once)."""
    intent = await shop.start()
    await webhook_for(shop, intent)  # charged at the provider, webhook never delivered
    assert (await shop.intent(intent.id)).state is PaymentState.PENDING
    for _ in range(2):
        result = await reconcile_payment(
            shop.engine,
            shop.gateway,
            institution_id=shop.institution_id,
            intent_id=intent.id,
            now=NOW,
        )
        assert result.state is PaymentState.SUCCEEDED
    assert shop.confirmations.calls == [intent.id]


async def test_another_institution_cannot_see_the_payment(shop: Shop) -> None:
    other = await import_document(shop.engine, setup_document("BETA"))
    intent = await shop.start()
    with pytest.raises(Exception) as caught:
        async with read(shop.engine) as conn:
            await get_payment(conn, institution_id=other.institution_id, intent_id=intent.id)
    assert getattr(caught.value, "code", None) == "error.payment.unknown_reference"


# --- over real HTTP ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def live(
    scratch_engine: AsyncEngine, backend: Backend, clock: FixedClock, tmp_path: Path
) -> Iterator[tuple[str, FastAPI, Confirmations]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = settings_for(backend.scratch_url, tmp_path).model_copy(
        update={"public_url": url, "background_tasks": False}
    )
    app = build_app(settings, clock=clock)
    confirmations = Confirmations()
    app.state.payments.set_payment_confirmed_handler(confirmations)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url, app, confirmations
    server.should_exit = True
    thread.join(timeout=10)


async def test_over_real_http_the_page_sends_its_webhook_to_the_server(
    scratch_engine: AsyncEngine, live: tuple[str, FastAPI, Confirmations]
) -> None:
    url, app, confirmations = live
    result = await import_document(scratch_engine, setup_document("ACME"))
    async with transaction(scratch_engine) as conn:
        intent = await start_payment(
            conn,
            app.state.payments,
            institution_id=result.institution_id,
            order_id=5,
            amount=4000,
            currency="CHF",
            return_url=RETURN_URL,
            provider="test",
            now=NOW,
            actor="test",
        )
    assert intent.redirect_url == f"{url}/payments/test/{intent.reference}"
    async with httpx.AsyncClient() as client:
        page = await client.get(intent.redirect_url)
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
        assert token
        response = await client.post(
            intent.redirect_url,
            data={
                "card_number": SUCCESS_CARD,
                "expiry": "01/27",
                "cvc": "999",
                "csrf_token": token.group(1),
            },
        )
    assert response.status_code == 303 and response.headers["location"] == RETURN_URL
    async with read(scratch_engine) as conn:
        paid = await get_payment(conn, institution_id=result.institution_id, intent_id=intent.id)
        events = (await conn.execute(sa.select(db.payment_event))).all()
    assert paid.state is PaymentState.SUCCEEDED
    assert confirmations.calls == [intent.id]
    assert len(events) == 1


async def test_a_browser_pays_on_the_page_and_lands_on_another_origin(
    scratch_engine: AsyncEngine, live: tuple[str, FastAPI, Confirmations]
) -> None:
    """Chromium fills the form: the CSRF cookie, the page's CSP and the redirect to a return URL
    on another origin (localhost vs 127.0.0.1) all work in a real browser."""
    from playwright.async_api import async_playwright

    url, app, confirmations = live
    result = await import_document(scratch_engine, setup_document("ACME"))
    return_url = url.replace("127.0.0.1", "localhost") + "/healthz"
    async with transaction(scratch_engine) as conn:
        intent = await start_payment(
            conn,
            app.state.payments,
            institution_id=result.institution_id,
            order_id=6,
            amount=4000,
            currency="EUR",
            return_url=return_url,
            provider="test",
            now=NOW,
            actor="test",
        )
    assert intent.redirect_url
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = await browser.new_page()
            await page.goto(intent.redirect_url)
            await page.fill("input[name=card_number]", "4000 0000 0000 0002")
            await page.fill("input[name=expiry]", "12/30")
            await page.fill("input[name=cvc]", "123")
            await page.click("#pay")
            assert (await page.text_content("#message")) == "Your card was declined."
            await page.fill("input[name=card_number]", "4242 4242 4242 4242")
            await page.fill("input[name=cvc]", "123")
            await page.click("#pay")
            await page.wait_for_url(return_url)
            assert '"ok"' in await page.content()
        finally:
            await browser.close()
    async with read(scratch_engine) as conn:
        paid = await get_payment(conn, institution_id=result.institution_id, intent_id=intent.id)
    assert paid.state is PaymentState.SUCCEEDED
    assert confirmations.calls == [intent.id]
