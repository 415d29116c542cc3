"""HTTP surface of payments: provider webhooks and the test provider's hosted card page.

- ``POST /payments/webhooks/{provider}``: a provider's signed event; 200 ``{"applied": …}``
  once verified (also for an event seen before), RFC 9457 problem+json otherwise.
- ``GET /payments/test/{reference}``: the test card form (HTML). It sets a CSRF cookie and
  carries a token derived from it (double submit, HMAC-bound to the reference).
- ``POST /payments/test/{reference}``: takes the card, books the outcome with the test
  provider, delivers the signed webhook (over HTTP to ``public_url`` when configured, else by
  calling the webhook handler in process) and, on success, redirects (303) to the return URL.

Neither is a partner API: they are left out of the OpenAPI document and documented in
``docs/api/payments.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import jinja2
from fastapi import APIRouter, Form, Request
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from billetterie.payments.errors import InvalidPayment, UnknownPayment
from billetterie.payments.models import EventKind, PaymentIntent, PaymentState
from billetterie.payments.services import PaymentGateway, handle_webhook, payment_by_reference
from billetterie.payments.test_provider import REFERENCE, InvalidCard, TestCardProvider, read_card
from billetterie.shared.clock import Clock
from billetterie.shared.db import read
from billetterie.shared.errors import DomainError

log = logging.getLogger("billetterie.payments")
router = APIRouter(include_in_schema=False)
CSRF_COOKIE = "billetterie_payment_csrf"
MAX_WEBHOOK_BYTES = 64 * 1024
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass
class PaymentSurface:
    """What the payment pages need, set on ``app.state.payment_surface`` at start-up."""

    engine: AsyncEngine
    clock: Clock
    gateway: PaymentGateway
    csrf_secret: str
    public_url: str = ""  # when set, the test provider's webhooks go over real HTTP to it


def gateway_of(request: Request) -> PaymentGateway:
    """The application's payment gateway (for handlers of other contexts)."""
    gateway: PaymentGateway = request.app.state.payments
    return gateway


def _surface(request: Request) -> PaymentSurface:
    surface: PaymentSurface = request.app.state.payment_surface
    return surface


@router.post("/payments/webhooks/{provider}")
async def webhook(provider: str, request: Request) -> Response:
    surface = _surface(request)
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise InvalidPayment("the webhook body is too large", code="error.payment.malformed_event")
    outcome = await handle_webhook(
        surface.engine,
        surface.gateway,
        provider=provider[:32],
        headers=dict(request.headers),
        body=body,
        now=surface.clock.now(),
    )
    return JSONResponse(
        {"applied": outcome.applied, "state": outcome.intent.state.value},
        headers={"Cache-Control": "no-store"},
    )


# --- the test provider's hosted page ------------------------------------------------------


def _csrf_token(secret: str, cookie: str, reference: str) -> str:
    return hmac.new(secret.encode(), f"{cookie}|{reference}".encode(), hashlib.sha256).hexdigest()


def _amount(intent: PaymentIntent) -> str:
    return f"{intent.amount // 1000}.{intent.amount % 1000 // 10:02d}"


