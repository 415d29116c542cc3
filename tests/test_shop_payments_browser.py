"""Paying in the shop in Debian's chromium, beyond the card and voucher journeys of
tests/test_shop_browser.py: a signed-in contact pays with their credit balance (the balance goes
down, the PDF's QR codes decode to the tickets' barcodes), and a buyer who left the test card
page gives the pending card payment up from the shop and pays another way, then pays the next
cart with what is left on the voucher and the rest by card, and a contact applies a voucher,
then their credit balance, and pays the rest by card. SQLite only, as the other browser
tests."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from billetterie.catalog.services import institution_id_by_code
from billetterie.contacts import db as contacts_db
from billetterie.payments import db as payments_db
from billetterie.sales import queries
from billetterie.sales.accounts import add_credit, find_account, issue_voucher
from billetterie.sales.models import AccountKind
from billetterie.shared.db import read
from tests.conftest import NOW, Backend
from tests.shop_support import World, shop_world
from tests.test_pdf import decoded_qr, pages
from tests.test_shop_browser import barcodes_of, shot

SHOP = "/shop/WEBSHOP"


@pytest.fixture(scope="module")
async def world(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    if backend.name != "sqlite":
        pytest.skip("browser test: the HTTP tests cover both databases")
    async with shop_world(backend, tmp_path_factory.mktemp("shop")) as w:
        yield w


async def institution(world: World) -> int:
    async with read(world.engine) as conn:
        return await institution_id_by_code(conn, "DEMO")


async def one_place_in_the_cart(world: World, page: Any) -> None:
    await page.goto(f"{world.shop}{SHOP}/performances/5")
    await page.fill("#q_3_1", "1")
    await page.click("#best-form button[type=submit]")
    await page.wait_for_url(f"{world.shop}{SHOP}/cart")


async def check_out_as_a_guest(world: World, page: Any) -> None:
    """From the cart to the payment page, as a guest."""
    await page.click("#checkout")
    await page.fill("#guest-form input[name=firstName]", "Edsger")
    await page.fill("#guest-form input[name=lastName]", "Dijkstra")
    await page.fill("#guest-form input[name=email]", "edsger@example.org")
    await page.click("#guest-form button[type=submit]")
    await page.wait_for_url(f"{world.shop}{SHOP}/pay")


async def pay_the_rest_by_card(world: World, page: Any) -> dict[str, Any]:
    """From the payment page with parts applied: the rest by card on the test card page; the
    closed order's document."""
    await page.click("#pay-rest-card")
    await page.wait_for_selector("input[name=card_number]")
    await page.fill("input[name=card_number]", "4242 4242 4242 4242")
    await page.fill("input[name=expiry]", "12/30")
    await page.fill("input[name=cvc]", "123")
    await page.click("#pay")
    await page.wait_for_url(re.compile(r"/shop/WEBSHOP/orders/"))
    assert await page.get_attribute("[data-order-state]", "data-order-state") == "CLOSED"
    secret = page.url.rsplit("/", 1)[1].split("?")[0]
    async with read(world.engine) as conn:
        order = await queries.order_by_public_secret(conn, secret)
        document: dict[str, Any] = await queries.order_document(conn, order)
    return document


async def a_registered_contact_with_credit(
    world: World, page: Any, who: tuple[str, str, str, str], amount: int
) -> tuple[int, int]:
    """Register ``who`` (email, password, first and last name) in the shop, signed in on
    ``page``, and give them ``amount`` of credit balance; the institution's id and the
    contact's number."""
    email, password, first, last = who
    await page.goto(f"{world.shop}{SHOP}/account/register")
    await page.fill('input[name="email"]', email)
    await page.fill('input[name="password"]', password)
    await page.fill('input[name="firstName"]', first)
    await page.fill('input[name="lastName"]', last)
    await page.click('button[type="submit"]')
    await page.wait_for_url(re.compile(r"/shop/WEBSHOP/account"))
    institution_id = await institution(world)
    c = contacts_db.contact.c
    async with read(world.engine) as conn:
        number = (
            await conn.execute(
                sa.select(c.id).where(c.institution_id == institution_id, c.email == email)
            )
        ).scalar_one()
    await add_credit(
        world.engine,
        institution_id=institution_id,
        contact_number=str(number),
        currency="EUR",
        amount=amount,
        description="goodwill",
        now=NOW,
        actor="test",
    )
    return institution_id, number


