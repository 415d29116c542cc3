"""The seat map of a large plan on both databases: the blocks' free seats as the seat data has
them, one block's seats on demand (in the page and as a fragment), and the per-process cache
following every change of the seats: a hold, a hold expiring, a setup import. The 20,000-seat
stadium's figures are in bench/seatmap.py; here the ACME hall (2 blocks of 30 seats) is drawn by
blocks by lowering the limit."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog.services import institution_id_by_code
from billetterie.inventory.queries import seat_map
from billetterie.shared.db import read
from billetterie.shop import seatmap
from tests.conftest import NOW, Backend
from tests.factories import import_document
from tests.test_shop import BASE, Shop, acme_shop, open_shop

BLOCK = re.compile(r'aria-label="Block (\d+): (\d+) free"[^>]*><rect [^>]*data-block="(\d+)"')
SEAT = re.compile(r'class="seat"[^>]*data-id="(\d+)" data-state="(\w+)"')


@pytest.fixture
async def shop(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Shop]:
    monkeypatch.setattr(seatmap, "MAP_LIMIT", 40)
    async for opened in open_shop(scratch_engine, backend, tmp_path):
        yield opened


async def seats_of(
    shop: Shop, performance_id: int, web_contingents: set[int]
) -> list[dict[str, Any]]:
    async with read(shop.engine) as conn:
        return await seat_map(
            conn,
            institution_id=await institution_id_by_code(conn, "ACME"),
            performance_id=performance_id,
            contingents=web_contingents,
            now=shop.clock.now(),
        )


def free_by_block(seats: list[dict[str, Any]]) -> dict[str, int]:
    counts: Counter[str] = Counter({str(s["blockId"]): 0 for s in seats})
    counts.update(str(s["blockId"]) for s in seats if s["state"] == "FREE")
    return dict(counts)


async def overview(shop: Shop, performance_id: int) -> dict[str, int]:
    page = await shop.client.get(f"{BASE}/performances/{performance_id}")
    assert page.status_code == 200, page.text
    assert 'class="seat"' not in page.text
    return {block: int(free) for _, free, block in BLOCK.findall(page.text)}


async def test_the_overview_follows_holds_and_their_expiry(shop: Shop) -> None:
    perf = shop.performance(0)["id"]
    seats = await seats_of(shop, perf, set())  # the web channel has no contingent
    expected = free_by_block(seats)
    assert len(expected) == 2
    # the reseller's 5 contingent seats are not the web shop's to sell
    assert sum(expected.values()) == 60 - 5
    assert await overview(shop, perf) == expected
    cache = seatmap.cache_of(shop.app.state.runtime.caches)
    hits = cache.hits
    assert await overview(shop, perf) == expected
    assert cache.hits == hits + 1  # nothing changed: served from memory

    block = min(expected)
    fragment = await shop.client.get(f"{BASE}/performances/{perf}/blocks/{block}")
    chosen = [seat for seat, state in SEAT.findall(fragment.text) if state == "FREE"][:2]
    tariff = re.search(r'<select name="tariff"><option value="(\d+)"', fragment.text)
    assert tariff is not None and len(chosen) == 2
    added = await shop.post(
        f"{BASE}/cart/add",
        {"kind": "seats", "performance": str(perf), "seat": chosen, "tariff": tariff[1]},
    )
    assert added.status_code == 303, added.text
    after = await overview(shop, perf)
    assert after == {**expected, block: expected[block] - 2}
    assert after == free_by_block(await seats_of(shop, perf, set()))
    again = await shop.client.get(f"{BASE}/performances/{perf}/blocks/{block}")
    states = dict(SEAT.findall(again.text))
    assert [states[seat] for seat in chosen] == ["HELD", "HELD"]

    # the cart expires (no sweeper ran): its seats read free again, without any change logged
    shop.clock.set(NOW + timedelta(hours=2))
    assert await overview(shop, perf) == expected
    states = dict(
        SEAT.findall((await shop.client.get(f"{BASE}/performances/{perf}/blocks/{block}")).text)
    )
    assert [states[seat] for seat in chosen] == ["FREE", "FREE"]


async def test_one_block_opens_in_the_page_and_as_a_fragment(shop: Shop) -> None:
    perf = shop.performance(0)["id"]
    seats = await seats_of(shop, perf, set())
    for block in sorted({str(s["blockId"]) for s in seats}):
        in_block = {str(s["id"]): s["state"] for s in seats if str(s["blockId"]) == block}
        page = await shop.client.get(f"{BASE}/performances/{perf}?block={block}")
        fragment = await shop.client.get(f"{BASE}/performances/{perf}/blocks/{block}")
        assert dict(SEAT.findall(page.text)) == in_block
        assert dict(SEAT.findall(fragment.text)) == in_block
        assert f'data-fragment="{BASE}/performances/{perf}/blocks/{block}"' in page.text
        assert "<html" not in fragment.text and 'id="seat-form"' in fragment.text
    # a block of the page's overview only; garbage is a clear refusal
    for wrong in ("999999", "x'--", "1" * 40):
        answer = await shop.client.get(f"{BASE}/performances/{perf}/blocks/{wrong}")
        assert answer.status_code == 404
        assert 'data-code="error.shop.unknown_block"' in answer.text
    # a past performance is not on sale: neither its page nor its blocks
    shop.clock.set(NOW + timedelta(days=400))
    late = await shop.client.get(f"{BASE}/performances/{perf}/blocks/{min(in_block)}")
    assert late.status_code == 409 and 'data-code="error.shop.not_on_sale"' in late.text


async def test_a_setup_import_that_moves_seats_refreshes_the_map(shop: Shop) -> None:
    perf = shop.performance(0)["id"]
    before = await overview(shop, perf)
    assert len(before) == 2
    document = acme_shop()
    blocks = document["venues"][0]["spaces"][0]["configurations"][0]["areas"][0]["blocks"]
    blocks.append({"code": "C", "rows": "1-2", "seats": "1-5", "origin": {"x": 24, "y": 0}})
    categories = document["venues"][0]["spaces"][0]["configurations"][0]
    categories["logicalConfigurations"][0]["seatCategories"][1]["seats"].append("FLOOR/C")
    await import_document(shop.engine, document)
    after = await overview(shop, perf)
    assert len(after) == 3 and sum(after.values()) == sum(before.values()) + 10
    assert after == free_by_block(await seats_of(shop, perf, set()))


def test_the_cache_serves_only_its_versions_until_the_first_expiry() -> None:
    cache = seatmap.SeatMapCache(size=2)
    cache.put("a", 5, 1, NOW + timedelta(minutes=1), ["a"])
    assert cache.get("a", 5, 1, NOW) == ["a"]
    assert cache.get("a", 6, 1, NOW) is None  # the change sequence moved
    assert cache.get("a", 5, 2, NOW) is None  # the catalog version moved
    assert cache.get("a", 5, 1, NOW + timedelta(minutes=1)) is None  # a hold expired
    cache.put("b", 5, 1, None, ["b"])
    cache.put("c", 5, 1, None, ["c"])
    assert cache.get("a", 5, 1, NOW) is None  # least recently used out
    assert cache.get("b", 5, 1, NOW + timedelta(days=9)) == ["b"]
    assert (cache.hits, cache.misses) == (2, 4)
