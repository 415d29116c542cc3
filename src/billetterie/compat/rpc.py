"""RPC routing: ``POST /<module>/backend-apis/<service>/<version>/<method>``.

A :class:`RpcService` declares its methods once with their request and response models; it
mounts them under every version it serves, so ``v1_34`` can be added beside ``v1_33`` by listing
it (and overriding only the methods that changed).
"""

import base64
import time
from typing import Any, Awaitable, Callable  # noqa: UP035 - annotations are evaluated here

import orjson
from fastapi import APIRouter, Body, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from billetterie.catalog.models import CatalogScope
from billetterie.catalog.services import (
    PointOfSaleContext,
    SnapshotVersion,
    channel_state,
    point_of_sale_context,
    setup_version,
)
from billetterie.compat.envelope import JsonResponse, envelope
from billetterie.compat.ratelimit import enforce_rate_limit
from billetterie.compat.runtime import Runtime
from billetterie.identity.errors import MissingToken
from billetterie.identity.models import Operator
from billetterie.identity.services import TokenClaims, decode_token, operator_for
from billetterie.shared.db import read

OPERATOR_CACHE_SECONDS = 2.0
TOKEN_CACHE_SIZE = 10000  # decoded tokens kept per process (then the cache starts afresh)


class Call:
    """One authenticated call: who calls, from which point of sale, and with what.

    The point of sale's context (channel, organization, payment methods) is cached per process
    and checked against the institution's setup version on every call, so a setup import is
    seen at once; reading that version is the one query most calls make.
    """

    def __init__(self, request: Request, runtime: Runtime, operator: Operator) -> None:
        self.request = request
        self.runtime = runtime
        self.operator = operator
        self._context: PointOfSaleContext | None = None

    def _cached_context(self) -> PointOfSaleContext | None:
        contexts: dict[int, PointOfSaleContext] = self.runtime.caches.setdefault("contexts", {})
        return contexts.get(self.operator.point_of_sale_id)

    async def _load_context(self, conn: AsyncConnection) -> PointOfSaleContext:
        context = await point_of_sale_context(conn, self.operator.point_of_sale_id)
        self.runtime.caches.setdefault("contexts", {})[self.operator.point_of_sale_id] = context
        return context

    def remembered_context(self) -> PointOfSaleContext | None:
        """The point of sale's context as this process cached it, unchecked: for a caller that
        checks it against a setup version it keeps itself (and then calls ``trust``)."""
        return self._context or self._cached_context()

    def forget_context(self) -> None:
        """Read the point of sale's context again at the next :meth:`context`."""
        self._context = None
        self.runtime.caches.setdefault("contexts", {}).pop(self.operator.point_of_sale_id, None)

    def trust(self, context: PointOfSaleContext) -> None:
        """Use ``context`` for the rest of this call (checked by the caller)."""
        self._context = context

    async def context(self) -> PointOfSaleContext:
        if self._context is None:
            async with read(self.runtime.engine) as conn:
                cached = self._cached_context()
                version = await setup_version(conn, self.operator.institution_id)
                if cached is None or cached.setup_version != version:
                    cached = await self._load_context(conn)
            self._context = cached
        return self._context

    async def catalog_state(
        self, scope: CatalogScope
    ) -> tuple[PointOfSaleContext, SnapshotVersion]:
        """The context and the channel's catalog version, in one query when the cache is warm."""
        async with read(self.runtime.engine) as conn:
            context = self._context or self._cached_context()
            if context is None:
                context = await self._load_context(conn)
            state = await channel_state(
                conn, context.institution_id, context.sales_channel.id, scope
            )
            if state.setup_version != context.setup_version:
                context = await self._load_context(conn)
                state = await channel_state(
                    conn, context.institution_id, context.sales_channel.id, scope
                )
        self._context = context
        return context, state.catalog


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _claims(runtime: Runtime, token: str) -> TokenClaims:
    """The token's claims, decoded once per process: a token seen before (the same string, so
    the same signature) is only checked for expiry."""
    now = runtime.clock.now().timestamp()
    tokens: dict[str, tuple[TokenClaims, float]] = runtime.caches.setdefault("tokens", {})
    cached = tokens.get(token)
    if cached is not None and cached[1] > now:
        return cached[0]
    claims = decode_token(token, key=runtime.token_key, now=runtime.clock.now())
    try:  # decode_token checked the signature and that exp is an integer in the future
        payload = token.split(".")[1]
        expires = float(
            orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
        )
    except (IndexError, KeyError, TypeError, ValueError, orjson.JSONDecodeError):
        return claims
    if len(tokens) >= TOKEN_CACHE_SIZE:
        tokens.clear()
    tokens[token] = (claims, expires)
    return claims


