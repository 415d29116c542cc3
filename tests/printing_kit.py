"""Both services for the printing tests, each a real uvicorn server on 127.0.0.1 in a thread of
its own: the wallet (its own database, same backend as the box office's, its own migrations)
and the box office (the sales kit's ACME institution with a WALLET printing interface). The
test calls the printing functions as ``billetterie printing run`` does, over real HTTP."""

from __future__ import annotations

import contextlib
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

from billetterie.app import build_app
from billetterie.catalog import db as catalog
from billetterie.printing import db as printing_db
from billetterie.printing.models import Function, Interface
from billetterie.printing.services import interface_by_code
from billetterie.printing.tasks import RunResult, run_function
from billetterie.sales import db as sales_db
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import read
from billetterie_wallet import db as wallet_db
from billetterie_wallet.app import build_app as build_wallet
from billetterie_wallet.clock import FixedClock as WalletClock
from billetterie_wallet.migrations import upgrade as upgrade_wallet
from billetterie_wallet.services.organizers import create_organizer, parse_roles
from tests.conftest import NOW, SECRET, Api, Backend, in_ci, set_secrets, settings_for
from tests.factories import import_document
from tests.sales_kit import Kit, _codes, sales_document
from tests.test_provision import load_shop
from tests.wallet.conftest import _postgres, free_port, wallet_settings


class Served:
    """uvicorn serving ``app`` on 127.0.0.1:``port`` in a thread; stop and start again on the
    same port (the wallet going down and coming back)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Served:
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(10)
        self.server = self.thread = None


@dataclass
class WalletRig:
    url: str  # the database
    clock: WalletClock
    settings: Any


@pytest.fixture(scope="session")
def wallet_rig(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WalletRig]:
    """The wallet's database on the box office's backend."""
    name = None
    if backend.name == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('wallet') / 'wallet.db'}"
    else:
        name = f"wallet_printing_{uuid.uuid4().hex[:8]}"
        found = _postgres(name)
        if found is None:
            if in_ci():
                pytest.fail("PostgreSQL is unreachable (CI=true)")
            pytest.skip("PostgreSQL is unreachable")
        url = found
    upgrade_wallet(url)
    clock = WalletClock(NOW)
    yield WalletRig(url, clock, wallet_settings(url, tmp_path_factory.mktemp("wallet-var")))
    if name is not None:
        _postgres(name, drop_only=True)


@pytest.fixture
async def wallet_engine(wallet_rig: WalletRig) -> AsyncIterator[AsyncEngine]:
    wallet_rig.clock.set(NOW)
    engine = wallet_db.create_engine(wallet_rig.url)
    yield engine
    async with wallet_db.transaction(engine) as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in wallet_db.metadata.sorted_tables)
            await conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(wallet_db.metadata.sorted_tables):
                await conn.execute(table.delete())
    await engine.dispose()


@pytest.fixture
def wallet_server(wallet_rig: WalletRig, wallet_engine: AsyncEngine) -> Iterator[Served]:
    served = Served(build_wallet(wallet_rig.settings, clock=wallet_rig.clock)).start()
    yield served
    served.stop()


@dataclass
class Office:
    """The box office under test: the sales kit over real HTTP, its printing interface, and an
    HTTP client for the printing functions."""

    kit: Kit
    server: Served
    organizer_key: str
    http: httpx.AsyncClient

    @property
    def engine(self) -> AsyncEngine:
        return self.kit.engine

    async def interface(self, code: str = "WALLET") -> Interface:
        async with read(self.engine) as conn:
            return await interface_by_code(conn, self.kit.shop.institution_id, code)

    async def run(self, function: Function, code: str = "WALLET") -> RunResult:
        return await run_function(
            self.engine,
            await self.interface(code),
            function,
            http=self.http,
            clock=self.kit.clock,
            delays=(0.05, 0.1),
        )

    async def sell(
        self, quantity: int, *, email: str | None = "ada@example.org", category: str = "C2"
    ) -> dict[str, Any]:
        """A closed, paid order of ``quantity`` places of SH01 bought by Ada."""
        purchaser = {"firstName": "Ada", "lastName": "Lovelace"}
        if email:
            purchaser["email"] = email
        cart = await self.kit.cart(self.kit.seats(category, quantity), purchasersInfo=[purchaser])
        assert cart["statusCode"] == "success", cart
        data = cart["orderUpdateData"]
        closed = await self.kit.close(data["orderId"], [("CASH", data["totalAmount"])])
        assert closed["statusCode"] == "success", closed
        return dict(closed["orderData"])

    async def tickets(self, order_id: int) -> list[Any]:
        t = sales_db.ticket.c
        async with read(self.engine) as conn:
            return list(
                (
                    await conn.execute(
                        sa.select(sales_db.ticket).where(t.order_id == order_id).order_by(t.id)
                    )
                ).all()
            )

    async def printed(self, ticket_id: int) -> Any:
        p = printing_db.printing_ticket.c
        async with read(self.engine) as conn:
            return (
                await conn.execute(
                    sa.select(printing_db.printing_ticket).where(p.ticket_id == ticket_id)
                )
            ).first()


def interface_document(url: str, key: str, **overrides: Any) -> dict[str, Any]:
    return {
        "code": "WALLET",
        "type": "WALLET",
        "url": f"{url}/api/v1/organizer/tickets",
        "login": "box-office",
        "apiKey": key,
        "products": ["SHOW", "MEMB", "SUB"],
        **overrides,
    }


@contextlib.asynccontextmanager
async def open_office(
    engine: AsyncEngine,
    database_url: str,
    tmp: Path,
    wallet_engine: AsyncEngine,
    wallet_url: str,
    *,
    code: str = "ACME",
) -> AsyncIterator[Office]:
    created = await create_organizer(
        wallet_engine, code=code, name=code, roles=parse_roles(""), now=NOW, actor="test"
    )
    document = sales_document(code)
    document["printingInterfaces"] = [interface_document(wallet_url, created.key)]
    await import_document(engine, document)
    await set_secrets(
        engine, code, [(f"{code}_WEB", f"{code}WEB", "web"), (f"{code}_RES", f"{code}RES", "res")]
    )
    clock = FixedClock(NOW)
    shop = await load_shop(engine, code)
    app = build_app(settings_for(database_url, tmp, background_tasks=False), clock=clock)
    served = Served(app).start()
    try:
        async with (
            httpx.AsyncClient(base_url=served.url, timeout=30) as client,
            httpx.AsyncClient(timeout=10) as http,
        ):
            api = Api(client)
            kit = Kit(
                api=api,
                engine=engine,
                clock=clock,
                shop=shop,
                tokens={
                    "web": await api.token(f"{code}_WEB", "web", SECRET),
                    "res": await api.token(f"{code}_RES", "res", SECRET),
                },
                tariffs=await _codes(engine, shop.institution_id, catalog.audience_sub_category),
                methods=await _codes(engine, shop.institution_id, catalog.payment_method),
                products=await _codes(engine, shop.institution_id, catalog.product),
                points_of_sale=await _codes(engine, shop.institution_id, catalog.point_of_sale),
            )
            yield Office(kit, served, created.key, http)
    finally:
        served.stop()
