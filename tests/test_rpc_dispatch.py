"""The RPC methods' own dispatch (``compat.rpc.RpcDispatch``): it answers well-formed calls
without FastAPI's routing, exactly as the routes answer them, and leaves everything else to
the router."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

from billetterie.compat import (
    availability_api,
    catalog_api,
    contacts_api,
    printing_api,
    sales_api,
)
from billetterie.compat.rpc import RpcDispatch
from tests.conftest import Api

TNSEB = "/tnseb/backend-apis"
CATALOG = f"{TNSEB}/catalogService/v1_33"
ORDERS = f"{TNSEB}/externalOrderService/v1_33"
FACADE = f"{TNSEB}/externalOrderFacade/v1_33"
CONTACTS = "/tnco/backend-apis/contactInformationPublicService/v2_21"

# (path, body, token name or None): well-formed calls, refusals of every kind, and calls the
# dispatch must leave to the router
CASES: list[tuple[str, bytes | None, str | None]] = [
    (f"{CATALOG}/getPOSConfig", b"{}", "b2c"),
    (f"{CATALOG}/getPOSConfig", b'{"requestId": "r-1"}', "b2c"),
    (f"{CATALOG}/getPOSConfig", None, "b2c"),  # no body: the method's parameters are optional
    (f"{CATALOG}/getPOSConfig", b"null", "b2c"),
    (f"{CATALOG}/getCatalogDetailed", b'{"requestId": "r-2"}', "reseller"),
    (f"{CATALOG}/getCatalogDetailed", b"{not json", "b2c"),
    (f"{CATALOG}/getCatalogDetailed", b"[1, 2]", "b2c"),
    (f"{CATALOG}/getCatalogDetailed", b'{"scope": "EVERYTHING"}', "b2c"),
    (f"{CATALOG}/getCatalogDetailed", b'{"seasonCode": 12}', "b2c"),
    (f"{CATALOG}/getCatalogDetailed", b'{"requestId": {"a": 1}}', "b2c"),
    (f"{CATALOG}/getCatalogDetailed", b"\xff\xfe", "b2c"),
    (f"{CATALOG}/getCatalogDetailed", b"{}", None),  # no token
    (f"{CATALOG}/getCatalogDetailed", b"{}", "forged"),
    (f"{CATALOG}/getNothing", b"{}", "b2c"),
    (f"{ORDERS}/getOrderDetails", b'{"orderId": 987654321}', "reseller"),  # a domain error
    (f"{ORDERS}/getOrderDetails", b'{"orderId": 987654321, "requestId": "r-9"}', "reseller"),
    (f"{ORDERS}/getOrderDetails", b"{}", "reseller"),  # a required field missing
    (f"{ORDERS}/getOrderDetails", b'{"orderId": "12"}', "reseller"),  # coerced as FastAPI does
    (f"{FACADE}/createOrUpdateOrder", b'{"orderId": -5}', "reseller"),
    (f"{CONTACTS}/getContactData", b'{"contactNumber": "nobody"}', "b2c"),
]


def dispatch_of(api: Api) -> RpcDispatch:
    dispatch = api.app.router.middleware_stack
    assert isinstance(dispatch, RpcDispatch)
    return dispatch


@contextmanager
def without_dispatch(api: Api) -> Iterator[None]:
    """The app as FastAPI alone routes it."""
    dispatch = dispatch_of(api)
    api.app.router.middleware_stack = dispatch.app
    try:
        yield
    finally:
        api.app.router.middleware_stack = dispatch


async def answer(
    api: Api, tokens: dict[str, str], path: str, body: bytes | None, token: str | None
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {tokens.get(token, 'not.a.token')}"
    response = await api.client.post(path, content=body, headers=headers)
    kept = {
        name: value
        for name, value in response.headers.items()
        if name in ("content-type", "retry-after") or name.startswith("x-ratelimit")
    }
    return response.status_code, orjson.loads(response.content), kept


@pytest.mark.parametrize(("path", "body", "token"), CASES)
async def test_the_dispatch_answers_as_the_routes_do(
    demo_api: Api, tokens: dict[str, str], path: str, body: bytes | None, token: str | None
) -> None:
    dispatched = await answer(demo_api, tokens, path, body, token)
    with without_dispatch(demo_api):
        routed = await answer(demo_api, tokens, path, body, token)
    assert dispatched == routed
    assert dispatched[0] < 500


async def test_well_formed_calls_do_not_reach_the_router(
    demo_api: Api, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatch = dispatch_of(demo_api)
    reached: list[str] = []
    router = dispatch.app

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await router(scope, receive, send)

    monkeypatch.setattr(dispatch, "app", recording)
    status, body, _ = await answer(demo_api, tokens, f"{CATALOG}/getPOSConfig", b"{}", "b2c")
    assert (status, body["statusCode"]) == (200, "success")
    status, body, _ = await answer(
        demo_api, tokens, f"{ORDERS}/getOrderDetails", b'{"orderId": 987654321}', "reseller"
    )
    assert status < 500 and body["statusCode"] != "success"  # a domain error, answered here
    assert reached == []
    # refused bodies, other methods and other paths go to the router
    await answer(demo_api, tokens, f"{CATALOG}/getCatalogDetailed", b"{not json", "b2c")
    await answer(demo_api, tokens, f"{CATALOG}/getPOSConfig", None, "b2c")
    await demo_api.client.get("/healthz")
    assert reached == [f"{CATALOG}/getCatalogDetailed", f"{CATALOG}/getPOSConfig", "/healthz"]


def test_every_rpc_method_is_in_the_table(demo_api: Api) -> None:
    """Each method of each version of each service is dispatched, none shadowed by a route."""
    services = [
        availability_api.availability_service,
        catalog_api.catalog_service,
        catalog_api.setup_service,
        contacts_api.contact_service,
        printing_api.access_control,
        sales_api.facade,
        sales_api.order_service,
        sales_api.history_service,
    ]
    expected = {
        f"/{service.module}/backend-apis/{service.service}/{version}/{name}"
        for service in services
        for version in service.versions
        for name in service._methods
    }
    assert len(expected) > 30
    assert set(dispatch_of(demo_api).methods) == expected
    assert f"{FACADE}/createOrUpdateOrder" in expected
    assert f"{ORDERS}/closeOrder" in expected
