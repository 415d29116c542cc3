"""The account pages in a real browser (Debian's chromium through Playwright), on a phone-sized
screen: register, sign out, sign in again. The database side is covered by the HTTP tests, so
this runs on SQLite only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import async_playwright
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.app import build_app
from billetterie.shared.clock import FixedClock
from tests.conftest import Backend, settings_for
from tests.identity_support import contact_world, free_port, served

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def base_url(
    scratch_engine: AsyncEngine, backend: Backend, clock: FixedClock, tmp_path: Path
) -> AsyncIterator[str]:
    if backend.name != "sqlite":
        pytest.skip("browser test: the HTTP tests cover both databases")
    await contact_world(scratch_engine)
    port = free_port()
    settings = settings_for(backend.scratch_url, tmp_path).model_copy(
        update={"dev_mail": True, "background_tasks": False}
    )
    async with served(build_app(settings, clock=clock), port):
        yield f"http://127.0.0.1:{port}"


async def test_register_sign_out_and_in_on_a_phone(base_url: str) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = await browser.new_context(viewport={"width": 360, "height": 740})
            page = await context.new_page()
            await page.goto(f"{base_url}/shop/ACMEWEB/account/register")
            assert await page.title() == "Create an account · Web shop"
            await page.fill('input[name="email"]', "ada@example.org")
            await page.fill('input[name="password"]', "correct horse 42")
            await page.fill('input[name="firstName"]', "Ada")
            await page.fill('input[name="lastName"]', "Lovelace")
            await page.check('input[name="criteria"][value="JAZZ"]')
            await page.click('button[type="submit"]')
            await page.wait_for_url(f"{base_url}/shop/ACMEWEB/account")
            assert "Ada Lovelace" in await page.inner_text("main")
            # Nothing is wider than the screen.
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360

            await page.click('text="Sign out"')
            await page.wait_for_url(f"{base_url}/shop/ACMEWEB/account/login")
            await page.fill('input[name="email"]', "ada@example.org")
            await page.fill('input[name="password"]', "wrong horse 42")
            await page.click('button[type="submit"]')
            alert = page.locator('[role="alert"]')
            assert await alert.get_attribute("data-code") == "error.contact.bad_credentials"
            await page.fill('input[name="password"]', "correct horse 42")
            await page.click('button[type="submit"]')
            await page.wait_for_url(f"{base_url}/shop/ACMEWEB/account")

            await page.goto(f"{base_url}/dev/mail")
            assert "Confirm your email address" in await page.inner_text("main")
        finally:
            await browser.close()
