"""The waiting room of a hot on-sale: visitors queued before the opening are let in at the
opening in a random order, one every 60 / rate seconds; later ones get the next slot; the
admission is a signed cookie that a forgery does not pass; cart forms without one change
nothing. Over HTTP on both databases, then in Debian's chromium (SQLite)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import NOW, Backend
from tests.factories import import_document
from tests.shop_support import World, shop_world
from tests.test_shop import BASE, Shop, acme_shop, open_shop, orders_count

OPENING = NOW + timedelta(minutes=10)
SHOTS = os.environ.get("BILLETTERIE_SCREENSHOTS")


def with_queue(document: dict[str, Any], pos_code: str, product_code: str) -> None:
    for channel in document["salesChannels"]:
        for pos in channel["pointsOfSale"]:
            if pos["code"] == pos_code:
                pos["parameters"] = {**pos.get("parameters", {}), "queueRatePerMinute": "60"}
    for product in document["products"]:
        if product["code"] == product_code:
            for period in product["salesPeriods"]:
                period["start"] = OPENING.isoformat()


@pytest.fixture
async def shop(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> AsyncIterator[Shop]:
    async for opened in open_shop(scratch_engine, backend, tmp_path):
        document = acme_shop()
        with_queue(document, "ACMEWEB", "SHOW")
        await import_document(scratch_engine, document)
        yield opened


def visitor(shop: Shop) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=shop.app), base_url="http://testserver"
    )


async def test_the_queue_lets_visitors_in_at_the_opening_in_a_random_order(shop: Shop) -> None:
    product = shop.product["id"]
    performance = shop.performance(0)["id"]
    shop.clock.set(NOW)
    visitors = [visitor(shop) for _ in range(12)]
    try:
        for v in visitors:
            page = await v.get(f"{BASE}/products/{product}")
            assert page.status_code == 303
            assert page.headers["location"] == f"{BASE}/queue/{product}"
            room = await v.get(f"{BASE}/queue/{product}")
            assert room.status_code == 200 and 'data-waiting="true"' in room.text
            assert '<meta http-equiv="refresh"' in room.text
            assert v.cookies.get(f"bt_queue_{product}")
        # before the opening nobody is let in, not even the first to come
        assert (await visitors[0].get(f"{BASE}/queue/{product}")).status_code == 200

        shop.clock.set(OPENING)
        positions = []
        for v in visitors:
            room = await v.get(f"{BASE}/queue/{product}")
            if room.status_code == 303:
                positions.append(1)
                assert room.headers["location"] == f"{BASE}/products/{product}"
            else:
                found = re.search(r'data-position="(\d+)"', room.text)
                assert found is not None
                positions.append(int(found[1]))
        assert sorted(positions) == list(range(1, 13))
        assert positions != list(range(1, 13))  # drawn, not first come (1 in 12! to fail)

        # one a second: at +5 s the first six are in, the others wait
        shop.clock.set(OPENING + timedelta(seconds=5))
        statuses = [(await v.get(f"{BASE}/queue/{product}")).status_code for v in visitors]
        assert [statuses[i] for i in sorted(range(12), key=positions.__getitem__)] == [303] * 6 + [
            200
        ] * 6

        # a newcomer after the opening goes after everyone queued before it
        late = visitor(shop)
        room = await late.get(f"{BASE}/queue/{product}")
        assert 'data-position="13"' in room.text

        shop.clock.set(OPENING + timedelta(seconds=12))
        for v in [*visitors, late]:
            assert (await v.get(f"{BASE}/queue/{product}")).status_code == 303
            assert (await v.get(f"{BASE}/products/{product}")).status_code == 200
            assert (await v.get(f"{BASE}/performances/{performance}")).status_code == 200
        await late.aclose()

        # a forged admission is none: back to the queue, and forms change nothing
        forger = visitor(shop)
        admitted = visitors[0].cookies.get(f"bt_admit_{product}")
        assert admitted is not None
        token, expires, signature = admitted.split(".")
        for forged in (
            f"{token}.{int(expires) + 3600}.{signature}",
            f"{token}.{expires}.{'0' * 64}",
            "garbage",
        ):
            forger.cookies.set(f"bt_admit_{product}", forged, domain="testserver", path=BASE)
            page = await forger.get(f"{BASE}/products/{product}")
            assert page.status_code == 303
            assert page.headers["location"] == f"{BASE}/queue/{product}"
        perf_page = await forger.get(f"{BASE}/performances/{performance}")
        assert perf_page.status_code == 303
        await forger.get(BASE)
        csrf = forger.cookies.get("bt_csrf")
        assert csrf is not None
        cat = shop.performance(0)["seatCategories"][0]["id"]
        tariff = shop.catalog["seasons"][0]["audienceCategories"][0]["audienceSubCategories"][0]
        refused = await forger.post(
            f"{BASE}/cart/add",
            data={
                "csrf_token": csrf,
                "kind": "best",
                "performance": str(performance),
                f"q_{cat}_{tariff['id']}": "1",
            },
        )
        assert refused.status_code == 403 and 'data-code="error.shop.queue"' in refused.text
        assert await orders_count(shop.engine) == 0
        await forger.aclose()

        # once the room has closed, nobody waits
        shop.clock.set(OPENING + timedelta(minutes=61))
        newcomer = visitor(shop)
        assert (await newcomer.get(f"{BASE}/products/{product}")).status_code == 200
        await newcomer.aclose()
    finally:
        for v in visitors:
            await v.aclose()


async def test_products_without_an_opening_to_come_never_queue(shop: Shop) -> None:
    other = shop.catalog["seasons"][0]["products"][1]["id"]  # the pass opened long ago
    shop.clock.set(NOW)
    assert (await shop.client.get(f"{BASE}/products/{other}")).status_code == 200
    assert (await shop.client.get(f"{BASE}/queue/{other}")).headers["location"] == (
        f"{BASE}/products/{other}"
    )
    for wrong in ("x", "0", "9" * 20):
        answer = await shop.client.get(f"{BASE}/queue/{wrong}")
        assert answer.status_code == 404 and "error.shop.unknown_product" in answer.text


@pytest.fixture(scope="module")
async def world(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    if backend.name != "sqlite":
        pytest.skip("browser test: the HTTP tests cover both databases")
    async with shop_world(
        backend,
        tmp_path_factory.mktemp("shop"),
        lambda document: with_queue(document, "WEBSHOP", "HAMLET"),
    ) as w:
        yield w


async def test_two_buyers_wait_in_chromium_and_are_let_in(world: World) -> None:
    world.clock.set(NOW)
    try:
        buyers = [await world.context() for _ in range(2)]
        pages = [await b.new_page() for b in buyers]
        for page in pages:
            await page.goto(f"{world.shop}/api/1/redirect/product?code=HAMLET&lang=fr")
            await page.wait_for_url(f"{world.shop}/shop/WEBSHOP/queue/1?lang=fr")
            assert await page.title() == "Salle d'attente · Boutique en ligne Demo"
            assert await page.get_attribute("#queue", "data-waiting") == "true"
            assert "tiré au sort" in await page.inner_text("#queue")
        if SHOTS:
            await pages[0].screenshot(path=f"{SHOTS}/12-queue.png", full_page=True)
        assert await pages[0].evaluate("document.documentElement.scrollWidth") <= 390
        cookies = {c["name"]: c for c in await buyers[0].cookies()}
        assert cookies["bt_queue_1"]["httpOnly"] and "bt_admit_1" not in cookies

        world.clock.set(OPENING + timedelta(seconds=1))
        for page in pages:
            await page.reload()
            await page.wait_for_url(f"{world.shop}/shop/WEBSHOP/products/1")
            assert await page.locator('tr[data-performance="1"] a.button').count() == 1
        admitted = {c["name"]: c for c in await buyers[1].cookies()}["bt_admit_1"]
        assert admitted["httpOnly"] and admitted["path"] == "/shop/WEBSHOP"
        # the admission opens the performance too, and the sale goes on as usual
        await pages[1].click('tr[data-performance="1"] a.button')
        await pages[1].wait_for_url(f"{world.shop}/shop/WEBSHOP/performances/1")
        await pages[1].fill("#q_1_1", "1")
        await pages[1].click("#best-form button[type=submit]")
        await pages[1].wait_for_url(f"{world.shop}/shop/WEBSHOP/cart")
        assert await pages[1].locator("tr[data-movement]").count() == 1
        for b in buyers:
            await b.close()
    finally:
        world.clock.set(NOW)