async def current_operator(request: Request) -> Operator:
    """The operator behind the request's Bearer token (401 otherwise). The operator row is
    re-read at most every OPERATOR_CACHE_SECONDS per process: a disabled operator stops then."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MissingToken("send Authorization: Bearer <token> from /tnai/backend-apis/v1/auth")
    runtime = runtime_of(request)
    claims = _claims(runtime, token.strip())
    operators: dict[TokenClaims, tuple[float, Operator]] = runtime.caches.setdefault(
        "operators", {}
    )
    cached = operators.get(claims)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    async with read(runtime.engine) as conn:
        operator = await operator_for(conn, claims)
    if len(operators) > 10000:
        operators.clear()
    operators[claims] = (time.monotonic() + OPERATOR_CACHE_SECONDS, operator)
    return operator


async def current_call(request: Request) -> Call:
    # current_operator is called, not declared as a sub-dependency: one dependency to solve
    # per call instead of two
    operator = await current_operator(request)
    await enforce_rate_limit(request, operator)
    return Call(request, runtime_of(request), operator)


Handler = Callable[[Any, Call], Awaitable[dict[str, Any] | Response]]


class RpcService:
    def __init__(
        self, module: str, service: str, versions: tuple[str, ...], description: str
    ) -> None:
        self.module = module
        self.service = service
        self.versions = versions
        self.description = description
        self._methods: dict[str, tuple[type[BaseModel], type[BaseModel], str, Handler]] = {}

    def method(
        self, name: str, *, request: type[BaseModel], response: type[BaseModel]
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            doc = (handler.__doc__ or "").strip()
            self._methods[name] = (request, response, doc, handler)
            return handler

        return register

    def router(self) -> APIRouter:
        router = APIRouter(tags=[self.service])
        for version in self.versions:
            for name, (request_model, response_model, doc, handler) in self._methods.items():
                router.add_api_route(
                    f"/{self.module}/backend-apis/{self.service}/{version}/{name}",
                    _endpoint(request_model, handler),
                    methods=["POST"],
                    name=f"{self.service}.{version}.{name}",
                    operation_id=f"{self.service}_{version}_{name}",
                    summary=f"{self.service}.{name}",
                    description=doc,
                    response_model=response_model,
                    response_model_exclude_none=True,
                )
        return router


def _empty(model: type[BaseModel]) -> BaseModel:
    """An absent or ``null`` body stands for ``{}``."""
    try:
        return model.model_validate({})
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=None) from None


def _endpoint(model: type[BaseModel], handler: Handler) -> Callable[..., Awaitable[Response]]:
    """A FastAPI endpoint for ``handler``; the body may be absent only when every parameter
    is optional (it then stands for ``{}``)."""

    async def respond(payload: BaseModel, call: Call) -> Response:
        result = await handler(payload, call)
        if isinstance(result, Response):
            return result
        return JsonResponse(envelope(getattr(payload, "requestId", None), **result))

    if any(field.is_required() for field in model.model_fields.values()):

        async def required_body(
            body: model = Body(),  # type: ignore[valid-type]
            call: Call = Depends(current_call),
        ) -> Response:
            return await respond(body, call)

        return required_body

    async def optional_body(
        body: model | None = Body(default=None),  # type: ignore[valid-type]
        call: Call = Depends(current_call),
    ) -> Response:
        return await respond(body if body is not None else _empty(model), call)

    return optional_body
