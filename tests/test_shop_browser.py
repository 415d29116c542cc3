"""The ticket shop in Debian's chromium: from the website's "book" link to a PDF ticket whose
QR code decodes to the ticket's signed barcode; seats chosen on the map; the cart expiring;
registration through the redirect API with a callback to the website, which then reads the
contact and cart-summary cookies on its sibling host; a partner's order paid in the shop
(partial integration). The sales and database sides are covered on both databases elsewhere,
so this runs on SQLite only. ``BILLETTERIE_SCREENSHOTS=docs/shop`` also saves screenshots."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from billetterie.sales import queries
from billetterie.shared.db import read
from tests.conftest import NOW, SECRET, Backend
from tests.shop_support import World, shop_world
from tests.test_pdf import decoded_qr, pages

SHOTS = os.environ.get("BILLETTERIE_SCREENSHOTS")


@pytest.fixture(scope="module")
async def world(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    if backend.name != "sqlite":
        pytest.skip("browser test: the HTTP tests cover both databases")
    async with shop_world(backend, tmp_path_factory.mktemp("shop")) as w:
        yield w


async def shot(page: Any, name: str) -> None:
    if SHOTS:
        await page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


async def pay_by_card(page: Any) -> None:
    await page.click("#pay-card")
    await page.wait_for_selector("input[name=card_number]")
    await shot(page, "6-card-page")
    await page.fill("input[name=card_number]", "4242 4242 4242 4242")
    await page.fill("input[name=expiry]", "12/30")
    await page.fill("input[name=cvc]", "123")
    await page.click("#pay")
    await page.wait_for_url(re.compile(r"/shop/WEBSHOP/orders/"))


async def barcodes_of(world: World, secret: str) -> list[str]:
    async with read(world.engine) as conn:
        order = await queries.order_by_public_secret(conn, secret)
        document = await queries.order_document(conn, order)
    return sorted(
        mv["ticket"]["barcode"] for op in document["operations"] for mv in op["movements"]
    )


async def test_from_a_product_link_to_a_ticket_whose_qr_decodes(world: World) -> None:
    context = await world.context()
    page = await context.new_page()
    await page.goto(f"{world.shop}/shop/WEBSHOP")
    await shot(page, "1-catalog")
    await page.goto(f"{world.shop}/api/1/redirect/product?code=HAMLET&lang=en")
    await page.wait_for_url(f"{world.shop}/shop/WEBSHOP/products/1?lang=en")
    assert await page.title() == "Hamlet · Demo web shop"
    await shot(page, "2-product")
    await page.click('tr[data-performance="1"] a.button')
    await page.wait_for_url(f"{world.shop}/shop/WEBSHOP/performances/1")
    await page.fill("#q_1_1", "2")
    await page.click("#best-form button[type=submit]")
    await page.wait_for_url(f"{world.shop}/shop/WEBSHOP/cart")
    await shot(page, "4-cart")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    assert await page.locator("tr[data-movement]").count() == 2
    assert await page.get_attribute("[data-total]", "data-total") == "96000"
    left = int(await page.get_attribute(".countdown", "data-seconds-left") or 0)
    assert 19 * 60 < left <= 20 * 60  # orderAbandonDelay: 20 minutes
    await page.click("#checkout")
    await page.fill("#guest-form input[name=firstName]", "Grace")
    await page.fill("#guest-form input[name=lastName]", "Hopper")
    await page.fill("#guest-form input[name=email]", "grace@example.org")
    await page.click("#guest-form button[type=submit]")
    await page.wait_for_url(f"{world.shop}/shop/WEBSHOP/pay")
    await shot(page, "5-payment")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await pay_by_card(page)
    assert await page.get_attribute("[data-order-state]", "data-order-state") == "CLOSED"
    await shot(page, "7-confirmation")
    href = await page.get_attribute("#tickets-pdf", "href")
    assert href is not None
    # the link is the order's secret: the buyer may open it anywhere (here from the test)
    async with httpx.AsyncClient(base_url=world.api) as client:
        response = await client.get(href)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    secret = href.split("/")[4]
    expected = await barcodes_of(world, secret)
    rendered = pages(response.content)
    assert len(rendered) == 2
    decoded = sorted(code for p in rendered for code in decoded_qr(p))
    assert decoded == expected
    # the cart is paid: the website's cart summary is gone
    names = {c["name"] for c in await context.cookies()}
    assert "stx_cartSummary_DEMO_WEB" not in names
    await context.close()


async def test_the_product_page_shows_its_images_with_their_texts(world: World) -> None:
    context = await world.context()
    page = await context.new_page()
    await page.goto(f"{world.shop}/shop/WEBSHOP/products/1?lang=de")
    images = page.locator(".media img")
    assert await images.count() == 2
    assert await images.nth(0).get_attribute("alt") == (
        "Die Bühne des Demo-Theaters: rote Vorhänge, ein Schauspieler allein im Scheinwerferlicht"
    )
    assert await images.nth(1).get_attribute("alt") == (
        "Yoricks Schädel, elfenbeinfarben auf dunkelblauem Grund"
    )
    for i in range(2):
        await images.nth(i).scroll_into_view_if_needed()
        await page.wait_for_function(
            "(img) => img.complete && img.naturalWidth > 0",
            arg=await images.nth(i).element_handle(),
        )
        box = await images.nth(i).bounding_box()
        assert box is not None and 0 < box["width"] <= 390
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await context.close()


async def test_seats_chosen_on_the_map_are_the_seats_held(world: World) -> None:
    context = await world.context()
    page = await context.new_page()
    await page.goto(f"{world.shop}/shop/WEBSHOP/performances/2?lang=fr")
    await shot(page, "3-seat-map")
    # mobile first: nothing is wider than the phone's screen
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    free = page.locator("svg.seatmap .seat[data-state=FREE]")
    chosen = [await free.nth(i).get_attribute("data-id") for i in (40, 41)]
    labels = [await free.nth(i).get_attribute("aria-label") for i in (40, 41)]
    assert await page.is_disabled("#seat-form button[type=submit]")
    await free.nth(40).click()
    await free.nth(41).focus()
    await page.keyboard.press("Enter")
    assert await page.inner_text("[data-selected]") == ", ".join(str(x) for x in labels)
    await page.click("#seat-form button[type=submit]")
    await page.wait_for_url(f"{world.shop}/shop/WEBSHOP/cart")
    assert await page.locator("tr[data-movement]").count() == 2
    await page.goto(f"{world.shop}/shop/WEBSHOP/performances/2")
    for seat in chosen:
        state = await page.get_attribute(f'.seat[data-id="{seat}"]', "data-state")
        assert state == "HELD"
    await context.close()


async def test_the_cart_expires(world: World) -> None:
    context = await world.context()
    page = await context.new_page()
    await page.goto(f"{world.shop}/shop/WEBSHOP/performances/3")
    await page.fill("#q_2_2", "1")
    await page.click("#best-form button[type=submit]")
    await page.wait_for_url(f"{world.shop}/shop/WEBSHOP/cart")
    summary = {c["name"]: c for c in await context.cookies()}["stx_cartSummary_DEMO_WEB"]
    assert summary["domain"] == ".demo.test" and summary["path"] == "/"
    assert re.fullmatch(r"1\|\d+\.\d\d\|EUR\|2026-11-23T12:20:00Z\|\d+", summary["value"])
    world.clock.set(NOW + timedelta(minutes=21))
    try:
        await page.reload()
        alert = page.locator('[role=alert][data-code="error.order.expired"]')
        assert await alert.is_visible()
        assert await page.locator("tr[data-movement]").count() == 0
        names = {c["name"] for c in await context.cookies()}
        assert "stx_cartSummary_DEMO_WEB" not in names
    finally:
        world.clock.set(NOW)
    await context.close()


async def test_register_through_the_redirect_then_the_website_reads_both_cookies(
    world: World,
) -> None:
    context = await world.context()
    page = await context.new_page()
    callback = f"{world.website}/welcome"
    await page.goto(
        f"{world.shop}/api/1/redirect/account/register?callbackUrl={quote(callback)}"
        "&lang=fr&showCriteria=0&showAddress=false&showAuthorization=1"
    )
    assert await page.locator('input[name="criteria"]').count() == 0
    assert await page.locator('input[name="city"]').count() == 0
    assert await page.locator('input[name="authorizations"]').count() == 2
    await page.fill('input[name="email"]', "ada@example.org")
    await page.fill('input[name="password"]', "correct horse 42")
    await page.fill('input[name="firstName"]', "Ada")
    await page.fill('input[name="lastName"]', "Lovelace")
    await page.click('button[type="submit"]')
    await page.wait_for_url(callback)

    # a visit pass in a time slot, then back on the website
    await page.goto(f"{world.shop}/shop/WEBSHOP/products/3")
    form = page.locator('form[data-item="ADMISSION"]')
    await form.locator("select[name=timeslot]").select_option(index=0)
    await form.locator("#q_1").fill("1")
    await form.locator("button[type=submit]").click()
    await page.wait_for_url(f"{world.shop}/shop/WEBSHOP/cart")
    await page.goto(f"{world.website}/")
    assert '"individualFirstname":"Ada"' in (await page.inner_text("#contact")).replace(" ", "")
    assert re.fullmatch(
        r"1\|14\.00\|EUR\|2026-11-23T12:20:00Z\|\d+", await page.inner_text("#cart")
    )
    # a callback to a host the point of sale does not register, and a bad flag, are refused
    for query, code in (
        ("callbackUrl=https%3A%2F%2Fevil.example%2F", "error.account.bad_return_url"),
        ("showAddress=maybe", "error.shop.bad_flag"),
    ):
        await page.goto(f"{world.shop}/api/1/redirect/account/register?{query}")
        assert await page.get_attribute("[role=alert]", "data-code") == code
    await context.close()


async def test_a_partners_order_is_paid_in_the_shop(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.api) as client:
        auth = await client.post(
            "/tnai/backend-apis/v1/auth",
            json={"operator": "DEMO_B2C", "partner": "demo-website", "secret": SECRET},
        )
        token = auth.json()["token"]
        created = await client.post(
            "/tnseb/backend-apis/externalOrderFacade/v1_33/createOrUpdateOrder",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "singleEntryAttributionOperations": [
                    {
                        "operationAttributions": [
                            {
                                "performanceId": 4,
                                "seatCategoryId": 2,
                                "audienceSubCategoryId": 1,
                                "quantity": 1,
                            }
                        ]
                    }
                ]
            },
        )
    order = created.json()["orderUpdateData"]
    context = await world.context()
    page = await context.new_page()
    await page.goto(f"{world.shop}/api/1/redirect/cart?orderSecretId={order['orderSecretId']}")
    await page.wait_for_url(f"{world.shop}/shop/WEBSHOP/checkout?lang=en")
    summary = {c["name"]: c["value"] for c in await context.cookies()}["stx_cartSummary_DEMO_WEB"]
    assert summary.endswith(f"|{order['orderId']}")
    await page.click("#register")
    await page.fill('input[name="email"]', "alan@example.org")
    await page.fill('input[name="password"]', "enigma machine 1")
    await page.fill('input[name="firstName"]', "Alan")
    await page.fill('input[name="lastName"]', "Turing")
    await page.click('button[type="submit"]')
    await page.wait_for_url(f"{world.shop}/shop/WEBSHOP/pay")
    assert "Alan Turing" in await page.inner_text("[data-buyer]")
    await pay_by_card(page)
    assert await page.get_attribute("[data-order-state]", "data-order-state") == "CLOSED"
    async with read(world.engine) as conn:
        paid = await queries.order_by_public_secret(conn, order["orderSecretId"])
    assert paid.state == "CLOSED" and paid.contact_number is not None
    await page.goto(f"{world.shop}/shop/WEBSHOP/account/tickets")
    assert await page.locator("tr[data-ticket]").count() == 1
    await context.close()


async def test_links_land_only_on_what_is_for_sale_and_forms_need_their_token(
    world: World,
) -> None:
    async with httpx.AsyncClient(base_url=world.api) as client:
        unknown = await client.get("/api/1/redirect/product?id=999")
        assert (
            unknown.status_code == 404 and 'data-code="error.shop.unknown_product"' in unknown.text
        )
        garbage = await client.get("/api/1/redirect/product/performance?id=%00")
        assert garbage.status_code == 404
        booked = await client.get("/api/1/redirect/product?id=1&lang=de")
        assert booked.status_code == 303
        assert booked.headers["location"] == "/shop/WEBSHOP/products/1?lang=de"
        forged = await client.post(
            "/shop/WEBSHOP/cart/add", data={"kind": "best", "performance": "1", "q_1_1": "2"}
        )
        assert forged.status_code == 403 and 'data-code="error.account.csrf"' in forged.text
        static = await client.get("/shop/WEBSHOP/pages/termsOfSale?lang=fr")
        assert static.headers["location"] == "https://www.demo-arts.example/fr/terms-of-sale"
        for path in ("", "/search?q=hamlet", "/products/3", "/products/5", "/cart"):
            assert (await client.get(f"/shop/WEBSHOP{path}")).status_code == 200, path


async def test_a_guest_pays_with_a_gift_voucher(world: World) -> None:
    from billetterie.catalog.services import institution_id_by_code
    from billetterie.sales.accounts import find_account, issue_voucher
    from billetterie.sales.models import AccountKind

    async with read(world.engine) as conn:
        institution_id = await institution_id_by_code(conn, "DEMO")
    voucher = await issue_voucher(
        world.engine,
        institution_id=institution_id,
        currency="EUR",
        amount=50_000,
        now=NOW,
        code="SHOPGIFT1",
        actor="test",
    )
    async with httpx.AsyncClient(base_url=world.api) as client:
        performance = await client.get("/shop/WEBSHOP/performances/5")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', performance.text)
        assert csrf is not None
        token = {"csrf_token": csrf[1]}
        added = await client.post(
            "/shop/WEBSHOP/cart/add",
            data={**token, "kind": "best", "performance": "5", "q_3_1": "1"},
        )
        assert added.headers["location"] == "/shop/WEBSHOP/cart"
        await client.post(
            "/shop/WEBSHOP/checkout/guest",
            data={**token, "firstName": "Ada", "lastName": "L", "email": "ada@example.org"},
        )
        pay_page = await client.get("/shop/WEBSHOP/pay")
        method = re.search(
            r'data-method="VOUCHER">\s*<input[^>]*>\s*<input[^>]*value="(\d+)"', pay_page.text
        )
        assert method is not None
        wrong = await client.post(
            "/shop/WEBSHOP/pay", data={**token, "method": method[1], "voucher": "NOSUCHGIFT"}
        )
        assert wrong.status_code >= 400 and 'role="alert" data-code="error.payment.' in wrong.text
        paid = await client.post(
            "/shop/WEBSHOP/pay", data={**token, "method": method[1], "voucher": "SHOPGIFT1"}
        )
        assert paid.status_code == 303
        secret = paid.headers["location"].rsplit("/", 1)[1]
        confirmation = await client.get(f"/shop/WEBSHOP/orders/{secret}")
        assert 'data-order-state="CLOSED"' in confirmation.text
    async with read(world.engine) as conn:
        order = await queries.order_by_public_secret(conn, secret)
        after = await find_account(conn, institution_id, AccountKind.VOUCHER, voucher.code)
    assert order.state == "CLOSED" and order.total == 24_000
    assert after is not None and after.balance == 50_000 - 24_000


async def test_a_stadium_map_shows_its_blocks_then_one_blocks_seats(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.api) as client:
        overview = await client.get("/shop/WEBSHOP/performances/11")
        blocks = re.findall(r'data-block="(\d+)" class="(open|full)"', overview.text)
        assert len(blocks) > 1 and 'class="seat"' not in overview.text
        one = await client.get(f"/shop/WEBSHOP/performances/11?block={blocks[0][0]}")
        seats = re.findall(r'class="seat"[^>]*data-id="(\d+)"', one.text)
    assert 0 < len(seats) <= 1500
    from billetterie.catalog.services import institution_id_by_code
    from billetterie.inventory.queries import seat_map

    async with read(world.engine) as conn:
        everything = await seat_map(
            conn,
            institution_id=await institution_id_by_code(conn, "DEMO"),
            performance_id=11,
            contingents=set(),
            now=NOW,
        )
    in_block = {str(s["id"]) for s in everything if str(s["blockId"]) == blocks[0][0]}
    assert set(seats) == in_block

    # in the browser the block opens in place (its seats fetched), and its seats are bought
    context = await world.context()
    page = await context.new_page()
    await page.goto(f"{world.shop}/shop/WEBSHOP/performances/11")
    block = blocks[1][0]
    label = await page.get_attribute(f'a[data-fragment$="/blocks/{block}"]', "aria-label")
    assert label is not None and label.endswith(" free")
    free_before = int(label.split(": ")[1].split()[0])
    await page.click(f'rect[data-block="{block}"]')
    await page.wait_for_selector("#block-seats svg.seatmap")
    assert page.url.endswith(f"/shop/WEBSHOP/performances/11?block={block}")
    assert await page.get_attribute(f'a[data-fragment$="/blocks/{block}"]', "aria-current")
    await shot(page, "8-stadium-block")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    free = page.locator("#block-seats .seat[data-state=FREE]")
    chosen = [await free.nth(i).get_attribute("data-id") for i in (0, 1)]
    await free.nth(0).click()
    await free.nth(1).focus()
    await page.keyboard.press("Enter")
    await page.click("#seat-form button[type=submit]")
    await page.wait_for_url(f"{world.shop}/shop/WEBSHOP/cart")
    assert await page.locator("tr[data-movement]").count() == 2
    async with read(world.engine) as conn:
        after = await seat_map(
            conn,
            institution_id=await institution_id_by_code(conn, "DEMO"),
            performance_id=11,
            contingents=set(),
            block_ids=[int(block)],
            now=NOW,
        )
    held = {str(s["id"]) for s in after if s["state"] == "HELD"}
    assert held == set(chosen)
    await page.goto(f"{world.shop}/shop/WEBSHOP/performances/11")
    label = await page.get_attribute(f'a[data-fragment$="/blocks/{block}"]', "aria-label")
    assert label is not None and int(label.split(": ")[1].split()[0]) == free_before - 2
    await context.close()
