"""Call limits on the partner surface: 509 with Retry-After beyond the allowance, per institution,
per endpoint, per operator when it has its own, per client address on the token endpoint.

Each test builds its own app (fresh in-memory counters) with an allowance of 3 calls, on the
shared demo database (read-only) or on the scratch one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.app import build_app
from billetterie.config import Settings
from billetterie.shared.clock import FixedClock
from billetterie.shared.ratelimit import Allowance, MemoryStorage, RateLimiter
from tests.conftest import NOW, SECRET, Api, Backend, in_ci, set_secrets, settings_for
from tests.factories import import_document, setup_document

ALIVE = ("catalogService", "isCatalogServiceAlive")
VAT_CODES = ("setupService", "listVatCodes")
CODE = "error.request.rate_limited"
REDIS_URL = os.environ.get("BILLETTERIE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@contextlib.asynccontextmanager
async def limited(
    url: str, tmp: Path, *, client: tuple[str, int] = ("127.0.0.1", 123), **settings: Any
) -> AsyncIterator[Api]:
    """An app on ``url`` allowing 3 calls per minute unless ``settings`` say otherwise."""
    options = {"rate_limits": True, "rate_limit_per_minute": 3, **settings}
    app = build_app(settings_for(url, tmp).model_copy(update=options), clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Api(http)


@pytest.fixture
async def api(demo_engine: AsyncEngine, backend: Backend, tmp_path: Path) -> AsyncIterator[Api]:
    async with limited(backend.demo_url, tmp_path) as api:
        yield api


def allowance(response: httpx.Response) -> tuple[str | None, str | None]:
    return (
        response.headers.get("x-ratelimit-limit"),
        response.headers.get("x-ratelimit-remaining"),
    )


def assert_refused(response: httpx.Response, request_id: str | None = None) -> None:
    assert response.status_code == 509, response.text
    assert response.headers["content-type"] == "application/json"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    body = response.json()
    assert body["statusCode"] == CODE
    assert body["statusDetail"].startswith("more than 3 calls in 60 s to this endpoint")
    assert body.get("requestId") == request_id
    assert sorted(body) == sorted(
        ["statusCode", "statusDetail"] + (["requestId"] if request_id else [])
    )


async def test_fourth_call_answers_509_with_retry_after(api: Api, tokens: dict[str, str]) -> None:
    for remaining in ("2", "1", "0"):
        response = await api.rpc(*ALIVE, {"requestId": "r"}, token=tokens["b2c"])
        assert response.status_code == 200
        assert response.json() == {"statusCode": "success", "statusDetail": "OK", "requestId": "r"}
        assert allowance(response) == ("3", remaining)

    refused = await api.rpc(*ALIVE, {"requestId": "call-4"}, token=tokens["b2c"])
    assert_refused(refused, "call-4")
    assert allowance(refused) == ("3", "0")
    assert_refused(await api.rpc(*ALIVE, token=tokens["b2c"]))


async def test_limits_are_per_endpoint_and_per_institution(
    api: Api, tokens: dict[str, str]
) -> None:
    for _ in range(3):
        assert (await api.rpc(*ALIVE, token=tokens["b2c"])).status_code == 200
    assert_refused(await api.rpc(*ALIVE, token=tokens["b2c"]))

    # Another endpoint has its own allowance...
    response = await api.rpc(*VAT_CODES, token=tokens["b2c"])
    assert response.status_code == 200
    assert allowance(response) == ("3", "2")
    # ...another version of the same method would too: the endpoint is the route's path.
    # Another institution is not affected.
    response = await api.rpc(*ALIVE, token=tokens["other"])
    assert response.status_code == 200
    assert allowance(response) == ("3", "2")
    # An operator without an allowance of its own shares its institution's.
    assert_refused(await api.rpc(*ALIVE, token=tokens["reseller"]))


async def test_box_office_operator_is_never_limited(api: Api, tokens: dict[str, str]) -> None:
    for _ in range(10):
        response = await api.rpc(*ALIVE, token=tokens["box"])
        assert response.status_code == 200
        assert allowance(response) == (None, None)
    # ...and its calls do not use the institution's allowance.
    assert (await api.rpc(*ALIVE, token=tokens["b2c"])).status_code == 200


async def test_unauthenticated_calls_are_not_counted(api: Api, tokens: dict[str, str]) -> None:
    for _ in range(5):
        response = await api.rpc(*ALIVE, token="not-a-token")
        assert response.status_code == 401
        assert allowance(response) == (None, None)
    for remaining in ("2", "1", "0"):
        response = await api.rpc(*ALIVE, token=tokens["b2c"])
        assert allowance(response) == ("3", remaining)


async def test_get_mirror_answers_problem_json(api: Api, tokens: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {tokens['b2c']}"}
    # /api/v1/catalog/products/{product_id} is one endpoint whatever the product.
    for product_id in (1, 2, 3):
        response = await api.client.get(f"/api/v1/catalog/products/{product_id}", headers=headers)
        assert response.status_code in {200, 404}
        assert response.headers["x-ratelimit-limit"] == "3"
    response = await api.client.get("/api/v1/catalog/products/4", headers=headers)
    assert response.status_code == 509
    assert response.headers["content-type"] == "application/problem+json"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    body = response.json()
    assert body["code"] == body["title"] == CODE
    assert body["status"] == 509
    assert body["type"] == f"https://billetterie.dev/errors/{CODE}"
    assert body["detail"].startswith("more than 3 calls in 60 s")
    # The catalog mirror itself is another endpoint.
    assert (await api.client.get("/api/v1/catalog", headers=headers)).status_code == 200


async def test_operator_with_its_own_allowance_gets_it(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    document = setup_document("LIMIT")
    document["operators"][1]["callsPerMinute"] = 2
    await import_document(scratch_engine, document)
    await set_secrets(
        scratch_engine,
        "LIMIT",
        [("LIMIT_WEB", "LIMITWEB", "web"), ("LIMIT_RES", "LIMITRES", "res")],
    )
    async with limited(backend.scratch_url, tmp_path) as api:
        web = await api.token("LIMIT_WEB", "web")
        reseller = await api.token("LIMIT_RES", "res")
        for remaining in ("1", "0"):
            response = await api.rpc(*ALIVE, token=reseller)
            assert allowance(response) == ("2", remaining)
        refused = await api.rpc(*ALIVE, token=reseller)
        assert refused.status_code == 509
        assert refused.json()["statusDetail"].startswith("more than 2 calls in 60 s")
        # The reseller's own bucket replaces the institution's: the web operator keeps all 3.
        for remaining in ("2", "1", "0"):
            response = await api.rpc(*ALIVE, token=web)
            assert allowance(response) == ("3", remaining)
        assert (await api.rpc(*ALIVE, token=web)).status_code == 509


async def test_calls_are_allowed_again_after_the_window(
    demo_engine: AsyncEngine, backend: Backend, tmp_path: Path, tokens: dict[str, str]
) -> None:
    async with limited(backend.demo_url, tmp_path, rate_limit_window_seconds=1) as api:
        for _ in range(3):
            assert (await api.rpc(*ALIVE, token=tokens["b2c"])).status_code == 200
        refused = await api.rpc(*ALIVE, token=tokens["b2c"])
        assert refused.status_code == 509
        assert refused.headers["retry-after"] == "1"
        await asyncio.sleep(int(refused.headers["retry-after"]))
        response = await api.rpc(*ALIVE, token=tokens["b2c"])
        assert response.status_code == 200
        assert allowance(response) == ("3", "2")


async def test_token_requests_are_limited_per_client_address(
    demo_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    good = {"operator": "DEMO_B2C", "partner": "demo-website", "secret": SECRET}
    bad = {**good, "secret": "wrong"}
    async with limited(backend.demo_url, tmp_path, rate_limit_auth_per_minute=2) as api:
        response = await api.client.post("/tnai/backend-apis/v1/auth", json=good)
        assert response.status_code == 200
        assert allowance(response) == ("2", "1")
        assert (await api.client.post("/tnai/backend-apis/v1/auth", json=bad)).status_code == 401
        refused = await api.client.post("/tnai/backend-apis/v1/auth", json=good)
        assert refused.status_code == 509
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.json()["statusCode"] == CODE
        assert refused.json()["statusDetail"].startswith("more than 2 calls in 60 s")
    async with limited(
        backend.demo_url, tmp_path, client=("192.0.2.7", 4000), rate_limit_auth_per_minute=2
    ) as api:
        assert (await api.client.post("/tnai/backend-apis/v1/auth", json=good)).status_code == 200


async def test_limits_off(demo_engine: AsyncEngine, backend: Backend, tmp_path: Path) -> None:
    good = {"operator": "DEMO_B2C", "partner": "demo-website", "secret": SECRET}
    async with limited(
        backend.demo_url, tmp_path, rate_limits=False, rate_limit_auth_per_minute=1
    ) as api:
        for _ in range(3):
            response = await api.client.post("/tnai/backend-apis/v1/auth", json=good)
            assert response.status_code == 200
        token = response.json()["token"]
        for _ in range(10):
            response = await api.rpc(*ALIVE, token=token)
            assert response.status_code == 200
            assert allowance(response) == (None, None)


@pytest.mark.parametrize(("value", "enabled"), [("off", False), ("on", True), ("false", False)])
def test_rate_limits_setting_reads_on_and_off(
    monkeypatch: pytest.MonkeyPatch, value: str, enabled: bool
) -> None:
    monkeypatch.setenv("BILLETTERIE_RATE_LIMITS", value)
    assert Settings().rate_limits is enabled


def test_rate_limits_are_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLETTERIE_RATE_LIMITS", raising=False)
    monkeypatch.delenv("BILLETTERIE_REDIS_URL", raising=False)
    settings = Settings()
    assert settings.rate_limits is True
    assert settings.rate_limit_per_minute == 60
    assert settings.rate_limit_window_seconds == 60
    assert settings.redis_url == ""


async def redis_reachable() -> bool:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except (OSError, redis.RedisError):
        return False
    finally:
        await client.aclose()


async def test_redis_counters_are_shared_by_instances(
    demo_engine: AsyncEngine, backend: Backend, tmp_path: Path, tokens: dict[str, str]
) -> None:
    if not await redis_reachable():
        message = f"Redis is unreachable at {REDIS_URL}"
        if in_ci():
            pytest.fail(message + " (CI=true: Redis tests must run)")
        pytest.skip(message)
    shared = {"redis_url": REDIS_URL, "rate_limit_key_prefix": f"test-{uuid.uuid4().hex}"}
    async with (
        limited(backend.demo_url, tmp_path / "a", **shared) as first,
        limited(backend.demo_url, tmp_path / "b", **shared) as second,
    ):
        assert allowance(await first.rpc(*ALIVE, token=tokens["b2c"])) == ("3", "2")
        assert allowance(await second.rpc(*ALIVE, token=tokens["b2c"])) == ("3", "1")
        assert allowance(await first.rpc(*ALIVE, token=tokens["b2c"])) == ("3", "0")
        assert_refused(await second.rpc(*ALIVE, {"requestId": "r"}, token=tokens["b2c"]), "r")
        assert_refused(await first.rpc(*ALIVE, token=tokens["b2c"]))
        assert (await second.rpc(*ALIVE, token=tokens["other"])).status_code == 200


async def test_unreachable_redis_lets_calls_through(
    demo_engine: AsyncEngine,
    backend: Backend,
    tmp_path: Path,
    tokens: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="billetterie.ratelimit")
    async with limited(backend.demo_url, tmp_path, redis_url="redis://127.0.0.1:1/0") as api:
        for _ in range(5):
            response = await api.rpc(*ALIVE, token=tokens["b2c"])
            assert response.status_code == 200
            assert allowance(response) == (None, None)
    warnings = [r for r in caplog.records if r.name == "billetterie.ratelimit"]
    assert len(warnings) == 1
    assert "calls are let through unlimited" in warnings[0].getMessage()


def test_memory_storage_hook_still_exists() -> None:
    """MemoryStorage throttles the sweep ``limits`` runs after every call by overriding a
    private hook; a ``limits`` release renaming it must fail here, not slow every call."""
    from limits.aio.storage import MemoryStorage as LimitsMemoryStorage

    assert callable(getattr(LimitsMemoryStorage, "_MemoryStorage__schedule_expiry", None))


async def test_memory_storage_sweeps_at_most_once_per_interval() -> None:
    storage = MemoryStorage()
    limiter = RateLimiter(storage, window_seconds=60, default_limit=3, auth_limit=0)
    try:
        await limiter.hit(3, "first")
        sweeper = storage.timer
        assert sweeper is not None
        for key in range(100):
            await asyncio.sleep(0)  # the sweep runs and ends, as between a server's requests
            assert await limiter.hit(3, key) == Allowance(True, 3, 2)
        assert sweeper.done()
        assert storage.timer is sweeper  # no other sweep within SWEEP_SECONDS
    finally:
        await limiter.close()
