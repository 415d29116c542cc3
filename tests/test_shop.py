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
from billetterie.catalog import db as catalog_db
from billetterie.catalog.services import institution_id_by_code
from billetterie.contacts import db as contacts_db
from billetterie.payments import db as payments_db
from billetterie.sales import db as sales_db
from billetterie.sales.accounts import add_credit, issue_voucher
from billetterie.sales.tasks import abandon_expired_orders
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import read
from billetterie.shared.i18n import ERRORS
from tests.conftest import NOW, SECRET, Backend, set_secrets, settings_for
from tests.factories import import_document, setup_document, text
from tests.identity_support import post_form

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
    engine: AsyncEngine,
    backend: Backend,
    tmp: Path,
    *,
    document: dict[str, Any] | None = None,
    **settings: Any,
) -> AsyncIterator[Shop]:
    await import_document(engine, document or acme_shop())
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


# --- a voucher or credit balance, the rest by card ---------------------------------------------


def mixed_shop() -> dict[str, Any]:
    """The ACME shop with gift vouchers and credit balances beside the card."""
    document = acme_shop()
    document["paymentMethods"] += [
        {"code": "VOUCHER", "name": text("Voucher"), "type": "VOUCHER"},
        {"code": "CREDIT", "name": text("Credit"), "type": "CREDIT"},
    ]
    document["salesChannels"][0]["pointsOfSale"][0]["paymentMethods"] = [
        "CARD",
        "VOUCHER",
        "CREDIT",
    ]
    return document