def _page(
    intent: PaymentIntent,
    csrf_token: str,
    *,
    status: int = 200,
    message: str = "",
    problems: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    closed = intent.state not in {PaymentState.PENDING, PaymentState.FAILED}
    html = _templates.get_template("test_card.html").render(
        intent=intent,
        amount=_amount(intent),
        closed=closed,
        csrf_token=csrf_token,
        message=message,
        problems=problems or {},
        form=form or {"card_number": "", "expiry": ""},
    )
    # Browsers apply form-action to the redirect after the POST too: allow the return URL's
    # origin, or the buyer would never get back to the shop.
    back = urlsplit(intent.return_url)
    headers = {
        "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
        f"form-action 'self' {back.scheme}://{back.netloc}; frame-ancestors 'none'",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }
    return HTMLResponse(html, status_code=status, headers=headers)


def _message_page(text: str, status: int) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><title>Test payment</title><p id='message'>{text}</p>",
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


async def _test_intent(surface: PaymentSurface, reference: str) -> PaymentIntent | None:
    if not REFERENCE.fullmatch(reference):  # before any query: no NUL bytes reach PostgreSQL
        return None
    try:
        async with read(surface.engine) as conn:
            return await payment_by_reference(
                conn, provider=TestCardProvider.name, reference=reference
            )
    except UnknownPayment:
        return None


def _test_provider(surface: PaymentSurface) -> TestCardProvider | None:
    if TestCardProvider.name not in surface.gateway.provider_names:
        return None
    provider = surface.gateway.provider(TestCardProvider.name)
    return provider if isinstance(provider, TestCardProvider) else None


@router.get("/payments/test/{reference}", response_class=HTMLResponse)
async def test_page(reference: str, request: Request) -> Response:
    surface = _surface(request)
    intent = await _test_intent(surface, reference) if _test_provider(surface) else None
    if intent is None:
        return _message_page("No such test payment.", 404)
    cookie = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = _page(intent, _csrf_token(surface.csrf_secret, cookie, reference))
    response.set_cookie(
        CSRF_COOKIE, cookie, httponly=True, samesite="strict", path="/payments/test"
    )
    return response


@router.post("/payments/test/{reference}", response_class=HTMLResponse)
async def test_submit(
    reference: str,
    request: Request,
    card_number: Annotated[str, Form(max_length=64)] = "",
    expiry: Annotated[str, Form(max_length=16)] = "",
    cvc: Annotated[str, Form(max_length=8)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    surface = _surface(request)
    provider = _test_provider(surface)
    intent = await _test_intent(surface, reference) if provider else None
    if provider is None or intent is None:
        return _message_page("No such test payment.", 404)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    expected = _csrf_token(surface.csrf_secret, cookie, reference)
    if not cookie or not hmac.compare_digest(expected.encode(), csrf_token.encode()):
        return _message_page("This form has expired; reload the page and try again.", 403)
    form = {"card_number": card_number, "expiry": expiry}
    if intent.state not in {PaymentState.PENDING, PaymentState.FAILED}:
        return _page(intent, expected, status=409)
    now = surface.clock.now()
    try:
        card = read_card(card_number, expiry, cvc, now=now)
    except InvalidCard as error:
        problems: dict[str, Any] = error.extra.get("fields", {})
        return _page(intent, expected, status=422, problems=problems, form=form)
    outcome, signed = await provider.charge(intent, card, now=now)
    await _deliver(surface, signed.headers, signed.body)
    if outcome is EventKind.SUCCEEDED:
        return RedirectResponse(intent.return_url, status_code=303)
    async with read(surface.engine) as conn:
        intent = await payment_by_reference(conn, provider=provider.name, reference=reference)
    return _page(intent, expected, status=402, message="Your card was declined.", form=form)


async def _deliver(surface: PaymentSurface, headers: dict[str, str], body: bytes) -> None:
    """Send the test provider's webhook like a processor would. A failed delivery is logged:
    the intent stays PENDING until a retry or ``reconcile_payment``."""
    if surface.public_url:
        url = f"{surface.public_url.rstrip('/')}/payments/webhooks/{TestCardProvider.name}"
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.post(
                    url, content=body, headers={**headers, "Content-Type": "application/json"}
                )
            if response.status_code >= 300:
                log.warning("test webhook answered %s: %s", response.status_code, response.text)
        except httpx.HTTPError as error:
            log.warning("test webhook to %s failed: %s", url, error)
        return
    try:
        await handle_webhook(
            surface.engine,
            surface.gateway,
            provider=TestCardProvider.name,
            headers=headers,
            body=body,
            now=surface.clock.now(),
        )
    except DomainError as error:
        log.warning("test webhook refused: %s (%s)", error.detail, error.code)
