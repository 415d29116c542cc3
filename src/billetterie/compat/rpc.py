"""RPC routing: ``POST /<module>/backend-apis/<service>/<version>/<method>``.

A :class:`RpcService` declares its methods once with their request and response models; it
mounts them under every version it serves, so ``v1_34`` can be added beside ``v1_33`` by listing
it (and overriding only the methods that changed).

The routes are FastAPI's (the OpenAPI document, the error handlers, a body FastAPI refuses all
come from them), but a well-formed call does not go through FastAPI's routing and dependency
resolution: :class:`RpcDispatch`, in front of the application's router, finds the method by its
path in a table, validates the body with the method's model and answers through the same
handler, as the route would. Whatever it does not take on (a body that is not a JSON object of
the model, a path that an earlier route would match) goes to the router as it came, so refusals
are FastAPI's own. Under an on-sale rush that took an eighth off the server's CPU per order
(docs/scaling.md, item 15). It leans on two helpers Starlette keeps private
(``wrap_app_handling_exceptions``, ``get_route_path``), the ones its own routes use;
``tests/test_rpc_dispatch.py`` compares its answers with the router's.
"""

import base64
import time
from typing import Any, Awaitable, Callable  # noqa: UP035 - annotations are evaluated here

import orjson
from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette._utils import get_route_path
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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

    endpoint: Callable[..., Awaitable[Response]]
    if any(field.is_required() for field in model.model_fields.values()):

        async def required_body(
            body: model = Body(),  # type: ignore[valid-type]
            call: Call = Depends(current_call),
        ) -> Response:
            return await respond(body, call)

        endpoint = required_body
    else:

        async def optional_body(
            body: model | None = Body(default=None),  # type: ignore[valid-type]
            call: Call = Depends(current_call),
        ) -> Response:
            return await respond(body if body is not None else _empty(model), call)

        endpoint = optional_body
    endpoint.rpc_method = _Method(model, respond)  # type: ignore[attr-defined]
    return endpoint


class _Method:
    """What :class:`RpcDispatch` needs of a method: its request model and its answer."""

    __slots__ = ("model", "respond")

    def __init__(
        self, model: type[BaseModel], respond: Callable[[BaseModel, Call], Awaitable[Response]]
    ) -> None:
        self.model, self.respond = model, respond


class RpcDispatch:
    """The RPC methods' calls answered without FastAPI's routing and dependency resolution
    (see the module docstring); every other request goes to ``app``, the router's own stack.

    A call it takes is answered as its route would: the route is the scope's ``route`` (the
    rate limit counts per route path), the operator and the rate limit come from
    :func:`current_call`, the body is validated by the method's model as FastAPI would (the
    JSON object in Python mode), and an error raised on the way goes to the application's
    exception handlers. It declines, passing the request on with its body intact, when the
    body is not a JSON object the model accepts (FastAPI tells what is wrong), and when
    FastAPI's request telemetry is on (its spans name the route the router selects)."""

    def __init__(self, app: ASGIApp, router: APIRouter) -> None:
        self.app = app
        self.router = router
        self.methods: dict[str, tuple[APIRoute, _Method]] = {}
        earlier: list[Any] = []  # the routes before: one of them may take the path first
        for context in iter_route_contexts(router.routes):
            route = context.original_route
            method = getattr(getattr(route, "endpoint", None), "rpc_method", None)
            path = context.path
            if (
                isinstance(route, APIRoute)
                and isinstance(method, _Method)
                and path == route.path  # included as declared: no prefix added
                and "POST" in (route.methods or ())
                and not route.param_convertors
                and path not in self.methods
                and not any(_matches(other, path) for other in earlier)
            ):
                self.methods[path] = (route, method)
            earlier.append(context)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = (
            self.methods.get(get_route_path(scope))
            if scope["type"] == "http"
            and scope["method"] == "POST"
            and "fastapi.telemetry" not in scope
            else None
        )
        if found is None:
            await self.app(scope, receive, send)
            return
        route, method = found
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        replay = _replaying(messages, receive)
        payload: BaseModel | None = None
        if message["type"] == "http.request":
            body = b"".join(m.get("body", b"") for m in messages)
            try:
                data = orjson.loads(body) if body else None
                if isinstance(data, dict):
                    payload = method.model.model_validate(data)
            except (orjson.JSONDecodeError, ValidationError):
                payload = None
        if payload is None:
            await self.app(scope, replay, send)
            return
        scope["router"] = self.router
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        request = Request(scope, replay, send)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await method.respond(payload, await current_call(request))
            await response(scope, receive, send)

        await wrap_app_handling_exceptions(app, request)(scope, replay, send)


def _matches(route: Any, path: str) -> bool:
    """Whether ``route`` would take a POST to ``path``."""
    scope = {"type": "http", "method": "POST", "path": path, "root_path": ""}
    try:
        match, _ = route.matches(scope)
    except Exception:  # a route that cannot tell: as if it matched
        return True
    return bool(match == Match.FULL)


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that gives ``messages`` again first."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def install_dispatch(app: FastAPI) -> RpcDispatch:
    """Put :class:`RpcDispatch` in front of ``app``'s router (its routes all included)."""
    router = app.router
    dispatch = RpcDispatch(router.middleware_stack, router)
    router.middleware_stack = dispatch
    return dispatch