@pytest.fixture
async def mixed(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> AsyncIterator[Shop]:
    async for opened in open_shop(scratch_engine, backend, tmp_path, document=mixed_shop()):
        yield opened


async def two_places_for_a_guest(shop: Shop) -> None:
    """100.00 in the cart, a guest named, on the payment page."""
    first = shop.performance(0)
    cat = first["seatCategories"][0]["id"]
    tariff = shop.catalog["seasons"][0]["audienceCategories"][0]["audienceSubCategories"][0]["id"]
    added = await shop.post(
        f"{BASE}/cart/add",
        {"kind": "best", "performance": str(first["id"]), f"q_{cat}_{tariff}": "2"},
    )
    assert added.status_code == 303, added.text
    guest = await shop.post(
        f"{BASE}/checkout/guest",
        {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.org"},
    )
    assert guest.headers["location"] == f"{BASE}/pay"


def method_of(page: str, kind: str) -> str:
    found = re.search(
        rf'data-method="{kind}">\s*<input[^>]*>\s*<input type="hidden" name="method" value="(\d+)"',
        page,
    )
    assert found is not None, page
    return found[1]


def hidden_fields(page: str, form: str) -> dict[str, Any]:
    """The hidden inputs of the form marked ``data-<form>`` (``data-method="MIXED"``, say; its
    CSRF token aside): a name given more than once (each applied part's) maps to the list of its
    values in order."""
    found = re.search(rf"data-{form}>(.*?)</form>", page, re.S)
    assert found is not None, page
    fields: dict[str, Any] = {}
    for name, value in re.findall(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)">', found[1]
    ):
        if name in fields:
            known = fields[name]
            fields[name] = [*known, value] if isinstance(known, list) else [known, value]
        else:
            fields[name] = value
    fields.pop("csrf_token", None)
    return fields


async def money(shop: Shop) -> tuple[int, int, list[tuple[str, int]], list[str]]:
    """What paying may change: card payments, ledger entries, account balances, order states."""
    async with read(shop.engine) as conn:
        intents = (
            await conn.execute(sa.select(sa.func.count()).select_from(payments_db.payment_intent))
        ).scalar_one()
        entries = (
            await conn.execute(sa.select(sa.func.count()).select_from(sales_db.account_entry))
        ).scalar_one()
        a, o = sales_db.account.c, sales_db.sales_order.c
        balances = (await conn.execute(sa.select(a.code, a.balance).order_by(a.id))).all()
        states = (await conn.execute(sa.select(o.state).order_by(o.id))).scalars().all()
    return int(intents), int(entries), [(b.code, b.balance) for b in balances], list(states)


async def pay_on_test_page(shop: Shop, url: str) -> httpx.Response:
    page = await shop.client.get(url)
    assert page.status_code == 200, page.text
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return await shop.client.post(
        url,
        data={
            "card_number": "4242 4242 4242 4242",
            "expiry": "12/30",
            "cvc": "123",
            "csrf_token": token,
        },
    )


async def gift(shop: Shop, amount: int, code: str, **options: Any) -> Any:
    async with read(shop.engine) as conn:
        institution_id = await institution_id_by_code(conn, "ACME")
    return await issue_voucher(
        shop.engine,
        institution_id=institution_id,
        currency="EUR",
        amount=amount,
        now=NOW,
        code=code,
        actor="test",
        **options,
    )


async def test_a_guest_applies_a_voucher_and_pays_the_rest_by_card(mixed: Shop) -> None:
    shop = mixed
    voucher = await gift(shop, 30_000, "GIFT30")
    await gift(shop, 10_000, "OLDGIFT", expires_at=NOW - timedelta(days=1))
    await two_places_for_a_guest(shop)
    pay_page = (await shop.client.get(f"{BASE}/pay?lang=fr")).text
    assert "Un bon d&#39;un montant inférieur" in pay_page or "Un bon d'un montant" in pay_page
    method = method_of(pay_page, "VOUCHER")
    before = await money(shop)

    # refusals are said in the page's language and change nothing
    for code, expected, status in (
        ("NOSUCHGIFT", "error.payment.unknown_account", 404),
        ("OLDGIFT", "error.payment.insufficient_funds", 409),
    ):
        refused = await shop.post(f"{BASE}/pay", {"method": method, "voucher": code})
        assert refused.status_code == status, refused.text
        assert f'role="alert" data-code="{expected}">{html.escape(ERRORS[expected][1])}<' in (
            refused.text
        ), code
        assert await money(shop) == before

    # the voucher is applied: what it pays and what is left are shown, nothing is taken yet
    applied = await shop.post(f"{BASE}/pay", {"method": method, "voucher": "GIFT30"})
    assert applied.status_code == 200, applied.text
    assert 'data-applied="VOUCHER"' in applied.text
    assert 'data-applied-amount="30000"' in applied.text and 'data-rest="70000"' in applied.text
    assert "Reste à payer" in applied.text
    assert await money(shop) == before
    fields = hidden_fields(applied.text, 'method="MIXED"')
    assert fields["part_voucher"] == "GIFT30" and fields["part_amount"] == "30000"

    # a form that does not match the cart any more, or asks for more than it may, is refused
    for changed, expected in (
        ({"total": "90000"}, "error.payment.wrong_total"),
        ({"part_amount": "100000"}, "error.shop.bad_choice"),
        ({"part_amount": "40000"}, "error.payment.insufficient_funds"),
        ({"part_voucher": "NOSUCHGIFT"}, "error.payment.unknown_account"),
        ({"part_method": fields["method"]}, "error.shop.bad_choice"),
    ):
        refused = await shop.post(f"{BASE}/pay", {**fields, **changed})
        assert f'data-code="{expected}"' in refused.text, (changed, refused.text)
        assert 'data-method="VOUCHER"' in refused.text  # back on the payment page
        assert await money(shop) == before, changed

    started = await shop.post(f"{BASE}/pay", fields)
    assert started.status_code == 303 and "/payments/test/" in started.headers["location"]
    intents, _, balances, states = await money(shop)
    assert (intents, dict(balances)[voucher.code], states) == (1, 0, ["RUNNING"])  # held
    card_page = await shop.client.get(started.headers["location"])
    assert "70.00" in card_page.text
    paid = await pay_on_test_page(shop, started.headers["location"])
    assert paid.status_code == 303, paid.text
    confirmation = await shop.client.get(paid.headers["location"])
    assert 'data-order-state="CLOSED"' in confirmation.text
    p = sales_db.payment.c
    async with read(shop.engine) as conn:
        paid_with = (await conn.execute(sa.select(p.amount).order_by(p.amount))).scalars().all()
    assert list(paid_with) == [30_000, 70_000]
    assert dict((await money(shop))[2])[voucher.code] == 0


async def test_a_voucher_covering_the_total_closes_without_a_card(mixed: Shop) -> None:
    shop = mixed
    voucher = await gift(shop, 150_000, "BIGGIFT")
    await two_places_for_a_guest(shop)
    method = method_of((await shop.client.get(f"{BASE}/pay")).text, "VOUCHER")
    paid = await shop.post(f"{BASE}/pay", {"method": method, "voucher": "BIGGIFT"})
    assert paid.status_code == 303 and f"{BASE}/orders/" in paid.headers["location"]
    intents, _, balances, states = await money(shop)
    assert (intents, dict(balances)[voucher.code], states) == (0, 50_000, ["CLOSED"])

    # what is left pays part of the next cart; giving the card up gives it back
    await two_places_for_a_guest(shop)
    method = method_of((await shop.client.get(f"{BASE}/pay")).text, "VOUCHER")
    applied = await shop.post(f"{BASE}/pay", {"method": method, "voucher": "BIGGIFT"})
    assert 'data-applied-amount="50000"' in applied.text and 'data-rest="50000"' in applied.text
    fields = hidden_fields(applied.text, 'method="MIXED"')
    assert (await shop.post(f"{BASE}/pay", fields)).status_code == 303
    assert dict((await money(shop))[2])[voucher.code] == 0  # held while the card is paid
    reopened = await shop.post(f"{BASE}/pay/reopen", {})
    assert reopened.status_code == 303
    assert dict((await money(shop))[2])[voucher.code] == 50_000
    started = await shop.post(f"{BASE}/pay", fields)
    assert (await pay_on_test_page(shop, started.headers["location"])).status_code == 303
    assert (await money(shop))[3] == ["CLOSED", "CLOSED"]

    # spent to the last cent: the exhausted voucher is refused, nothing changes
    await two_places_for_a_guest(shop)
    before = await money(shop)
    spent = await shop.post(f"{BASE}/pay", {"method": method, "voucher": "BIGGIFT"})
    assert spent.status_code == 409
    assert 'role="alert" data-code="error.payment.insufficient_funds"' in spent.text
    assert await money(shop) == before


def cash_shop() -> dict[str, Any]:
    """The ACME shop with cash configured on its point of sale beside the card."""
    document = acme_shop()
    document["paymentMethods"].append({"code": "CASH", "name": text("Cash"), "type": "CASH"})
    document["salesChannels"][0]["pointsOfSale"][0]["paymentMethods"] = ["CARD", "CASH"]
    return document


async def test_a_shop_neither_offers_nor_takes_cash_configured_on_its_point_of_sale(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    async for shop in open_shop(scratch_engine, backend, tmp_path, document=cash_shop()):
        await two_places_for_a_guest(shop)
        page = (await shop.client.get(f"{BASE}/pay")).text
        assert 'data-method="CARD"' in page and 'data-method="CASH"' not in page
        m = catalog_db.payment_method.c
        async with read(shop.engine) as conn:
            cash = (await conn.execute(sa.select(m.id).where(m.code == "CASH"))).scalar_one()
        before = await money(shop)
        refused = await shop.post(f"{BASE}/pay", {"method": str(cash)})
        assert refused.status_code == 400, refused.text
        assert 'role="alert" data-code="error.shop.bad_choice"' in refused.text
        assert await money(shop) == before
        assert before[3] == ["RUNNING"]
        # the card still pays
        started = await shop.post(f"{BASE}/pay", {"method": method_of(page, "CARD")})
        assert (await pay_on_test_page(shop, started.headers["location"])).status_code == 303
        assert (await money(shop))[3] == ["CLOSED"]


async def a_contact_with_credit(shop: Shop, amount: int) -> str:
    """Grace registers (and is signed in); ``amount`` is put on her credit balance. Her number."""
    registered = await post_form(
        shop.client,
        f"{BASE}/account/register",
        {
            "email": "grace@example.org",
            "password": "cobol compiler 59",
            "firstName": "Grace",
            "lastName": "Hopper",
        },
    )
    assert registered.status_code == 303, registered.text
    c = contacts_db.contact.c
    async with read(shop.engine) as conn:
        institution_id = await institution_id_by_code(conn, "ACME")
        number = (
            await conn.execute(sa.select(c.id).where(c.email == "grace@example.org"))
        ).scalar_one()
    await add_credit(
        shop.engine,
        institution_id=institution_id,
        contact_number=str(number),
        currency="EUR",
        amount=amount,
        description="goodwill",
        now=NOW,
        actor="test",
    )
    return str(number)


async def places(shop: Shop, quantity: int) -> None:
    """``quantity`` places at 50.00 in the cart."""
    first = shop.performance(0)
    cat = first["seatCategories"][0]["id"]
    tariff = shop.catalog["seasons"][0]["audienceCategories"][0]["audienceSubCategories"][0]["id"]
    added = await shop.post(
        f"{BASE}/cart/add",
        {"kind": "best", "performance": str(first["id"]), f"q_{cat}_{tariff}": str(quantity)},
    )
    assert added.status_code == 303, added.text


async def test_a_contact_uses_their_credit_balance_and_pays_the_rest_by_card(mixed: Shop) -> None:
    shop = mixed
    number = await a_contact_with_credit(shop, 25_000)
    await places(shop, 2)
    checkout = await shop.client.get(f"{BASE}/checkout")
    assert checkout.headers["location"] == f"{BASE}/pay"
    pay_page = (await shop.client.get(f"{BASE}/pay")).text
    assert 'data-credit-balance="25000"' in pay_page
    assert "Use my credit balance, pay the rest by card" in pay_page
    before = await money(shop)
    applied = await shop.post(f"{BASE}/pay", {"method": method_of(pay_page, "CREDIT")})
    assert applied.status_code == 200, applied.text
    assert 'data-applied="CREDIT"' in applied.text
    assert 'data-applied-amount="25000"' in applied.text and 'data-rest="75000"' in applied.text
    assert await money(shop) == before
    started = await shop.post(f"{BASE}/pay", hidden_fields(applied.text, 'method="MIXED"'))
    assert started.status_code == 303 and "/payments/test/" in started.headers["location"]
    assert dict((await money(shop))[2])[str(number)] == 0
    paid = await pay_on_test_page(shop, started.headers["location"])
    assert paid.status_code == 303, paid.text
    assert 'data-order-state="CLOSED"' in (await shop.client.get(paid.headers["location"])).text
    assert (await money(shop))[3] == ["CLOSED"]
    # nothing left: the balance is refused with a clear message, nothing changes
    await places(shop, 1)
    before = await money(shop)
    empty = await shop.post(f"{BASE}/pay", {"method": method_of(pay_page, "CREDIT")})
    assert 'data-code="error.payment.insufficient_funds"' in empty.text
    assert await money(shop) == before


# --- vouchers and the credit balance together ------------------------------------------------


async def apply(shop: Shop, page: str, form: str, **more: str) -> httpx.Response:
    """Send the payment page's form marked ``data-<form>`` with its hidden fields (the parts
    applied so far among them) and ``more``."""
    return await shop.post(f"{BASE}/pay", {**hidden_fields(page, form), **more})


def parts_shown(page: str) -> list[tuple[str, str | None, int]]:
    """The applied parts the payment page lists: method, voucher code, amount."""
    return [
        (kind, code or None, int(amount))
        for kind, code, amount in re.findall(
            r'<li data-applied="(\w+)"(?: data-voucher="([^"]*)")?>.*?data-applied-amount="(\d+)"',
            page,
            re.S,
        )
    ]


def rest_shown(page: str) -> int:
    found = re.search(r'data-rest="(\d+)"', page)
    assert found is not None, page
    return int(found[1])


async def ledger_of(shop: Shop, code: str) -> list[tuple[str, int]]:
    a, e = sales_db.account.c, sales_db.account_entry.c
    async with read(shop.engine) as conn:
        rows = (
            await conn.execute(
                sa.select(e.kind, e.amount)
                .join(sales_db.account, a.id == e.account_id)
                .where(a.code == code)
                .order_by(e.id)
            )
        ).all()
    return [(r.kind, r.amount) for r in rows]


async def payments_of_orders(shop: Shop) -> list[tuple[str, int]]:
    p = sales_db.payment.c
    async with read(shop.engine) as conn:
        rows = (await conn.execute(sa.select(p.payment_type, p.amount).order_by(p.id))).all()
    return sorted((r.payment_type, r.amount) for r in rows)


async def test_a_contact_combines_a_voucher_and_their_credit_balance_and_pays_the_rest_by_card(
    mixed: Shop,
) -> None:
    shop = mixed
    number = await a_contact_with_credit(shop, 25_000)
    await gift(shop, 30_000, "GIFT30")
    await places(shop, 2)  # 100.00
    pay_page = (await shop.client.get(f"{BASE}/pay")).text
    before = await money(shop)

    # the voucher first: the balance and another voucher are still offered beside the card
    voucher = await apply(shop, pay_page, 'method="VOUCHER"', voucher="GIFT30")
    assert voucher.status_code == 200, voucher.text
    assert parts_shown(voucher.text) == [("VOUCHER", "GIFT30", 30_000)]
    assert rest_shown(voucher.text) == 70_000
    assert 'data-method="CREDIT"' in voucher.text and 'data-method="VOUCHER"' in voucher.text
    assert 'data-method="MIXED"' in voucher.text and 'data-method="CARD"' not in voucher.text
    # then the balance: every part is shown, the balance is no longer offered
    both = await apply(shop, voucher.text, 'method="CREDIT"')
    assert both.status_code == 200, both.text
    assert parts_shown(both.text) == [("VOUCHER", "GIFT30", 30_000), ("CREDIT", None, 25_000)]
    assert rest_shown(both.text) == 45_000
    assert 'data-method="CREDIT"' not in both.text and 'data-method="VOUCHER"' in both.text
    assert "Apply another gift voucher" in both.text
    # a part removed is just left out of the page; applied again, it comes last
    removed = await apply(shop, both.text, 'remove="0"')
    assert removed.status_code == 200, removed.text
    assert parts_shown(removed.text) == [("CREDIT", None, 25_000)]
    assert rest_shown(removed.text) == 75_000
    again = await apply(shop, removed.text, 'method="VOUCHER"', voucher="GIFT30")
    assert parts_shown(again.text) == [("CREDIT", None, 25_000), ("VOUCHER", "GIFT30", 30_000)]
    assert await money(shop) == before  # nothing taken before the payment

    fields = hidden_fields(again.text, 'method="MIXED"')
    assert fields["part_amount"] == ["25000", "30000"] and fields["total"] == "100000"
    started = await shop.post(f"{BASE}/pay", fields)
    assert started.status_code == 303 and "/payments/test/" in started.headers["location"]
    intents, _, balances, states = await money(shop)
    assert (intents, dict(balances), states) == (1, {number: 0, "GIFT30": 0}, ["RUNNING"])
    assert "45.00" in (await shop.client.get(started.headers["location"])).text
    paid = await pay_on_test_page(shop, started.headers["location"])
    assert paid.status_code == 303, paid.text
    assert 'data-order-state="CLOSED"' in (await shop.client.get(paid.headers["location"])).text
    assert await payments_of_orders(shop) == [
        ("CARD", 45_000),
        ("CREDIT", 25_000),
        ("VOUCHER", 30_000),
    ]
    assert dict((await money(shop))[2]) == {number: 0, "GIFT30": 0}
    # each part debited once, when it was held
    assert await ledger_of(shop, "GIFT30") == [("CREDIT", 30_000), ("DEBIT", 30_000)]
    assert await ledger_of(shop, number) == [("CREDIT", 25_000), ("DEBIT", 25_000)]


async def test_two_vouchers_covering_the_total_close_the_order_without_a_card(
    mixed: Shop,
) -> None:
    shop = mixed
    await gift(shop, 60_000, "GIFT60")
    await gift(shop, 70_000, "GIFT70")
    await two_places_for_a_guest(shop)  # 100.00
    pay_page = (await shop.client.get(f"{BASE}/pay")).text
    assert 'data-method="CREDIT"' not in pay_page  # a guest has no balance
    first = await apply(shop, pay_page, 'method="VOUCHER"', voucher="GIFT60")
    assert parts_shown(first.text) == [("VOUCHER", "GIFT60", 60_000)]
    assert rest_shown(first.text) == 40_000
    # the second voucher pays only what is left, and the order is closed
    paid = await apply(shop, first.text, 'method="VOUCHER"', voucher="GIFT70")
    assert paid.status_code == 303 and f"{BASE}/orders/" in paid.headers["location"], paid.text
    intents, _, balances, states = await money(shop)
    assert (intents, dict(balances), states) == (
        0,
        {"GIFT60": 0, "GIFT70": 30_000},
        ["CLOSED"],
    )
    assert await payments_of_orders(shop) == [("VOUCHER", 40_000), ("VOUCHER", 60_000)]
    assert await ledger_of(shop, "GIFT70") == [("CREDIT", 70_000), ("DEBIT", 40_000)]
    assert 'data-order-state="CLOSED"' in (await shop.client.get(paid.headers["location"])).text


async def test_the_same_voucher_cannot_be_applied_twice(mixed: Shop) -> None:
    shop = mixed
    await a_contact_with_credit(shop, 10_000)
    await gift(shop, 30_000, "GIFT30")
    await places(shop, 2)
    pay_page = (await shop.client.get(f"{BASE}/pay?lang=fr")).text
    applied = await apply(shop, pay_page, 'method="VOUCHER"', voucher="GIFT30")
    before = await money(shop)
    twice = await apply(shop, applied.text, 'method="VOUCHER"', voucher=" GIFT30 ")
    assert twice.status_code == 409, twice.text
    said = html.escape(ERRORS["error.shop.applied_twice"][1])
    assert f'role="alert" data-code="error.shop.applied_twice">{said}<' in twice.text
    assert parts_shown(twice.text) == [("VOUCHER", "GIFT30", 30_000)]  # still applied once
    assert await money(shop) == before
    # nor may a form carry it twice, or the balance twice
    fields = hidden_fields(applied.text, 'method="MIXED"')
    with_balance = await apply(shop, applied.text, 'method="CREDIT"')
    balance_fields = hidden_fields(with_balance.text, 'method="MIXED"')
    for doubled in (
        {"part_method": [fields["part_method"]] * 2, "part_amount": ["15000", "15000"]},
        {
            "part_method": [*balance_fields["part_method"], balance_fields["part_method"][1]],
            "part_amount": ["30000", "5000", "5000"],
            "part_voucher": ["GIFT30", "", ""],
        },
    ):
        data = {**fields, "part_voucher": [fields["part_voucher"]] * 2, **doubled}
        refused = await shop.post(f"{BASE}/pay", data)
        assert refused.status_code == 409, refused.text
        assert 'data-code="error.shop.applied_twice"' in refused.text
        assert 'id="applied"' not in refused.text  # back on the payment page, nothing applied
        assert await money(shop) == before


async def test_a_tampered_part_is_refused_and_changes_nothing(mixed: Shop) -> None:
    shop = mixed
    await gift(shop, 30_000, "GIFT30")
    await gift(shop, 20_000, "GIFT20")
    await gift(shop, 90_000, "GIFT90")
    await two_places_for_a_guest(shop)  # 100.00
    pay_page = (await shop.client.get(f"{BASE}/pay")).text
    first = await apply(shop, pay_page, 'method="VOUCHER"', voucher="GIFT30")
    both = await apply(shop, first.text, 'method="VOUCHER"', voucher="GIFT20")
    assert parts_shown(both.text) == [("VOUCHER", "GIFT30", 30_000), ("VOUCHER", "GIFT20", 20_000)]
    fields = hidden_fields(both.text, 'method="MIXED"')
    voucher, card_id = fields["part_method"][0], fields["method"]
    before = await money(shop)
    for changed, expected, status in (
        # over what the second voucher has (the sum still under the total)
        ({"part_amount": ["30000", "25000"]}, "error.payment.insufficient_funds", 409),
        # the parts add up to the total or more: no card left to pay
        ({"part_amount": ["30000", "70000"]}, "error.shop.bad_choice", 400),
        ({"part_amount": ["30000", "0"]}, "error.shop.bad_choice", 400),
        ({"part_amount": ["30000", "-5"]}, "error.shop.bad_choice", 400),
        ({"part_amount": ["30000"]}, "error.shop.bad_choice", 400),
        ({"total": "90000"}, "error.payment.wrong_total", 409),
        ({"total": ""}, "error.shop.bad_choice", 400),
        ({"part_method": [voucher, card_id]}, "error.shop.bad_choice", 400),
        ({"part_method": [voucher, "999999"]}, "error.shop.bad_choice", 400),
        ({"part_voucher": ["GIFT30", "NOSUCHGIFT"]}, "error.payment.unknown_account", 404),
        ({"part_voucher": ["GIFT30", ""]}, "error.shop.bad_choice", 400),
    ):
        for step in ({}, {"method": voucher, "voucher": "GIFT90"}, {"remove": "0"}):
            refused = await shop.post(f"{BASE}/pay", {**fields, **changed, **step})
            assert refused.status_code == status, (changed, step, refused.text)
            assert f'role="alert" data-code="{expected}"' in refused.text, (changed, step)
            assert 'data-method="VOUCHER"' in refused.text and 'id="applied"' not in refused.text
            assert await money(shop) == before, (changed, step)
    # the balance without signing in
    m = catalog_db.payment_method.c
    async with read(shop.engine) as conn:
        credit = (await conn.execute(sa.select(m.id).where(m.code == "CREDIT"))).scalar_one()
    signed_out = await shop.post(f"{BASE}/pay", {**fields, "part_method": [voucher, str(credit)]})
    assert signed_out.status_code == 401, signed_out.text
    assert 'role="alert" data-code="error.shop.sign_in_required"' in signed_out.text
    assert await money(shop) == before
    # the untouched form still pays
    started = await shop.post(f"{BASE}/pay", fields)
    assert started.status_code == 303 and "/payments/test/" in started.headers["location"]


async def test_giving_up_a_card_payment_with_several_parts_gives_every_part_back(
    mixed: Shop,
) -> None:
    shop = mixed
    number = await a_contact_with_credit(shop, 25_000)
    await gift(shop, 30_000, "GIFT30")
    await gift(shop, 20_000, "GIFT20")
    await places(shop, 2)  # 100.00
    page = (await shop.client.get(f"{BASE}/pay")).text
    for form, more in (
        ('method="VOUCHER"', {"voucher": "GIFT30"}),
        ('method="CREDIT"', {}),
        ('method="VOUCHER"', {"voucher": "GIFT20"}),
    ):
        page = (await apply(shop, page, form, **more)).text
    assert parts_shown(page) == [
        ("VOUCHER", "GIFT30", 30_000),
        ("CREDIT", None, 25_000),
        ("VOUCHER", "GIFT20", 20_000),
    ]
    assert rest_shown(page) == 25_000
    fields = hidden_fields(page, 'method="MIXED"')
    full = {number: 25_000, "GIFT30": 30_000, "GIFT20": 20_000}
    empty = dict.fromkeys(full, 0)
    started = await shop.post(f"{BASE}/pay", fields)
    assert started.status_code == 303, started.text
    assert dict((await money(shop))[2]) == empty  # every part held
    # the buyer comes back and gives the card up: every part is given back
    reopened = await shop.post(f"{BASE}/pay/reopen", {})
    assert reopened.status_code == 303
    assert dict((await money(shop))[2]) == full
    for code, amount in full.items():
        assert (await ledger_of(shop, code))[1:] == [("DEBIT", amount), ("CREDIT", amount)]
    # held again, then the cart expires: every part is given back again
    again = await shop.post(f"{BASE}/pay", fields)
    assert again.status_code == 303, again.text
    assert dict((await money(shop))[2]) == empty
    assert await abandon_expired_orders(shop.engine, NOW + timedelta(minutes=36)) == 1
    intents, _, balances, states = await money(shop)
    assert (intents, dict(balances), states) == (2, full, ["ABANDONNED"])
    for code, amount in full.items():
        assert (await ledger_of(shop, code))[1:] == [("DEBIT", amount), ("CREDIT", amount)] * 2
