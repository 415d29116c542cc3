"""The shop over HTTP on both databases: where the redirect API lands (on sale, not on sale,
sold out, unknown), the cart-summary cookie at every cart change, CSRF and the forms' rate
limit, guest checkout, and garbage that must never answer 500. The browser journeys are in
tests/test_shop_browser.py."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.app import build_app
from billetterie.sales import db as sales_db
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import read
from tests.conftest import NOW, SECRET, Backend, set_secrets, settings_for
from tests.factories import import_document, setup_document

BASE = "/shop/ACMEWEB"


@dataclass
class Shop:
    client: httpx.AsyncClient
    app: FastAPI
    clock: FixedClock
    engine: AsyncEngine
    catalog: dict[str, Any]

    async def csrf(self, path: str = BASE) -> str:
        response = await self.client.get(path)
        found = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
        if found:
            return found.group(1)
        token = self.client.cookies.get("bt_csrf")
        assert token, response.text
        return token

    async def post(self, path: str, data: dict[str, Any]) -> httpx.Response:
        return await self.client.post(path, data={"csrf_token": await self.csrf(), **data})

    @property
    def product(self) -> dict[str, Any]:
        product: dict[str, Any] = self.catalog["seasons"][0]["products"][0]
        return product

    def performance(self, index: int = 0) -> dict[str, Any]:
        performance: dict[str, Any] = self.product["event"]["performances"][index]
        return performance


def acme_shop() -> dict[str, Any]:
    document = setup_document("ACME")
    web = document["salesChannels"][0]["pointsOfSale"][0]
    web.update(
        guestLoginAvailable=True,
        seatSelectionMode="BEST_AVAILABLE_AND_SEAT_MAP",
        cookieDomain="acme.example",
        externalUrls={"termsOfSale": "https://www.acme.example/{LANGUAGE}/terms"},
    )
    return document


async def open_shop(
    engine: AsyncEngine, backend: Backend, tmp: Path, **settings: Any
) -> AsyncIterator[Shop]:
    await import_document(engine, acme_shop())
    await set_secrets(engine, "ACME", [("ACME_WEB", "ACMEWEB", "web")])
    clock = FixedClock(NOW)
    app = build_app(settings_for(backend.scratch_url, tmp).model_copy(update=settings), clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            token = (
                await client.post(
                    "/tnai/backend-apis/v1/auth",
                    json={"operator": "ACME_WEB", "partner": "web", "secret": SECRET},
                )
            ).json()["token"]
            catalog = (
                await client.post(
                    "/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed",
                    json={},
                    headers={"Authorization": f"Bearer {token}"},
                )
            ).json()["catalogData"]
            client.headers["X-Test-Token"] = token
            yield Shop(client, app, clock, engine, catalog)


@pytest.fixture
async def shop(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> AsyncIterator[Shop]:
    async for opened in open_shop(scratch_engine, backend, tmp_path):
        yield opened


async def orders_count(engine: AsyncEngine) -> int:
    async with read(engine) as conn:
        return int(
            (
                await conn.execute(sa.select(sa.func.count()).select_from(sales_db.sales_order))
            ).scalar_one()
        )


async def test_book_links_land_on_the_product_only_while_it_is_on_sale_and_available(
    shop: Shop,
) -> None:
    product, first, second = shop.product, shop.performance(0), shop.performance(1)
    client = shop.client
    by_code = await client.get("/api/1/redirect/product?code=SHOW&pos=ACMEWEB")
    assert by_code.status_code == 303
    assert by_code.headers["location"] == f"{BASE}/products/{product['id']}?lang=en"
    by_id = await client.get(f"/api/1/redirect/product?id={product['id']}&lang=fr&pos=ACMEWEB")
    assert by_id.headers["location"] == f"{BASE}/products/{product['id']}?lang=fr"
    performance = await client.get(
        f"/api/1/redirect/product/performance?id={first['id']}&pos=ACMEWEB"
    )
    assert performance.headers["location"] == f"{BASE}/performances/{first['id']}?lang=en"

    nowhere = await client.get("/api/1/redirect/product?code=SHOW")  # no pos=, no setting
    assert nowhere.status_code == 404 and "error.shop.unknown_point_of_sale" in nowhere.text
    unknown = await client.get("/api/1/redirect/product?code=NOPE&pos=ACMEWEB")
    assert unknown.status_code == 404 and 'data-code="error.shop.unknown_product"' in unknown.text
    # a refusal speaks the page's language
    for lang, said in (("fr", "Ce produit n'existe pas."),):  # this shop speaks en and fr
        page = await client.get(f"/api/1/redirect/product?code=NOPE&pos=ACMEWEB&lang={lang}")
        assert page.status_code == 404 and said in html.unescape(page.text), page.text

    shop.clock.set(NOW + timedelta(days=365))  # after the web sales period
    try:
        late = await client.get("/api/1/redirect/product?code=SHOW&pos=ACMEWEB")
        assert late.status_code == 409 and 'data-code="error.shop.not_on_sale"' in late.text
    finally:
        shop.clock.set(NOW)

    # the first performance sold out on the web channel (through the partner API)
    token = client.headers["X-Test-Token"]
    tariff = shop.catalog["seasons"][0]["audienceCategories"][0]["audienceSubCategories"][0]
    auth = {"Authorization": f"Bearer {token}"}
    seats = (
        await client.post(
            "/tnseb/backend-apis/availabilityService/v1_33/getSeatsAvailability",
            headers=auth,
            json={"performanceId": first["id"]},
        )
    ).json()["seats"]
    free = sorted(
        (s["seatCategoryId"], s["blockId"], s["row"], int(s["number"]), s["id"])
        for s in seats
        if s["state"] == "FREE"
    )
    rows: dict[tuple[int, int, str], list[int]] = {}
    for category, block, row, _, seat in free:
        rows.setdefault((category, block, row), []).append(seat)
    for (category, _, _), ids in rows.items():  # a whole row per order: no orphan seat
        answer = await client.post(
            "/tnseb/backend-apis/externalOrderFacade/v1_33/createOrUpdateOrder",
            headers=auth,
            json={
                "singleEntryAttributionOperations": [
                    {
                        "operationAttributions": [
                            {
                                "performanceId": first["id"],
                                "seatCategoryId": category,
                                "audienceSubCategoryId": tariff["id"],
                                "quantity": len(ids),
                                "seatIds": ids,
                            }
                        ]
                    }
                ]
            },
        )
        assert answer.json()["statusCode"] == "success", answer.text
    await shop.app.state.runtime.caches["board"].load()
    full = await client.get(f"/api/1/redirect/product/performance?id={first['id']}&pos=ACMEWEB")
    assert full.status_code == 409 and 'data-code="error.shop.sold_out"' in full.text
    # the product still has its second performance
    still = await client.get("/api/1/redirect/product?code=SHOW&pos=ACMEWEB")
    assert still.status_code == 303
    open_one = await client.get(
        f"/api/1/redirect/product/performance?id={second['id']}&pos=ACMEWEB"
    )
    assert open_one.status_code == 303


def summary_header(response: httpx.Response) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith("stx_cartSummary_ACME_WEB="):
            return header
    return None


async def test_every_cart_change_rewrites_the_summary_cookie(shop: Shop) -> None:
    first = shop.performance(0)
    cat1, cat2 = (c["id"] for c in first["seatCategories"])
    tariff = shop.catalog["seasons"][0]["audienceCategories"][0]["audienceSubCategories"][0]["id"]
    added = await shop.post(
        f"{BASE}/cart/add",
        {"kind": "best", "performance": str(first["id"]), f"q_{cat1}_{tariff}": "2"},
    )
    assert added.status_code == 303 and added.headers["location"] == f"{BASE}/cart"
    header = summary_header(added)
    assert header is not None
    value, *attributes = header.split("; ")
    order_id = value.rsplit("|", 1)[1]
    assert value == f"stx_cartSummary_ACME_WEB=2|100.00|EUR|2026-11-23T12:20:00Z|{order_id}"
    assert "Domain=acme.example" in attributes and "Path=/" in attributes
    assert "HttpOnly" not in attributes  # the website's script reads it

    more = await shop.post(
        f"{BASE}/cart/add",
        {"kind": "best", "performance": str(first["id"]), f"q_{cat2}_{tariff}": "1"},
    )
    assert summary_header(more) == header.replace("2|100.00", "3|130.00")
    cart = await shop.client.get(f"{BASE}/cart")
    movements = re.findall(r'data-movement="(\d+)"', cart.text)
    assert len(movements) == 3
    removed = await shop.post(f"{BASE}/cart/remove", {"movement": movements[0]})
    assert removed.status_code == 303
    after = summary_header(removed)
    assert after is not None and after.startswith("stx_cartSummary_ACME_WEB=2|80.00|EUR|")
    assert await orders_count(shop.engine) == 1

    # a seat taken meanwhile: the sale path re-checks, the cart is unchanged
    seat_page = await shop.client.get(f"{BASE}/performances/{first['id']}")
    held = re.search(r'data-id="(\d+)" data-state="HELD"', seat_page.text)
    assert held is not None
    taken = await shop.post(
        f"{BASE}/cart/add",
        {"kind": "seats", "performance": str(first["id"]), "tariff": str(tariff), "seat": held[1]},
    )
    assert taken.status_code == 409 and 'data-code="error.order.availability"' in taken.text
    assert summary_header(taken) is None

    # the guest names themselves, then is sent to the card page
    bad = await shop.post(f"{BASE}/checkout/guest", {"firstName": "A", "email": "nope"})
    assert bad.status_code == 400 and 'data-code="error.shop.bad_choice"' in bad.text
    guest = await shop.post(
        f"{BASE}/checkout/guest",
        {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.org"},
    )
    assert guest.headers["location"] == f"{BASE}/pay"
    pay_page = await shop.client.get(f"{BASE}/pay")
    method = re.search(
        r'data-method="CARD">\s*<input[^>]*>\s*<input type="hidden" name="method" value="(\d+)"',
        pay_page.text,
    )
    assert method is not None
    paid = await shop.post(f"{BASE}/pay", {"method": method[1]})
    assert paid.status_code == 303 and "/payments/" in paid.headers["location"]

    # back from the card page: the payment is pending; giving it up needs the form's token
    pending = await shop.client.get(f"{BASE}/pay")
    assert 'id="card-pending"' in pending.text and 'data-method="CARD"' not in pending.text
    assert f'id="back-to-card" href="{paid.headers["location"]}"' in pending.text
    forged = await shop.client.post(f"{BASE}/pay/reopen", data={})
    assert forged.status_code == 403 and 'data-code="error.account.csrf"' in forged.text
    assert 'id="card-pending"' in (await shop.client.get(f"{BASE}/cart")).text
    reopened = await shop.post(f"{BASE}/pay/reopen", {})
    assert reopened.status_code == 303 and reopened.headers["location"] == f"{BASE}/pay"
    again = await shop.client.get(f"{BASE}/pay")
    assert 'id="card-pending"' not in again.text and 'data-method="CARD"' in again.text
    retried = await shop.post(f"{BASE}/pay", {"method": method[1]})
    assert retried.status_code == 303 and "/payments/" in retried.headers["location"]
    assert retried.headers["location"] != paid.headers["location"]


async def test_forms_without_their_token_change_nothing(shop: Shop) -> None:
    first = shop.performance(0)
    cat = first["seatCategories"][0]["id"]
    tariff = shop.catalog["seasons"][0]["audienceCategories"][0]["audienceSubCategories"][0]["id"]
    for token in (None, "x" * 32):
        data = {"kind": "best", "performance": str(first["id"]), f"q_{cat}_{tariff}": "2"}
        if token:
            data["csrf_token"] = token
        refused = await shop.client.post(f"{BASE}/cart/add", data=data)
        assert refused.status_code == 403
        assert 'data-code="error.account.csrf"' in refused.text
    assert await orders_count(shop.engine) == 0


GARBAGE_PAGES = [
    "/shop/NOPE",
    "/shop/" + "X" * 300,
    f"{BASE}/products/0",
    f"{BASE}/products/99999999999999999999",
    f"{BASE}/products/%00",
    f"{BASE}/performances/-1",
    f"{BASE}/performances/1e9",
    f"{BASE}/performances/1/blocks/%00",
    f"{BASE}/performances/x/blocks/1",
    f"{BASE}/search?q=" + "é" * 5000,
    f"{BASE}/search?q=%00",
    f"{BASE}/orders/..%2F..",
    f"{BASE}/orders/" + "a" * 64,
    f"{BASE}/pages/nothing",
    f"{BASE}/cart?lang=xx",
    "/api/1/redirect/product?pos=ACMEWEB&id=abc",
    "/api/1/redirect/product?pos=ACMEWEB&code=%00",
    "/api/1/redirect/product?pos=%00",
    "/api/1/redirect/cart?orderSecretId=%00%01",
    "/api/1/redirect/cart?orderSecretId=" + "a" * 40 + "&pos=ACMEWEB",
    "/api/1/redirect/account/register?pos=ACMEWEB&callbackUrl=javascript:alert(1)",
    "/shop-static/../app.py",
]


async def test_garbage_never_answers_500(shop: Shop) -> None:
    for path in GARBAGE_PAGES:
        response = await shop.client.get(path)
        assert response.status_code in {200, 303, 400, 404, 409}, (path, response.text)


BAD_FORMS: list[dict[str, str]] = [
    {"kind": "best", "performance": "x"},
    {"kind": "best", "performance": "1", "q_1_1": "-3"},
    {"kind": "best", "performance": "1", "q_a_b": "1"},
    {"kind": "best", "performance": "1", "q_1": "1"},
    {"kind": "best", "performance": "1", "q_1_1": "99999999999999999999"},
    {"kind": "seats", "performance": "1", "seat": "1", "tariff": ""},
    {"kind": "seats", "performance": "1", "seat": "999999999", "tariff": "1"},
    {"kind": "seats", "performance": "1", "seat": str(2**60), "tariff": "1"},
    {"kind": "items", "product": "1", "item": "%00"},
    {"kind": "items", "product": "1", "item": "1", "q_1_1": "1"},
    {"kind": "items", "product": "1", "item": "1", "timeslot": "x", "q_1": "1"},
    {"kind": "composed", "product": "1", "q_1_1": "1"},
    {"kind": "nothing"},
    {},
]


async def test_bad_cart_forms_are_refused_and_hold_nothing(shop: Shop) -> None:
    for data in BAD_FORMS:
        response = await shop.post(f"{BASE}/cart/add", data)
        assert 400 <= response.status_code < 500, (data, response.text)
        assert re.search(r'role="alert" data-code="error\.[a-z_.]+"', response.text), data
    assert await orders_count(shop.engine) == 0


async def test_forms_are_rate_limited_per_client(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    async for shop in open_shop(scratch_engine, backend, tmp_path, rate_limits=True):
        codes = [
            (await shop.client.post(f"{BASE}/cart/add", data={"kind": "best"})).status_code
            for _ in range(61)
        ]
        assert codes == [403] * 60 + [429]


async def test_the_product_page_shows_its_media_with_their_alternative_texts(shop: Shop) -> None:
    from billetterie.setup import export_institution

    media = [
        {
            "url": "https://www.acme.example/show.jpg",
            "alt": {"en": "The cast on stage", "fr": "La troupe en scène"},
        },
        {"url": "/shop-static/demo-hamlet-skull.svg", "alt": "A skull"},
    ]
    document = acme_shop()
    document["products"][0]["media"] = media
    await import_document(shop.engine, document)
    product_id = shop.product["id"]
    image = re.compile(r'<figure><img src="([^"]+)" alt="([^"]*)"')
    english = await shop.client.get(f"{BASE}/products/{product_id}?lang=en")
    assert image.findall(english.text) == [
        ("https://www.acme.example/show.jpg", "The cast on stage"),
        ("/shop-static/demo-hamlet-skull.svg", "A skull"),
    ]
    french = await shop.client.get(f"{BASE}/products/{product_id}?lang=fr")
    assert image.findall(french.text) == [
        ("https://www.acme.example/show.jpg", "La troupe en scène"),
        ("/shop-static/demo-hamlet-skull.svg", "A skull"),  # no French text: the English one
    ]
    served = await shop.client.get("/shop-static/demo-hamlet-skull.svg")
    assert served.status_code == 200 and served.headers["content-type"] == "image/svg+xml"
    # the other product has none
    other = shop.catalog["seasons"][0]["products"][1]["id"]
    page = await shop.client.get(f"{BASE}/products/{other}")
    assert page.status_code == 200 and '<div class="media">' not in page.text

    # partners read them in the catalog, and the setup export gives them back
    catalog = (
        await shop.client.post(
            "/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed",
            json={},
            headers={"Authorization": f"Bearer {shop.client.headers['X-Test-Token']}"},
        )
    ).json()["catalogData"]
    product = catalog["seasons"][0]["products"][0]
    assert product["media"] == [
        {
            "url": "https://www.acme.example/show.jpg",
            "altText": {
                "translations": [
                    {"locale": "en", "value": "The cast on stage"},
                    {"locale": "fr", "value": "La troupe en scène"},
                ]
            },
        },
        {
            "url": "/shop-static/demo-hamlet-skull.svg",
            "altText": {"translations": [{"locale": "en", "value": "A skull"}]},
        },
    ]
    async with read(shop.engine) as conn:
        exported = await export_institution(conn, "ACME")
    assert exported["products"][0]["media"] == [
        media[0],
        {"url": "/shop-static/demo-hamlet-skull.svg", "alt": {"en": "A skull"}},
    ]
    assert "media" not in exported["products"][1]


def test_refusals_are_explained_in_the_page_language() -> None:
    from billetterie.shared.i18n import ERRORS, explained

    assert explained("error.order.availability", "only 2 left in C1", "en") == "only 2 left in C1"
    assert explained("error.order.availability", "x", "de") == ERRORS["error.order.availability"][2]
    assert explained("error.order.availability", "x", "fr") == ERRORS["error.order.availability"][1]
    assert explained("error.something.new", "as said", "fr") == "as said"
    assert all(len(set(texts)) == 3 for texts in ERRORS.values())  # each really translated
