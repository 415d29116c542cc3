"""Composition root: ``build_app(settings)`` wires settings, engine, clock and the surfaces."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware

from billetterie import __version__
from billetterie.compat import (
    auth_api,
    availability_api,
    catalog_api,
    envelope,
    mirror_api,
    openapi,
)
from billetterie.compat.ratelimit import RateLimited, RateLimitMiddleware, rate_limited
from billetterie.compat.runtime import Runtime
from billetterie.config import Settings
from billetterie.inventory import tasks as inventory_tasks
from billetterie.inventory.board import Board
from billetterie.shared.clock import Clock, SystemClock
from billetterie.shared.db import create_engine
from billetterie.shared.errors import DomainError
from billetterie.shared.ratelimit import RateLimiter

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
            clock=clock or SystemClock(),
            token_key=settings.resolved_jwt_secret(),
        )
        limiter = app.state.rate_limiter = RateLimiter.from_settings(settings)
        board = app.state.runtime.caches["board"] = Board(engine, clock=app.state.runtime.clock)
        tasks = (
            inventory_tasks.start(engine, app.state.runtime.clock, board)
            if settings.background_tasks
            else []
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await engine.dispose()
            if limiter is not None:
                await limiter.close()

    app = FastAPI(
        title="billetterie",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.add_middleware(envelope.JsonBodyMiddleware)
    app.add_middleware(GZipMiddleware, minimum_size=settings.gzip_minimum_size)
    app.add_middleware(RateLimitMiddleware)
    app.add_exception_handler(DomainError, envelope.domain_error)
    app.add_exception_handler(RateLimited, rate_limited)
    app.add_exception_handler(RequestValidationError, envelope.validation_error)
    app.add_exception_handler(StarletteHTTPException, envelope.http_error)
    app.add_exception_handler(Exception, envelope.unexpected_error)
    # the availability reads first: they are the most frequent calls, and routes are matched
    # in order
    app.include_router(availability_api.availability_service.router())
    app.include_router(availability_api.router)
    app.include_router(auth_api.router)
    app.include_router(catalog_api.catalog_service.router())
    app.include_router(catalog_api.setup_service.router())
    app.include_router(mirror_api.router)

    openapi.install(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def app_from_environment() -> FastAPI:
    """The app of one server process, configured from ``BILLETTERIE_*`` (``serve --workers``)."""
    return build_app(Settings())
