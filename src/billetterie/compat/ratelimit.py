"""Call limits on the partner surface, as S-360 applies them: by default 60 calls per minute per
institution per endpoint, beyond which a call answers **HTTP 509** with ``Retry-After``.

- An endpoint is a route's path template: each RPC method of each version, each GET mirror
  (``/api/v1/catalog/products/{product_id}`` is one endpoint whatever the product).
- Operators without ``callsPerMinute`` share their institution's allowance
  (``rate_limit_per_minute``). An operator with its own ``callsPerMinute`` counts in a bucket of
  its own, which replaces the institution's for its calls; ``callsPerMinute: 0`` is unlimited.
- ``POST /tnai/backend-apis/v1/auth`` has no institution yet: it is limited per client address
  (``rate_limit_auth_per_minute``), before the secret is checked.
- The check runs after authentication (a call without a valid token answers 401 and is not
  counted) and before the body is handled; refused calls are counted too.
- Counted responses carry ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining``.
- The counters' storage failing lets calls through (see :mod:`billetterie.shared.ratelimit`).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import Response

from billetterie.compat.envelope import JsonResponse, envelope, render_error
from billetterie.identity.models import Operator
from billetterie.shared.errors import DomainError
from billetterie.shared.ratelimit import Allowance, RateLimiter

RATE_LIMITED_STATUS = 509
AUTH_PATH = "/tnai/backend-apis/v1/auth"
# Where the middleware finds the allowances counted for this request (a list shared by the
# scope copies inner middlewares make).
SCOPE_KEY = "billetterie.rate_limit"


class RateLimited(DomainError):
    code = "error.request.rate_limited"
    http_status = RATE_LIMITED_STATUS

    def __init__(self, allowance: Allowance, window_seconds: int) -> None:
        super().__init__(
            f"more than {allowance.limit} calls in {window_seconds} s to this endpoint; "
            f"retry in {allowance.retry_after} s"
        )
        self.allowance = allowance


def limiter_of(app: Any) -> RateLimiter | None:
    limiter: RateLimiter | None = getattr(getattr(app, "state", None), "rate_limiter", None)
    return limiter


def call_bucket(operator: Operator, endpoint: str, default_limit: int) -> tuple[Any, ...] | None:
    """``(limit, *key)`` for one operator's call to ``endpoint``; None when unlimited."""
    if operator.calls_per_minute == 0:
        return None
    if operator.calls_per_minute is None:
        return (default_limit, "institution", operator.institution_id, endpoint)
    return (
        operator.calls_per_minute,
        "operator",
        operator.institution_id,
        operator.id,
        endpoint,
    )


async def enforce_rate_limit(request: Request, operator: Operator) -> None:
    """Count this authenticated call; raise :class:`RateLimited` beyond the allowance.

    Call it once per request, after the operator is known (``rpc.current_call`` does)."""
    limiter = limiter_of(request.app)
    if limiter is None:
        return
    route = request.scope.get("route")
    endpoint = getattr(route, "path", None) or request.url.path
    bucket = call_bucket(operator, endpoint, limiter.default_limit)
    if bucket is None:
        return
    allowance = await limiter.hit(*bucket)
    if allowance is None:
        return
    counted = request.scope.get(SCOPE_KEY)
    if counted is not None:
        counted.append(allowance)
    if not allowance.allowed:
        raise RateLimited(allowance, limiter.window_seconds)


async def rate_limited(request: Request, exc: Exception) -> Response:
    """509 with ``Retry-After``: the S-360 envelope on RPC paths, problem+json elsewhere."""
    assert isinstance(exc, RateLimited)
    response = await render_error(request, exc)
    response.status_code = RATE_LIMITED_STATUS
    response.headers["Retry-After"] = str(exc.allowance.retry_after)
    return response


def _headers(allowance: Allowance) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit", str(allowance.limit).encode()),
        (b"x-ratelimit-remaining", str(allowance.remaining).encode()),
    ]


class RateLimitMiddleware:
    """Adds ``X-RateLimit-*`` to responses whose call was counted, and limits token requests
    per client address. Does nothing when limits are off."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        limiter = limiter_of(scope.get("app")) if scope["type"] == "http" else None
        if limiter is None:
            await self.app(scope, receive, send)
            return
        counted: list[Allowance] = []
        scope[SCOPE_KEY] = counted

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start" and counted:
                headers = [*message.get("headers", ()), *_headers(counted[-1])]
                message = {**message, "headers": headers}
            await send(message)

        if limiter.auth_limit and scope["path"] == AUTH_PATH and scope["method"] == "POST":
            client = scope.get("client")
            address = client[0] if client else "unknown"
            allowance = await limiter.hit(limiter.auth_limit, "auth", address)
            if allowance is not None:
                counted.append(allowance)
                if not allowance.allowed:
                    error = RateLimited(allowance, limiter.window_seconds)
                    response = JsonResponse(
                        envelope(None, error.code, error.detail),
                        status_code=RATE_LIMITED_STATUS,
                        headers={"Retry-After": str(allowance.retry_after)},
                    )
                    await response(scope, receive, send_with_headers)
                    return
        await self.app(scope, receive, send_with_headers)