async def test_a_contact_pays_with_their_credit_balance(world: World) -> None:
    context = await world.context()
    page = await context.new_page()
    institution_id, number = await a_registered_contact_with_credit(
        world, page, ("grace@example.org", "cobol compiler 59", "Grace", "Hopper"), 100_000
    )

    await one_place_in_the_cart(world, page)
    await page.click("#checkout")  # signed in: straight to the payment
    await page.wait_for_url(f"{world.shop}{SHOP}/pay")
    assert await page.get_attribute("[data-credit-balance]", "data-credit-balance") == "100000"
    total = int(await page.get_attribute("[data-total]", "data-total") or 0)
    assert total == 24_000
    await shot(page, "9-credit-balance")
    await page.click("#pay-credit")
    await page.wait_for_url(re.compile(r"/shop/WEBSHOP/orders/"))
    assert await page.get_attribute("[data-order-state]", "data-order-state") == "CLOSED"
    async with read(world.engine) as conn:
        account = await find_account(conn, institution_id, AccountKind.CREDIT, str(number))
    assert account is not None and account.balance == 100_000 - total

    href = await page.get_attribute("#tickets-pdf", "href")
    assert href is not None
    async with httpx.AsyncClient(base_url=world.api) as client:
        response = await client.get(href)
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    expected = await barcodes_of(world, href.split("/")[4])
    decoded = sorted(code for p in pages(response.content) for code in decoded_qr(p))
    assert len(expected) == 1 and decoded == expected

    # the next cart shows what is left
    await one_place_in_the_cart(world, page)
    await page.goto(f"{world.shop}{SHOP}/pay")
    left = await page.get_attribute("[data-credit-balance]", "data-credit-balance")
    assert left == str(100_000 - total)
    await context.close()


async def test_a_pending_card_payment_is_given_up_and_the_cart_paid_otherwise(
    world: World,
) -> None:
    institution_id = await institution(world)
    await issue_voucher(
        world.engine,
        institution_id=institution_id,
        currency="EUR",
        amount=50_000,
        now=NOW,
        code="SHOPGIFT2",
        actor="test",
    )
    context = await world.context()
    page = await context.new_page()
    await one_place_in_the_cart(world, page)
    await check_out_as_a_guest(world, page)
    await page.click("#pay-card")
    await page.wait_for_selector("input[name=card_number]")
    card_page = page.url

    # the buyer leaves the card page with the browser's back button and tries a voucher: the
    # pending card payment is in the way, and the page says what to do
    await page.go_back()
    await page.wait_for_url(f"{world.shop}{SHOP}/pay")
    if await page.locator("#pay-voucher").count():
        await page.fill("form[data-method=VOUCHER] input[name=voucher]", "SHOPGIFT2")
        await page.click("#pay-voucher")
        alert = page.locator("[role=alert]")
        assert await alert.get_attribute("data-code") == "error.order.not_running"
    assert await page.locator("#card-pending").is_visible()
    assert await page.get_attribute("#back-to-card", "href") == card_page
    assert await page.locator("#pay-voucher").count() == 0

    # the cart says so too, and cannot change meanwhile
    await page.goto(f"{world.shop}{SHOP}/cart")
    assert await page.locator("#card-pending").is_visible()
    assert await page.locator("form[action$='/cart/remove']").count() == 0
    await shot(page, "10-card-pending")
    await page.click("#give-up-card")
    await page.wait_for_url(f"{world.shop}{SHOP}/pay")
    assert await page.locator("#card-pending").count() == 0
    await page.fill("form[data-method=VOUCHER] input[name=voucher]", "SHOPGIFT2")
    await page.click("#pay-voucher")
    await page.wait_for_url(re.compile(r"/shop/WEBSHOP/orders/"))
    assert await page.get_attribute("[data-order-state]", "data-order-state") == "CLOSED"
    secret = page.url.rsplit("/", 1)[1].split("?")[0]
    i = payments_db.payment_intent.c
    async with read(world.engine) as conn:
        order = await queries.order_by_public_secret(conn, secret)
        intents = (
            (await conn.execute(sa.select(i.state).where(i.order_id == order.id))).scalars().all()
        )
        voucher = await find_account(conn, institution_id, AccountKind.VOUCHER, "SHOPGIFT2")
    assert order.state == "CLOSED" and order.pending_payments is None
    assert list(intents) == ["CANCELLED"]
    assert voucher is not None and voucher.balance == 50_000 - order.total

    # what is left on the voucher pays part of the next cart, the card the rest
    left = voucher.balance
    await page.goto(f"{world.shop}{SHOP}/performances/5")
    await page.fill("#q_3_1", "2")
    await page.click("#best-form button[type=submit]")
    await page.wait_for_url(f"{world.shop}{SHOP}/cart")
    await check_out_as_a_guest(world, page)
    total = int(await page.get_attribute("[data-total]", "data-total") or 0)
    assert total > left
    await page.fill("form[data-method=VOUCHER] input[name=voucher]", "SHOPGIFT2")
    await page.click("#pay-voucher")
    await page.wait_for_selector("#applied")
    assert await page.get_attribute("[data-applied-amount]", "data-applied-amount") == str(left)
    assert await page.get_attribute("[data-rest]", "data-rest") == str(total - left)
    await shot(page, "13-voucher-applied")
    document = await pay_the_rest_by_card(world, page)
    async with read(world.engine) as conn:
        voucher = await find_account(conn, institution_id, AccountKind.VOUCHER, "SHOPGIFT2")
    assert sorted((p["paymentType"], p["amount"]) for p in document["payments"]) == [
        ("CARD", total - left),
        ("VOUCHER", left),
    ]
    assert voucher is not None and voucher.balance == 0
    await context.close()


