"""Composition root of the wallet: ``build_app(settings)``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from billetterie_wallet import __version__, organizer_api, security, web
from billetterie_wallet.clock import Clock, SystemClock
from billetterie_wallet.config import WalletSettings
from billetterie_wallet.db import create_engine
from billetterie_wallet.errors import WalletError
from billetterie_wallet.runtime import Runtime
from billetterie_wallet.services import organizer_ops

log = logging.getLogger("billetterie_wallet")

DESCRIPTION = """\
The mobile-ticket wallet. The box office injects tickets and digital privileges through the
organizer API (`/api/v1/organizer/...`, API key as Bearer token or Basic password), pushes
cancelled and controlled tickets, and reads the feedback feed. Spectators use the web app at
`/app`. Errors are RFC 9457 problem+json with a stable `code`.
"""


def _problem(status: int, code: str, detail: str, **extra: Any) -> Response:
    body = {
        "type": f"https://billetterie.dev/errors/{code}",
        "title": code,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return Response(orjson.dumps(body), status_code=status, media_type="application/problem+json")


def _is_page(request: Request) -> bool:
    path = request.url.path
    return (path.startswith("/app") and not path.startswith("/app/api/")) or path.startswith("/dev")


async def wallet_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WalletError)
    if _is_page(request):
        if isinstance(exc, web.SignInRequired):
            return RedirectResponse("/app/login", status_code=303)
        return web.render(request, "message.html", status=exc.http_status, message=exc.detail)
    response = _problem(exc.http_status, exc.code, exc.detail, **exc.extra)
    if exc.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer, Basic realm="wallet"'
    return response


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        code, detail = "error.request.malformed_json", "the body is not valid JSON"
    else:
        parts = []
        for error in errors[:10]:
            where = ".".join(str(p) for p in error.get("loc", ())[1:]) or "(body)"
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        code, detail = "error.request.invalid", "; ".join(parts)
    if _is_page(request):
        return web.render(request, "message.html", status=400, message="Please check the form.")
    return _problem(400, code, detail)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "error.not_found", 405: "error.request.method_not_allowed"}.get(
        exc.status_code, f"error.http.{exc.status_code}"
    )
    if _is_page(request) and hasattr(request.state, "csrf"):
        return web.render(request, "message.html", status=exc.status_code, message=str(exc.detail))
    return _problem(exc.status_code, code, str(exc.detail))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s", request.url.path, exc_info=exc)
    return _problem(500, "error.internal", "an unexpected error occurred; it has been logged")


async def _sweeper(runtime: Runtime) -> None:
    while True:
        await asyncio.sleep(runtime.settings.sweep_interval_seconds)
        try:
            await organizer_ops.sweep(
                runtime.engine, now=runtime.clock.now(), deletion_timeout=runtime.deletion_timeout
            )
        except Exception:  # keep sweeping; the next round retries
            log.exception("wallet sweep failed")


def build_app(settings: WalletSettings, *, clock: Clock | None = None) -> FastAPI:
    """The wallet's ASGI application; the engine opens at start-up and closes at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.resolved_database_url(), echo=settings.db_echo)
        runtime = app.state.runtime = Runtime(
            settings=settings,
            engine=engine,
            clock=clock or SystemClock(),
            secret=settings.resolved_secret_key(),
        )
        task = asyncio.create_task(_sweeper(runtime)) if settings.background_tasks else None
        # What is alive once started (modules, schemas, compiled statements) lives as long as
        # the process: out of the collector's sight, a full collection no longer walks it
        # (they came every few batches of 1000 tickets and cost a sixth of the time).
        gc.freeze()
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await engine.dispose()

    app = FastAPI(
        title="billetterie wallet",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )

    @app.middleware("http")
    async def visitor_cookies(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Pages get a CSRF token and a device id (cookie, or ``X-Device-Id`` from an app)."""
        if not request.url.path.startswith(("/app", "/dev")):
            return await call_next(request)
        csrf = request.cookies.get(security.CSRF_COOKIE)
        new_csrf = csrf is None or not 16 <= len(csrf) <= 64
        request.state.csrf = web.new_device_uid() if new_csrf else csrf
        device = request.headers.get(security.DEVICE_HEADER) or request.cookies.get(
            security.DEVICE_COOKIE
        )
        new_device = device is None or not security.DEVICE_ID.match(device)
        request.state.device_uid = web.new_device_uid() if new_device else device
        response = await call_next(request)
        secure = settings.secure_cookies
        if new_csrf:
            response.set_cookie(
                security.CSRF_COOKIE,
                request.state.csrf,
                httponly=True,
                samesite="lax",
                secure=secure,
                path="/",
            )
        if new_device:
            response.set_cookie(
                security.DEVICE_COOKIE,
                request.state.device_uid,
                max_age=5 * 365 * 86400,
                httponly=True,
                samesite="lax",
                secure=secure,
                path="/",
            )
        return response

    app.add_exception_handler(WalletError, wallet_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
    app.include_router(organizer_api.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=web.HERE / "static"), name="static")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/app", status_code=307)

    return app


def app_from_environment() -> FastAPI:
    """The app of one server process, configured from ``BILLETTERIE_WALLET_*``."""
    return build_app(WalletSettings())
