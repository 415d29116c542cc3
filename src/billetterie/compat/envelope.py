"""The S-360 envelope: ``statusCode``, ``statusDetail``, and the caller's ``requestId`` echoed.

Business refusals answer HTTP 200 with the error code in ``statusCode``; malformed requests and
authentication failures answer 4xx with the same envelope. Outside the RPC surface errors are
RFC 9457 ``application/problem+json`` carrying the same stable code.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from billetterie.shared.errors import DomainError, InvalidRequest, Unauthenticated

RPC_PREFIXES = ("/tnseb/", "/tnco/", "/tnci/", "/tnai/")
SUCCESS = "success"


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def envelope(
    request_id: Any = None, status_code: str = SUCCESS, detail: str = "OK", **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"statusCode": status_code, "statusDetail": detail}
    if request_id is not None:
        body["requestId"] = request_id
    body.update(fields)
    return body


def _is_rpc(request: Request) -> bool:
    return request.url.path.startswith(RPC_PREFIXES)


async def _request_id(request: Request) -> Any:
    try:
        body = orjson.loads(await request.body())
    except (orjson.JSONDecodeError, RuntimeError):
        return None
    value = body.get("requestId") if isinstance(body, dict) else None
    return value if isinstance(value, str) and len(value) <= 200 else None


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


async def render_error(request: Request, error: DomainError) -> Response:
    if not _is_rpc(request):
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthenticated) else None
        response = _problem(error.http_status, error.code, error.detail, **error.extra)
        if headers:
            response.headers.update(headers)
        if getattr(error, "retry_after", None) is not None:
            response.headers["Retry-After"] = str(error.retry_after)  # type: ignore[attr-defined]
        return response
    retry_after = getattr(error, "retry_after", None)
    if isinstance(error, Unauthenticated | InvalidRequest):
        status = error.http_status
    else:  # business refusals answer 200, S-360's way; "busy, retry" is 503 with Retry-After
        status = 503 if retry_after is not None else 200
    body = envelope(await _request_id(request), error.code, error.detail, **error.extra)
    response = JsonResponse(body, status_code=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _describe(errors: Any) -> tuple[str, str]:
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return "error.request.malformed_json", "the body is not valid JSON"
    parts = []
    for error in errors[:10]:
        loc = ".".join(str(p) for p in error.get("loc", ())[1:]) or "(body)"
        parts.append(f"{loc}: {error.get('msg', 'invalid')}")
    return "error.request.invalid", "; ".join(parts)


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    code, detail = _describe(exc.errors())
    if not _is_rpc(request):
        return _problem(400, code, detail)
    return JsonResponse(envelope(await _request_id(request), code, detail), status_code=400)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {
        404: "error.request.unknown_method" if _is_rpc(request) else "error.not_found",
        405: "error.request.method_not_allowed",
    }.get(exc.status_code, f"error.http.{exc.status_code}")
    detail = (
        "no such method on this service and version"
        if code == "error.request.unknown_method"
        else str(exc.detail)
    )
    headers = dict(exc.headers or {})
    if not _is_rpc(request):
        response = _problem(exc.status_code, code, detail)
    else:
        response = JsonResponse(envelope(None, code, detail), status_code=exc.status_code)
    response.headers.update(headers)
    return response


async def domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    return await render_error(request, exc)


class DatabaseUnavailable(DomainError):
    """The database cannot take the call now (no connection left, or unreachable)."""

    code = "error.service.unavailable"
    http_status = 503

    def __init__(self) -> None:
        super().__init__("the service is overloaded or its database unreachable; retry shortly")
        self.retry_after = 2


def _database_unavailable(exc: Exception) -> bool:
    """A pool that timed out, a server refusing connections (``too many clients``), a lost
    connection: the call can be retried, it is not a bug."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, PoolTimeout | ConnectionError):
        return True
    if isinstance(exc, DBAPIError):
        text = f"{type(exc.orig).__name__} {exc.orig}".lower()
        return exc.connection_invalidated or any(
            marker in text
            for marker in (
                "too many clients",
                "toomanyconnections",
                "connection refused",
                "cannot connect",
                "connection was closed",
                "connectiondoesnotexist",
            )
        )
    return False


class UnstorableText(DomainError):
    """Text the database cannot keep (a NUL character) that no schema of the call refused."""

    code = "error.request.invalid"
    http_status = 400

    def __init__(self) -> None:
        super().__init__("a text of the request contains a NUL character")


def _unstorable_text(exc: Exception) -> bool:
    """PostgreSQL refusing a NUL character in text (asyncpg's CharacterNotInRepertoireError,
    SQLSTATE 22021): bad input, and the transaction rolled back with it."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(
        getattr(orig, "__cause__", None), "sqlstate", None
    )
    return sqlstate == "22021" or "characternotinrepertoire" in type(orig).__name__.lower()


async def unexpected_error(request: Request, exc: Exception) -> Response:
    import logging

    if _unstorable_text(exc):
        return await render_error(request, UnstorableText())
    if _database_unavailable(exc):
        logging.getLogger("billetterie").warning(
            "database unavailable on %s: %s", request.url.path, exc
        )
        return await render_error(request, DatabaseUnavailable())
    logging.getLogger("billetterie").exception(
        "unexpected error on %s", request.url.path, exc_info=exc
    )
    if not _is_rpc(request):
        return _problem(500, "error.internal", "an unexpected error occurred; it has been logged")
    return JsonResponse(
        envelope(None, "error.internal", "an unexpected error occurred"), status_code=500
    )


class JsonBodyMiddleware:
    """RPC bodies are JSON whatever the client declares (``curl -d`` says form-urlencoded);
    S-360 reads them as JSON, so the surface does the same."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].startswith(RPC_PREFIXES)
        ):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            headers.append((b"content-type", b"application/json"))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)
