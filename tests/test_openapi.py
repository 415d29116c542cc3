"""The OpenAPI document is the contract: schemathesis fuzzes every operation over real HTTP
(a uvicorn server on the test database) and checks responses against the schema; no 5xx."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection

from billetterie.app import build_app
from billetterie.config import Settings
from billetterie.shared.db import create_engine
from tests.conftest import SECRET, Backend, set_secrets, settings_for
from tests.factories import import_document
from tests.sales_kit import sales_document


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def live_url(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The box office served by uvicorn in a thread, on a database of its own holding the
    sales tests' ACME institution: what the fuzzer manages to buy or cancel stays there."""

    async def prepare() -> None:
        engine = create_engine(backend.fuzz_url)
        try:
            await import_document(engine, sales_document("ACME"))
            await set_secrets(engine, "ACME", [("ACME_RES", "ACMERES", "res")])
        finally:
            await engine.dispose()

    asyncio.run(prepare())
    port = free_port()
    app = build_app(settings_for(backend.fuzz_url, Path(tmp_path_factory.mktemp("live"))))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_token(live_url: str) -> str:
    response = httpx.post(
        f"{live_url}/tnai/backend-apis/v1/auth",
        json={"operator": "ACME_RES", "partner": "res", "secret": SECRET},
    )
    token: str = response.json()["token"]
    return token


# The document the server publishes at /openapi.json; building it needs no database.
schema = schemathesis.openapi.from_dict(build_app(Settings()).openapi())


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_contract(case: schemathesis.Case, live_url: str, live_token: str) -> None:
    # Requests are lenient where a value converts without loss ("12" for 12), as FastAPI's
    # lax validation does, so schemathesis' negative-data check does not apply.
    case.call_and_validate(
        base_url=live_url,
        headers={"Authorization": f"Bearer {live_token}"},
        excluded_checks=[negative_data_rejection],
    )
