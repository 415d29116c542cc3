"""Test databases: every test runs on SQLite and on PostgreSQL.

Each backend gets two databases, migrated once per session with the real migrations:
``demo`` holds the demo institution (read-only tests share it) and ``scratch`` is emptied after
every test that uses it. PostgreSQL is 127.0.0.1:5432 (``BILLETTERIE_TEST_POSTGRES_URL``);
when it is unreachable its tests are skipped, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.app import build_app
from billetterie.catalog.setupfile import parse_document
from billetterie.config import Settings
from billetterie.identity.services import set_operator
from billetterie.migrations import upgrade
from billetterie.setup import import_institution
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import create_engine, metadata, transaction

DEMO_FILE = Path(__file__).parents[1] / "src" / "billetterie" / "demo" / "demo.yaml"
POSTGRES_ADMIN_URL = os.environ.get(
    "BILLETTERIE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SECRET = "test-secret-" + secrets.token_hex(4)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _postgres_databases(names: list[str]) -> list[str] | None:
    """Create fresh databases; None when the server is unreachable."""
    import asyncio

    async def create() -> list[str] | None:
        import asyncpg

        try:
            conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return None
        try:
            urls = []
            for name in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                await conn.execute(f'CREATE DATABASE "{name}"')
                base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
                urls.append(f"postgresql+asyncpg://{base.split('://', 1)[1]}/{name}")
            return urls
        finally:
            await conn.close()

    return asyncio.run(create())


def _drop_postgres(names: list[str]) -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            for name in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@dataclass
class Backend:
    name: str
    demo_url: str
    scratch_url: str
    fuzz_url: str  # the schemathesis server's own database: fuzzed writes land there only


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("sqlite")
        result = Backend(
            "sqlite",
            f"sqlite+aiosqlite:///{folder / 'demo.db'}",
            f"sqlite+aiosqlite:///{folder / 'scratch.db'}",
            f"sqlite+aiosqlite:///{folder / 'fuzz.db'}",
        )
        for url in (result.demo_url, result.scratch_url, result.fuzz_url):
            upgrade(url)
        yield result
        return
    tag = uuid.uuid4().hex[:8]
    names = [f"billetterie_test_{kind}_{tag}" for kind in ("demo", "scratch", "fuzz")]
    urls = _postgres_databases(names)
    if urls is None:
        message = f"PostgreSQL is unreachable at {POSTGRES_ADMIN_URL}"
        if in_ci():
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    for url in urls:
        upgrade(url)
    yield Backend("postgresql", urls[0], urls[1], urls[2])
    _drop_postgres(names)


@pytest.fixture(scope="session")
def clock() -> FixedClock:
    return FixedClock(NOW)


def settings_for(url: str, tmp: Path, **overrides: Any) -> Settings:
    return Settings(
        var_dir=tmp,
        database_url=url,
        jwt_secret="test-jwt-key-" + "x" * 32,
        catalog_max_age_seconds=60,
        rate_limits=False,  # tests/test_rate_limits.py turns them on with small allowances
        **overrides,
    )


async def set_secrets(
    engine: AsyncEngine,
    institution: str,
    operators: list[tuple[str, str, str]],
    secret: str = SECRET,
) -> None:
    """Give operators ``(login, point of sale code, partner)`` a known secret."""
    from billetterie.catalog.services import find_point_of_sale, institution_id_by_code

    async with transaction(engine) as conn:
        institution_id = await institution_id_by_code(conn, institution)
        for login, pos, partner in operators:
            await set_operator(
                conn,
                institution_id=institution_id,
                point_of_sale_id=await find_point_of_sale(conn, institution, pos),
                login=login,
                partner=partner,
                secret=secret,
                now=NOW,
                actor="test",
            )


async def set_demo_secrets(engine: AsyncEngine, secret: str = SECRET) -> None:
    await set_secrets(
        engine,
        "DEMO",
        [
            ("DEMO_B2C", "WEBSHOP", "demo-website"),
            ("DEMO_RESELLER1", "RES1POS", "reseller1"),
            ("DEMO_BOX", "BOXPOS", "box-office"),
        ],
        secret,
    )


def demo_document_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="session")
async def demo_engine(backend: Backend) -> AsyncIterator[AsyncEngine]:
    """The demo institution and a second, small one (ACME, for tenancy tests), imported once
    per backend; tests must not write to it."""
    from tests.factories import setup_document

    engine = create_engine(backend.demo_url)
    await import_institution(engine, parse_document(demo_document_data()), now=NOW, actor="test")
    await import_institution(engine, parse_document(setup_document("ACME")), now=NOW, actor="test")
    await set_demo_secrets(engine)
    await set_secrets(
        engine, "ACME", [("ACME_WEB", "ACMEWEB", "web"), ("ACME_RES", "ACMERES", "res")]
    )
    yield engine
    await engine.dispose()


@pytest.fixture
async def scratch_engine(backend: Backend) -> AsyncIterator[AsyncEngine]:
    """An empty migrated database, emptied again after the test."""
    engine = create_engine(backend.scratch_url)
    yield engine
    async with transaction(engine) as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            await conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(metadata.sorted_tables):
                await conn.execute(table.delete())
    await engine.dispose()


class Api:
    """An HTTP client on the app, with helpers for the S-360 surface."""

    def __init__(self, client: httpx.AsyncClient, app: Any = None) -> None:
        self.client = client
        self.app = app  # the ASGI app when the test serves it (its state: gateway, handlers)

    async def token(
        self, operator: str = "DEMO_B2C", partner: str = "demo-website", secret: str = SECRET
    ) -> str:
        response = await self.client.post(
            "/tnai/backend-apis/v1/auth",
            json={"operator": operator, "partner": partner, "secret": secret},
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    async def rpc(
        self,
        service: str,
        method: str,
        body: Any = None,
        *,
        token: str | None,
        module: str = "tnseb",
        version: str = "v1_33",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        return await self.client.post(
            f"/{module}/backend-apis/{service}/{version}/{method}",
            json={} if body is None else body,
            headers=all_headers,
        )


@contextlib.asynccontextmanager
async def serve(url: str, tmp: Path, clock: FixedClock, **settings: Any) -> AsyncIterator[Api]:
    app = build_app(settings_for(url, tmp, **settings), clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, app)


@pytest.fixture(scope="session")
async def demo_api(
    demo_engine: AsyncEngine,
    backend: Backend,
    clock: FixedClock,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Api]:
    async with serve(backend.demo_url, tmp_path_factory.mktemp("var"), clock) as api:
        yield api


@pytest.fixture(scope="session")
async def tokens(demo_api: Api) -> dict[str, str]:
    return {
        "b2c": await demo_api.token("DEMO_B2C", "demo-website"),
        "reseller": await demo_api.token("DEMO_RESELLER1", "reseller1"),
        "box": await demo_api.token("DEMO_BOX", "box-office"),
        "other": await demo_api.token("ACME_WEB", "web"),
    }


@pytest.fixture
async def scratch_api(
    scratch_engine: AsyncEngine, backend: Backend, clock: FixedClock, tmp_path: Path
) -> AsyncIterator[Api]:
    async with serve(backend.scratch_url, tmp_path, clock) as api:
        yield api
