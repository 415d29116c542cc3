"""The account pages in a real browser (Debian's chromium through Playwright), on a phone-sized
screen: register, sign out, sign in again; every account page in English, French and German,
the language chosen once and kept. The database side is covered by the HTTP tests, so this runs
on SQLite only."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.async_api import async_playwright
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.app import build_app
from billetterie.contacts import db as contacts_db
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import read
from tests.conftest import Backend, settings_for
from tests.identity_support import contact_world, free_port, served
from tests.shop_support import World, shop_world

SHOTS = os.environ.get("BILLETTERIE_SCREENSHOTS")

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


@pytest.fixture(scope="module")
async def world(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    if backend.name != "sqlite":
        pytest.skip("browser test: the HTTP tests cover both databases")
    async with shop_world(backend, tmp_path_factory.mktemp("shop")) as w:
        yield w


# page -> its title and one more text of the page, in English, French and German
PAGES = {
    "register": (
        ("Create an account", "Créer un compte", "Konto erstellen"),
        ("Create my account", "Créer mon compte", "Mein Konto erstellen"),
    ),
    "login": (
        ("Sign in", "Se connecter", "Anmelden"),
        ("Keep me signed in", "Rester connecté", "Angemeldet bleiben"),
    ),
    "forgot": (
        ("Forgot your password?", "Mot de passe oublié ?", "Passwort vergessen?"),
        ("Send me a link", "M'envoyer un lien", "Link senden"),
    ),
    "reset?token=abc": (
        ("Choose a new password", "Choisissez un nouveau mot de passe", "Neues Passwort wählen"),
        ("Set my password", "Enregistrer mon mot de passe", "Mein Passwort festlegen"),
    ),
}
SHOP_NAMES = ("Demo web shop", "Boutique en ligne Demo", "Demo-Webshop")


async def test_the_account_pages_speak_english_french_and_german(world: World) -> None:
    context = await world.context()
    page = await context.new_page()
    base = f"{world.shop}/shop/WEBSHOP/account"
    for index, lang in enumerate(("en", "fr", "de")):
        for path, (titles, texts) in PAGES.items():
            joiner = "&" if "?" in path else "?"
            await page.goto(f"{base}/{path}{joiner}lang={lang}")
            assert await page.get_attribute("html", "lang") == lang
            assert await page.title() == f"{titles[index]} · {SHOP_NAMES[index]}"
            assert await page.inner_text("h1") == titles[index]
            assert texts[index] in await page.inner_text("main")
    # the choice is kept (German last), and the language links keep the page's parameters
    await page.goto(f"{base}/register?callbackUrl=%2Fshop%2FWEBSHOP%2Fcart")
    assert await page.inner_text("h1") == "Konto erstellen"
    french = await page.get_attribute('a[hreflang="fr"]', "href")
    assert french == "/shop/WEBSHOP/account/register?callbackUrl=%2Fshop%2FWEBSHOP%2Fcart&lang=fr"
    assert await page.locator('a[hreflang="de"]').count() == 0

    # a German registration: the contact speaks German, and so do the profile pages
    await page.fill('input[name="email"]', "konrad@example.org")
    await page.fill('input[name="password"]', "rechenmaschine 41")
    await page.fill('input[name="firstName"]', "Konrad")
    await page.fill('input[name="lastName"]', "Zuse")
    await page.click('button[type="submit"]')
    await page.wait_for_url(f"{world.shop}/shop/WEBSHOP/cart")
    await page.goto(base)
    assert await page.inner_text("h1") == "Mein Konto"
    assert await page.locator('button:has-text("Abmelden")').count() == 1
    await page.goto(f"{base}/edit")
    assert await page.inner_text("h1") == "Mein Profil"
    assert "Passwort (leer lassen, um es zu behalten)" in await page.inner_text("main")
    if SHOTS:
        await page.screenshot(path=f"{SHOTS}/11-account-de.png", full_page=True)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.fill('input[name="phone"]', "+41 21 000 00 00")
    await page.click('button[type="submit"]')
    assert await page.inner_text("[role=status]") == "Gespeichert."
    await page.goto(f"{base}/edit?lang=fr")
    assert await page.inner_text("h1") == "Mon profil"
    c = contacts_db.contact.c
    async with read(world.engine) as conn:
        language = (
            await conn.execute(sa.select(c.language).where(c.email == "konrad@example.org"))
        ).scalar_one()
    assert language == "de"
    await context.close()
