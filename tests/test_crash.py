"""Crash safety: the server process is killed (SIGKILL, no shutdown) in the middle of a rush of
carts and closes, then started again. Every closed order has all of its tickets, no order is
half closed, no barcode was issued twice, every held place belongs to a running cart, and once
the carts expire nothing stays held. A real ``billetterie serve`` on the test database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.inventory import db as inventory
from billetterie.inventory.services import expire_holds
from billetterie.sales import db as sales
from billetterie.sales.tasks import abandon_expired_orders
from billetterie.shared.clock import SystemClock
from billetterie.shared.db import read
from tests.conftest import SECRET, Backend, set_secrets
from tests.factories import import_document
from tests.sales_kit import sales_document

BUYERS = 12


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(url: str, tmp: Path, port: int) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "BILLETTERIE_DATABASE_URL": url,
        "BILLETTERIE_VAR_DIR": str(tmp / "var"),
        "BILLETTERIE_JWT_SECRET": "crash-test-" + "k" * 32,
        "BILLETTERIE_RATE_LIMITS": "off",
    }
    command = [str(Path(sys.executable).parent / "billetterie"), "serve", "--port", str(port)]
    with (tmp / f"server-{port}.log").open("ab") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp / f"server-{port}.log").read_text()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        time.sleep(0.1)
    raise AssertionError("the server did not start")


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


async def _rush(base: str, token: str, ids: dict[str, Any], stop: asyncio.Event) -> int:
    """Buyers of one seat at a time until ``stop``; how many closes answered success."""
    closes = 0

    async def buyer(client: httpx.AsyncClient, seed: int) -> None:
        nonlocal closes
        category = ids["categories"][seed % len(ids["categories"])]
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                cart = (
                    await client.post(
                        "/tnseb/backend-apis/externalOrderFacade/v1_33/createOrUpdateOrder",
                        json={
                            "singleEntryAttributionOperations": [
                                {
                                    "operationAttributions": [
                                        {
                                            "performanceId": ids["performance"],
                                            "seatCategoryId": category,
                                            "audienceSubCategoryId": ids["tariff"],
                                            "quantity": 1,
                                        }
                                    ]
                                }
                            ]
                        },
                    )
                ).json()
                if cart["statusCode"] != "success":
                    await asyncio.sleep(0.01)
                    continue
                order = cart["orderUpdateData"]
                closed = await client.post(
                    "/tnseb/backend-apis/externalOrderService/v1_33/closeOrder",
                    json={
                        "orderId": order["orderId"],
                        "payments": [
                            {"paymentMethodId": ids["method"], "amount": order["totalAmount"]}
                        ],
                    },
                )
                closes += closed.json()["statusCode"] == "success"

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
        await asyncio.gather(*(buyer(client, seed) for seed in range(BUYERS)))
    return closes


async def _until_sold(engine: AsyncEngine, places: int) -> None:
    """Wait until at least ``places`` places are sold (30 s at most)."""
    m = sales.movement.c
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with read(engine) as conn:
            sold = (
                await conn.execute(sa.select(sa.func.count()).where(m.state == "SOLD"))
            ).scalar_one()
        if sold >= places:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {places} places sold after 30 s")


async def _token(base: str) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        answer = await client.post(
            "/tnai/backend-apis/v1/auth",
            json={"operator": "ACME_WEB", "partner": "web", "secret": SECRET},
        )
    return str(answer.json()["token"])


async def _consistency(engine: AsyncEngine) -> dict[str, int]:
    o, m, t, op = sales.sales_order.c, sales.movement.c, sales.ticket.c, sales.operation.c
    ps, h, st = inventory.performance_seat.c, inventory.hold.c, inventory.stock.c
    async with read(engine) as conn:
        closed = {
            r.id for r in (await conn.execute(sa.select(o.id).where(o.state == "CLOSED"))).all()
        }
        movements = (await conn.execute(sa.select(m.id, m.order_id, m.state))).all()
        tickets = (await conn.execute(sa.select(t.movement_id, t.barcode))).all()
        ticket_of = Counter(r.movement_id for r in tickets)
        for r in movements:
            if r.order_id in closed:
                assert r.state == "SOLD", (
                    f"movement {r.id} of closed order {r.order_id} is {r.state}"
                )
                assert ticket_of.get(r.id) == 1, (
                    f"movement {r.id} has {ticket_of.get(r.id)} tickets"
                )
            else:
                assert r.id not in ticket_of, f"movement {r.id} of an open order has a ticket"
        barcodes = [r.barcode for r in tickets]
        assert None not in barcodes and len(set(barcodes)) == len(barcodes)
        sold_seats = (
            await conn.execute(sa.select(sa.func.count()).where(ps.state == "SOLD"))
        ).scalar_one()
        assert sold_seats == sum(1 for r in movements if r.state == "SOLD")
        # every held seat belongs to an active hold of an operation of a running cart
        orphans = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(inventory.performance_seat)
                .join(inventory.hold, h.id == ps.hold_id)
                .where(
                    ps.state == "HELD",
                    ~sa.exists().where(
                        op.hold_id == h.id,
                        op.order_id == o.id,
                        o.state == "RUNNING",
                    ),
                )
            )
        ).scalar_one()
        assert orphans == 0
        held, sold = (
            await conn.execute(sa.select(sa.func.sum(st.held), sa.func.sum(st.sold)))
        ).one()
        held_seats = (
            await conn.execute(sa.select(sa.func.count()).where(ps.state == "HELD"))
        ).scalar_one()
        assert (held, sold) == (held_seats, sold_seats)
    return {"closed": len(closed), "sold": sold_seats, "held": held_seats}


async def test_a_killed_server_leaves_every_order_whole(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    await import_document(scratch_engine, sales_document())
    await set_secrets(scratch_engine, "ACME", [("ACME_WEB", "ACMEWEB", "web")])
    from tests.test_provision import load_shop

    shop = await load_shop(scratch_engine)
    from billetterie.catalog import db as catalog

    async with read(scratch_engine) as conn:
        tariff = (
            await conn.execute(
                sa.select(catalog.audience_sub_category.c.id).where(
                    catalog.audience_sub_category.c.code == "FULL"
                )
            )
        ).scalar_one()
        method = (
            await conn.execute(
                sa.select(catalog.payment_method.c.id).where(
                    catalog.payment_method.c.code == "CASH"
                )
            )
        ).scalar_one()
    ids = {
        "performance": shop.performances["SH01"],
        "categories": [shop.categories["C1"], shop.categories["C2"]],
        "tariff": tariff,
        "method": method,
    }
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start(backend.scratch_url, tmp_path, port)
    try:
        token = await _token(base)
        stop = asyncio.Event()
        rush = asyncio.create_task(_rush(base, token, ids, stop))
        await _until_sold(scratch_engine, 15)  # of 55 places: well inside the rush
        _kill(server)  # mid-rush: requests in flight, transactions open
        stop.set()
        assert await rush > 0
        server = _start(backend.scratch_url, tmp_path, port)
        before = await _consistency(scratch_engine)
        assert before["closed"] > 0
        # selling goes on after the restart
        token = await _token(base)
        stop = asyncio.Event()
        again = asyncio.create_task(_rush(base, token, ids, stop))
        sold = (await _consistency(scratch_engine))["sold"]
        await _until_sold(scratch_engine, sold + 1)
        stop.set()
        # seats were left when the server was killed: it was killed in the middle of the rush
        assert await again > 0
        await _consistency(scratch_engine)
    finally:
        _kill(server)
    # once every cart has expired, nothing stays held
    later = SystemClock().now() + timedelta(hours=2)
    await abandon_expired_orders(scratch_engine, later)
    await expire_holds(scratch_engine, now=later)
    after = await _consistency(scratch_engine)
    assert after["held"] == 0
