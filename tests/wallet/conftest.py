"""The wallet under test: its own databases (SQLite and PostgreSQL, its own migrations) and a
real uvicorn server on 127.0.0.1 in a thread, sharing a :class:`FixedClock` with the test.

Tests talk to the server over real HTTP (httpx) and, for what no endpoint exposes (the mail
outbox, the sweeper), call the wallet's services on their own engine. Every table is emptied
after each test.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie_wallet import db
from billetterie_wallet.app import build_app
from billetterie_wallet.clock import FixedClock
from billetterie_wallet.config import WalletSettings
from billetterie_wallet.migrations import upgrade
from billetterie_wallet.schemas import BatchResult, FeedbackPage
from billetterie_wallet.services.organizers import create_organizer, parse_roles
from tests.conftest import NOW, POSTGRES_ADMIN_URL, in_ci
from tests.wallet import factories


@dataclass
class WalletBackend:
    name: str
    url: str


def _postgres(name: str, *, drop_only: bool = False) -> str | None:
    import asyncpg

    async def run() -> str | None:
        try:
            conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return None
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if drop_only:
                return None
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].split("://", 1)[1]
        return f"postgresql+asyncpg://{base}/{name}"

    return asyncio.run(run())


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def wallet_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WalletBackend]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('wallet') / 'wallet.db'}"
        upgrade(url)
        yield WalletBackend("sqlite", url)
        return
    name = f"wallet_test_{uuid.uuid4().hex[:8]}"
    pg_url = _postgres(name)
    if pg_url is None:
        message = f"PostgreSQL is unreachable at {POSTGRES_ADMIN_URL}"
        if in_ci():
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    upgrade(pg_url)
    yield WalletBackend("postgresql", pg_url)
    _postgres(name, drop_only=True)


@pytest.fixture(scope="session")
def wallet_clock() -> FixedClock:
    return FixedClock(NOW)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ThreadServer:
    """uvicorn serving an app on 127.0.0.1 from a thread of its own (its own event loop)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the wallet server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


SECRET_KEY = "wallet-test-secret-" + "k" * 24


def wallet_settings(url: str, var: Path, **overrides: Any) -> WalletSettings:
    values: dict[str, Any] = {
        "var_dir": var,
        "database_url": url,
        "secret_key": SECRET_KEY,
        "background_tasks": False,
        "dev_mail": True,
        "deletion_timeout_seconds": 3600,
        "transfer_timeout_seconds": 7200,
        "default_max_transfers": 2,
        **overrides,
    }
    return WalletSettings(**values)


@pytest.fixture(scope="session")
def wallet_server(
    wallet_backend: WalletBackend,
    wallet_clock: FixedClock,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    settings = wallet_settings(wallet_backend.url, tmp_path_factory.mktemp("wallet-var"))
    with ThreadServer(build_app(settings, clock=wallet_clock)) as server:
        yield server.url


@pytest.fixture
async def wallet_engine(
    wallet_backend: WalletBackend, wallet_clock: FixedClock
) -> AsyncIterator[AsyncEngine]:
    """The test's own engine on the server's database; every table emptied afterwards and the
    clock put back."""
    wallet_clock.set(NOW)
    engine = db.create_engine(wallet_backend.url)
    yield engine
    async with db.transaction(engine) as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
            await conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(db.metadata.sorted_tables):
                await conn.execute(table.delete())
    await engine.dispose()
    wallet_clock.set(NOW)


@dataclass
class OrganizerClient:
    """An httpx client on the running server, authenticated as one organizer."""

    code: str
    key: str
    http: httpx.AsyncClient

    async def inject(self, *tickets: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(
            "/api/v1/organizer/tickets", json={"tickets": list(tickets)}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        BatchResult.model_validate(body)  # the answer is what the OpenAPI document says
        return body

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.http.post(path, json=body)

    async def feedback(self, key: str | None = None, limit: int = 500) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if key is not None:
            params["key"] = key
        response = await self.http.get("/api/v1/organizer/feedback", params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        FeedbackPage.model_validate(body)
        return body


async def new_organizer(
    engine: AsyncEngine, code: str, roles: str = "", *, url: str
) -> OrganizerClient:
    created = await create_organizer(
        engine, code=code, name=code, roles=parse_roles(roles), now=NOW, actor="test"
    )
    http = httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {created.key}"}, timeout=30
    )
    return OrganizerClient(code, created.key, http)


@pytest.fixture
async def organizer(
    wallet_engine: AsyncEngine, wallet_server: str
) -> AsyncIterator[OrganizerClient]:
    client = await new_organizer(wallet_engine, "DEMO", url=wallet_server)
    yield client
    await client.http.aclose()


@pytest.fixture
async def other_organizer(
    wallet_engine: AsyncEngine, wallet_server: str
) -> AsyncIterator[OrganizerClient]:
    client = await new_organizer(wallet_engine, "ACME", url=wallet_server)
    yield client
    await client.http.aclose()


class Spectator:
    """A browser-like client of the spectator app: cookies kept, forms posted with the CSRF
    token, signed in through a one-time link read from the mail outbox."""

    def __init__(self, url: str, engine: AsyncEngine, email: str, device: str | None = None):
        headers = {"X-Device-Id": device} if device else {}
        self.http = httpx.AsyncClient(base_url=url, headers=headers, timeout=30)
        self.engine = engine
        self.email = email

    @property
    def csrf(self) -> str:
        return str(self.http.cookies.get("bw_csrf"))

    async def form(self, path: str, **fields: str) -> httpx.Response:
        if "bw_csrf" not in self.http.cookies:
            await self.http.get("/app/login")
        return await self.http.post(path, data={"csrf_token": self.csrf, **fields})

    async def sign_in(self) -> Spectator:
        response = await self.form("/app/login/link", email=self.email)
        assert response.status_code == 303, response.text
        token = await factories.last_link(self.engine, self.email)
        response = await self.form(f"/app/login/link/{token}")
        assert response.status_code == 303
        assert response.headers["location"] == "/app/tickets"
        return self

    async def wallet(self) -> dict[str, Any]:
        response = await self.http.get("/app/api/wallet")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def ticket_pk(self, ticket_id: str) -> int:
        for event in (await self.wallet())["events"]:
            for ticket in event["tickets"]:
                if ticket["ticketId"] == ticket_id:
                    return int(ticket["id"])
        raise AssertionError(f"{ticket_id} not in {self.email}'s wallet")

    async def close(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def spectators(wallet_engine: AsyncEngine, wallet_server: str) -> AsyncIterator[Any]:
    opened: list[Spectator] = []

    async def make(email: str, device: str | None = None) -> Spectator:
        spectator = Spectator(wallet_server, wallet_engine, email, device)
        opened.append(spectator)
        return await spectator.sign_in()

    yield make
    for spectator in opened:
        await spectator.close()
