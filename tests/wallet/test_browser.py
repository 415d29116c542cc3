"""The spectator app in Debian's chromium, driven by Playwright on a phone-sized screen: sign in
with a one-time link from the mail outbox, see the ticket, read its QR (decoded with zbar) and
watch it change with the 15 s step, then start a transfer."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image
from playwright.async_api import Browser, Page, async_playwright
from pyzbar.pyzbar import decode

from billetterie_wallet import rotating
from billetterie_wallet.clock import FixedClock
from tests.conftest import NOW
from tests.wallet import factories
from tests.wallet.conftest import OrganizerClient

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


async def read_qr(page: Page) -> str:
    """What a gate's camera reads off the screen."""
    png = await page.locator("#qr svg").screenshot()
    image = Image.open(io.BytesIO(png)).convert("L")
    found = decode(image)
    assert len(found) == 1, "no QR code readable on the ticket screen"
    text: str = found[0].data.decode("utf-8")
    return text


async def test_sign_in_see_ticket_rotating_qr_and_transfer(
    browser: Browser,
    organizer: OrganizerClient,
    wallet_server: str,
    wallet_clock: FixedClock,
) -> None:
    await organizer.inject(factories.ticket("T-01", activation=NOW - timedelta(hours=1)))
    group = (await organizer.http.get("/api/v1/organizer/activation-groups/G1")).json()
    secret = rotating.ticket_secret(base64.b64decode(group["secret"]), "BC1.T-01.c2lnbmVk")
    context = await browser.new_context(
        base_url=wallet_server, viewport={"width": 390, "height": 844}, is_mobile=True
    )
    page = await context.new_page()
    problems: list[Any] = []
    page.on("pageerror", lambda error: problems.append(error))

    await page.goto("/app")
    assert page.url.endswith("/app/login")
    assert await page.locator('link[rel="manifest"]').get_attribute("href") == (
        "/app/manifest.webmanifest"
    )
    link_form = page.locator('form[action="/app/login/link"]')
    await link_form.locator('input[name="email"]').fill("ada@example.org")
    await link_form.locator("button").click()
    await page.locator(".flash.done").get_by_text("We sent you a sign-in link").wait_for()

    await page.goto("/dev/mail")
    await page.locator('article[data-to="ada@example.org"] a').first.click()
    await page.locator("#confirm-link").click()
    await page.wait_for_url("**/app/tickets")
    await page.get_by_role("heading", name="Concert EV1").wait_for()

    await page.locator('a[data-ticket="T-01"]').click()
    await page.wait_for_url("**/app/tickets/*")
    first = await read_qr(page)
    assert first == rotating.payload("G1", "BC1.T-01.c2lnbmVk", rotating.totp(secret, NOW))
    step = await page.locator("#qr [data-step]").get_attribute("data-step")

    wallet_clock.advance(15)
    await page.wait_for_function(
        "step => document.querySelector('#qr [data-step]').dataset.step !== step",
        arg=step,
        timeout=10_000,
    )
    second = await read_qr(page)
    assert second != first
    assert second == rotating.payload(
        "G1", "BC1.T-01.c2lnbmVk", rotating.totp(secret, wallet_clock.now())
    )

    await page.locator('input[name="email"]').fill("bob@example.org")
    await page.locator("#transfer").click()
    await page.locator(".flash.done").get_by_text("Transfer offered").wait_for()
    await page.locator("#offer").get_by_text("bob@example.org").wait_for()
    assert (await page.locator("#status").inner_text()) == "PENDING_TRANSFER"
    feed = await organizer.feedback()
    assert feed["tickets"][0]["status"] == "PENDING_TRANSFER"

    manifest = await page.request.get("/app/manifest.webmanifest")
    assert (await manifest.json())["start_url"] == "/app/tickets"
    assert problems == []
    await context.close()
