"""Composition root: ``build_app(settings)`` wires settings, engine, clock and the surfaces."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware

from billetterie import __version__, background
from billetterie.compat import (
    auth_api,
    availability_api,
    barcode_api,
    catalog_api,
    contacts_api,
    envelope,
    mirror_api,
    openapi,
    printing_api,
    rpc,
    sales_api,
    webhooks_api,
)
from billetterie.compat.idempotency import IdempotencyMiddleware
from billetterie.compat.ratelimit import RateLimited, RateLimitMiddleware, rate_limited
from billetterie.compat.runtime import Runtime
from billetterie.config import Settings
from billetterie.contacts import events as contact_events
from billetterie.identity import account_web, oidc_web, saml_web
from billetterie.identity.mail import Mailer, MailSink, SmtpMailer, delivery_loop
from billetterie.inventory.board import Board
from billetterie.payments import api as payments_api
from billetterie.payments import tasks as payment_tasks
from billetterie.payments.api import PaymentSurface
from billetterie.payments.services import PaymentGateway
from billetterie.payments.test_provider import TestCardProvider
from billetterie.sales import card, events
from billetterie.sales.barcode_keys import KeyVault
from billetterie.shared.clock import Clock, SystemClock
from billetterie.shared.db import create_engine
from billetterie.shared.errors import DomainError
from billetterie.shared.outbox import Handler
from billetterie.shared.ratelimit import RateLimiter
from billetterie.shop import account as shop_account
from billetterie.shop import cart as shop_cart
from billetterie.shop import pages as shop_pages
from billetterie.shop import queue as shop_queue
from billetterie.shop import redirect as shop_redirect

DESCRIPTION = """\
The partner surface of billetterie. It speaks SecuTix S-360's wire protocol: JSON RPC over
`POST /<module>/backend-apis/<service>/v1_33/<method>`, every answer in an envelope with
`statusCode`, `statusDetail` and your `requestId`. Authenticate first with
`POST /tnai/backend-apis/v1/auth` and send the token as `Authorization: Bearer <token>`.
Amounts are integers in thousandths of the currency unit; localised texts are translation
objects; dates are ISO-8601 with their offset.
"""


def build_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """The ASGI application. The engine is opened at start-up and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.resolved_database_url(), echo=settings.db_echo)
        app.state.runtime = Runtime(
            settings=settings,
            engine=engine,
            clock=the_clock,
            token_key=settings.resolved_jwt_secret(),
        )
        limiter = app.state.rate_limiter = RateLimiter.from_settings(settings)
        app.state.runtime.caches["barcode_vault"] = vault
        register_payment_providers(payments, settings, engine, app.state.runtime.clock)
        app.state.outbox_handlers = outbox_handlers(engine, payments, app.state.runtime.clock)
        app.state.payment_surface = PaymentSurface(
            engine=engine,
            clock=app.state.runtime.clock,
            gateway=payments,
            csrf_secret=settings.resolved_payment_test_webhook_secret(),
            public_url=settings.public_url,
        )
        board = app.state.runtime.caches["board"] = Board(engine, clock=app.state.runtime.clock)
        tasks: list[asyncio.Task[None]] = []
        stop = asyncio.Event()
        if settings.background_tasks:  # the board, the outbox dispatcher and the sweepers
            tasks.append(asyncio.create_task(board.follow(), name="availability-board"))
            stop, loops = background.start(
                settings, engine, app.state.runtime.clock, handlers=app.state.outbox_handlers
            )
            tasks.append(loops)
        if settings.background_tasks and app.state.mailer is not None:
            tasks.append(
                asyncio.create_task(
                    delivery_loop(engine, app.state.mailer, app.state.runtime.clock)
                )
            )
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await engine.dispose()
            if limiter is not None:
                await limiter.close()

    the_clock = clock or SystemClock()
    vault = KeyVault(settings.resolved_barcode_key_secret())
    # The sales context's confirmation handler, registered while the app is built (a test may
    # put its own in its place before the app starts).
    payments = PaymentGateway()
    payments.set_payment_confirmed_handler(
        card.confirmation_handler(sales_api.seller_at, vault, the_clock.now),
        lock_payer=card.lock_paid_order,
    )
    events.register_webhook_payloads()
    contact_events.register_webhook_payloads()

    app = FastAPI(
        title="billetterie",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.payments = payments
    app.add_middleware(envelope.JsonBodyMiddleware)
    app.add_middleware(IdempotencyMiddleware, methods=settings.idempotent_methods)
    app.add_middleware(GZipMiddleware, minimum_size=settings.gzip_minimum_size)
    app.add_middleware(RateLimitMiddleware)
    app.add_exception_handler(DomainError, envelope.domain_error)
    app.add_exception_handler(RateLimited, rate_limited)
    app.add_exception_handler(RequestValidationError, envelope.validation_error)
    app.add_exception_handler(StarletteHTTPException, envelope.http_error)
    app.add_exception_handler(Exception, envelope.unexpected_error)
    # routes are matched in order: the availability reads first, as the most frequent calls,
    # then the sale's (an on-sale rush is mostly carts and closes)
    app.include_router(availability_api.availability_service.router())
    app.include_router(availability_api.router)
    for service in (sales_api.facade, sales_api.order_service, sales_api.history_service):
        app.include_router(service.router())
    app.include_router(sales_api.router)
    app.include_router(auth_api.router)
    app.include_router(catalog_api.catalog_service.router())
    app.include_router(catalog_api.setup_service.router())
    app.include_router(mirror_api.router)
    app.include_router(barcode_api.router)
    app.include_router(payments_api.router)
    app.include_router(webhooks_api.router)
    app.include_router(printing_api.router)
    app.include_router(printing_api.access_control.router())
    app.include_router(contacts_api.contact_service.router())

    app.include_router(account_web.router)
    app.include_router(saml_web.router)
    app.include_router(oidc_web.router)
    for shop_router in (shop_pages, shop_cart, shop_account, shop_redirect, shop_queue):
        app.include_router(shop_router.router)
    app.state.mailer = mailer_for(settings)
    if settings.dev_mail:
        app.include_router(account_web.dev_router)

    openapi.install(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # the RPC methods' calls skip FastAPI's routing and dependencies (compat/rpc.py)
    rpc.install_dispatch(app)
    return app


def register_payment_providers(
    gateway: PaymentGateway, settings: Settings, engine: AsyncEngine, clock: Clock
) -> None:
    """The card providers this configuration serves (the test provider unless turned off)."""
    if settings.payment_test_provider:
        gateway.register(
            TestCardProvider(
                engine,
                clock,
                secret=settings.resolved_payment_test_webhook_secret(),
                base_url=settings.public_url,
            )
        )


def outbox_handlers(
    engine: AsyncEngine, gateway: PaymentGateway, clock: Clock
) -> dict[str, Handler]:
    """The outbox handlers bound to this process's engine and payment gateway (the webhook
    sender is bound by :mod:`billetterie.background` itself)."""
    return {payment_tasks.TOPIC: payment_tasks.RefundRunner(engine, gateway, clock)}


def mailer_for(settings: Settings) -> Mailer | None:
    """SMTP when configured, else the development sink when asked for, else none (mail then
    waits in the outbox)."""
    if settings.smtp_host:
        return SmtpMailer(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_sender,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password,
        )
    return MailSink() if settings.dev_mail else None


def app_from_environment() -> FastAPI:
    """The app of one server process, configured from ``BILLETTERIE_*`` (``serve --workers``)."""
    from billetterie.serving import tune_collector

    app = build_app(Settings())
    tune_collector()
    return app
