"""A database that cannot take a call (pool exhausted, server refusing clients) answers 503 with
Retry-After and a stable code — a retryable refusal, not a 500."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.requests import Request

from billetterie.compat.envelope import unexpected_error


def request(path: str) -> Request:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    return Request(scope, receive)


class TooManyConnectionsError(Exception):
    pass


async def test_an_exhausted_pool_or_a_full_server_is_a_503() -> None:
    rpc = "/tnseb/backend-apis/externalOrderService/v1_33/closeOrder"
    full = DBAPIError("SELECT 1", None, TooManyConnectionsError("sorry, too many clients already"))
    for error in (PoolTimeout("QueuePool limit reached"), full, ConnectionRefusedError()):
        answer = await unexpected_error(request(rpc), error)
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "2"
        assert orjson.loads(answer.body)["statusCode"] == "error.service.unavailable"
    mirror = await unexpected_error(request("/api/v1/catalog"), full)
    assert mirror.status_code == 503
    assert orjson.loads(mirror.body)["code"] == "error.service.unavailable"
    bug = await unexpected_error(request(rpc), ZeroDivisionError())
    assert bug.status_code == 500


async def test_a_nul_byte_in_a_login_is_a_clear_400(demo_api: Any) -> None:
    response = await demo_api.client.post(
        "/tnai/backend-apis/v1/auth",
        json={"operator": "DEMO\x00B2C", "partner": "demo-website", "secret": "x"},
    )
    assert response.status_code == 400
    assert response.json()["statusCode"] == "error.request.invalid"


async def test_a_nul_byte_no_schema_refused_is_a_clear_refusal() -> None:
    """Text the database refuses (PostgreSQL keeps no NUL character) answers 400, not 500."""
    from sqlalchemy.exc import DBAPIError

    class CharacterNotInRepertoireError(Exception):
        sqlstate = "22021"

    error = DBAPIError("SELECT", {}, CharacterNotInRepertoireError("invalid byte sequence"))
    for path in ("/tnco/backend-apis/contactInformationPublicService/v2_21/x", "/api/v1/catalog"):
        answer = await unexpected_error(request(path), error)
        assert answer.status_code < 500
        body = orjson.loads(answer.body)
        assert body.get("statusCode", body.get("code")) == "error.request.invalid"
