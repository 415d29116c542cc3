"""``Idempotency-Key`` on unsafe sales calls (ASGI middleware; see ``docs/api/idempotency.md``).

A ``POST`` to an RPC method of the configured set (``createOrUpdateOrder``, ``closeOrder``, ...)
or to a path under a configured prefix (``/api/v1/payments/``), carrying ``Idempotency-Key``,
is run at most once per ``(institution, operator, key)``:

- the first call runs; its status, headers and body are stored (2xx and 4xx answers except
  401, 403, 408, 409 and 429; a 5xx or 509 is not stored and the key is released);
- a repeat with the same body replays the stored answer byte for byte, plus
  ``Idempotent-Replayed: true``;
- a repeat while the first call runs answers **409** ``error.request.idempotency_in_flight``
  (with ``Retry-After: 1``); a repeat with a different body answers **422**
  ``error.request.idempotency_mismatch``; a malformed key **400**
  ``error.request.idempotency_key_invalid``;
- a call without a valid token passes through untouched (it answers 401 and stores nothing).

The middleware sits inside the gzip middleware: bodies are stored uncompressed and each replay
is compressed for the client that asks.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import orjson
from starlette.responses import Response

from billetterie.catalog.errors import UnknownInstitution
from billetterie.catalog.services import institution_id_by_code
from billetterie.compat.envelope import RPC_PREFIXES, JsonResponse, envelope
from billetterie.compat.runtime import Runtime
from billetterie.identity.services import decode_token
from billetterie.shared import idempotency
from billetterie.shared.db import read
from billetterie.shared.errors import DomainError, Unauthenticated

HEADER = b"idempotency-key"
REPLAYED_HEADER = "idempotent-replayed"
DEFAULT_METHODS = (
    "createOrUpdateOrder",
    "closeOrder",
    "cancelOperations",
    "createPaymentsAndCloseOrder",
    "reopenOrder",
    "abandonMovements",
    "/api/v1/payments/",
)
NOT_STORED = {401, 403, 408, 409, 425, 429}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "date", "server"}


class IdempotencyMiddleware:
    """``methods``: RPC method names (the path's last segment under ``/<module>/backend-apis/``)
    and path prefixes (entries starting with ``/``) the key applies to."""

    def __init__(self, app: Any, *, methods: Iterable[str] = DEFAULT_METHODS) -> None:
        self.app = app
        entries = list(methods)
        self.method_names = frozenset(m for m in entries if not m.startswith("/"))
        self.prefixes = tuple(m for m in entries if m.startswith("/"))

    def applies(self, path: str) -> bool:
        if path.startswith(RPC_PREFIXES) and "/backend-apis/" in path:
            return path.rsplit("/", 1)[-1] in self.method_names
        return bool(self.prefixes) and path.startswith(self.prefixes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not self.applies(scope["path"]):
            await self.app(scope, receive, send)
            return
        raw_key = next((v for k, v in scope["headers"] if k == HEADER), None)
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        try:
            key = idempotency.check_key(raw_key.decode("latin-1").strip())
        except DomainError as error:
            await _error(path, error)(scope, receive, send)
            return
        runtime: Runtime = scope["app"].state.runtime
        who = await _caller(runtime, scope)
        if who is None:  # no valid token: the app answers 401, nothing is stored
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive)
        if more is not None:  # the client went away mid-body
            return
        settings = runtime.settings
        now = runtime.clock.now()
        fingerprint = idempotency.request_hash("POST", path, body)
        try:
            outcome = await idempotency.begin(
                runtime.engine,
                idempotency.Scope(who[0], who[1], key),
                fingerprint,
                now=now,
                lease=timedelta(seconds=settings.idempotency_lease_seconds),
                ttl=timedelta(seconds=settings.idempotency_ttl_seconds),
            )
        except idempotency.KeyInFlight as error:
            response = _error(path, error)
            response.headers["Retry-After"] = "1"
            await response(scope, receive, send)
            return
        except DomainError as error:
            await _error(path, error)(scope, receive, send)
            return
        if isinstance(outcome, idempotency.StoredResponse):
            await _replay(outcome, send)
            return
        await self._run(runtime, outcome, scope, body, send)

    async def _run(
        self,
        runtime: Runtime,
        started: idempotency.Started,
        scope: Any,
        body: bytes,
        send: Any,
    ) -> None:
        sent_body = False

        async def replay_receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        status = 500
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (n.decode("latin-1"), v.decode("latin-1"))
                    for n, v in message.get("headers", ())
                ]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            await idempotency.abandon(runtime.engine, started)
            raise
        if status >= 500 or status in NOT_STORED:
            await idempotency.abandon(runtime.engine, started)
            return
        kept = [(n, v) for n, v in headers if n.lower() not in HOP_BY_HOP]
        await idempotency.complete(
            runtime.engine, started, idempotency.StoredResponse(status, kept, b"".join(chunks))
        )


async def _caller(runtime: Runtime, scope: Any) -> tuple[int, str] | None:
    """``(institution id, operator login)`` of the request's token, None when it has none."""
    header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
    scheme, _, token = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        claims = decode_token(token.strip(), key=runtime.token_key, now=runtime.clock.now())
    except Unauthenticated:
        return None
    institutions: dict[str, int] = runtime.caches.setdefault("institution_ids", {})
    institution_id = institutions.get(claims.institution_code)
    if institution_id is None:
        try:
            async with read(runtime.engine) as conn:
                institution_id = await institution_id_by_code(conn, claims.institution_code)
        except UnknownInstitution:
            return None
        institutions[claims.institution_code] = institution_id
    return institution_id, claims.login


async def _read_body(receive: Any) -> tuple[bytes, Any]:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


async def _replay(stored: idempotency.StoredResponse, send: Any) -> None:
    headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in stored.headers]
    headers.append((REPLAYED_HEADER.encode(), b"true"))
    await send({"type": "http.response.start", "status": stored.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body, "more_body": False})


def _error(path: str, error: DomainError) -> Response:
    """The S-360 envelope on RPC paths, RFC 9457 problem+json elsewhere."""
    if path.startswith(RPC_PREFIXES):
        return JsonResponse(envelope(None, error.code, error.detail), status_code=error.http_status)
    body = {
        "type": f"https://billetterie.dev/errors/{error.code}",
        "title": error.code,
        "status": error.http_status,
        "detail": error.detail,
        "code": error.code,
    }
    return Response(
        orjson.dumps(body), status_code=error.http_status, media_type="application/problem+json"
    )