async def test_a_contact_applies_a_voucher_then_their_balance_and_pays_the_rest_by_card(
    world: World,
) -> None:
    context = await world.context()
    page = await context.new_page()
    institution_id, number = await a_registered_contact_with_credit(
        world, page, ("barbara@example.org", "abstract data types 74", "Barbara", "Liskov"), 5_000
    )
    await issue_voucher(
        world.engine,
        institution_id=institution_id,
        currency="EUR",
        amount=10_000,
        now=NOW,
        code="SHOPGIFT3",
        actor="test",
    )

    await one_place_in_the_cart(world, page)
    await page.click("#checkout")  # signed in: straight to the payment
    await page.wait_for_url(f"{world.shop}{SHOP}/pay")
    total = int(await page.get_attribute("[data-total]", "data-total") or 0)
    assert total == 24_000
    await page.fill("form[data-method=VOUCHER] input[name=voucher]", "SHOPGIFT3")
    await page.click("#pay-voucher")
    await page.wait_for_selector("#applied")
    assert await page.get_attribute("[data-rest]", "data-rest") == str(total - 10_000)
    # the balance is still offered beside the card: applied too, both parts are listed
    await page.click("#pay-credit")
    await page.wait_for_selector("li[data-applied=CREDIT]")
    applied = page.locator("#applied [data-applied-amount]")
    assert await applied.evaluate_all("els => els.map(e => e.dataset.appliedAmount)") == [
        "10000",
        "5000",
    ]
    assert await page.get_attribute("[data-rest]", "data-rest") == str(total - 15_000)
    assert await page.locator("#pay-credit").count() == 0
    await shot(page, "14-voucher-and-balance-applied")
    document = await pay_the_rest_by_card(world, page)
    async with read(world.engine) as conn:
        voucher = await find_account(conn, institution_id, AccountKind.VOUCHER, "SHOPGIFT3")
        balance = await find_account(conn, institution_id, AccountKind.CREDIT, str(number))
    assert sorted((p["paymentType"], p["amount"]) for p in document["payments"]) == [
        ("CARD", total - 15_000),
        ("CREDIT", 5_000),
        ("VOUCHER", 10_000),
    ]
    assert voucher is not None and voucher.balance == 0
    assert balance is not None and balance.balance == 0
    await context.close()
