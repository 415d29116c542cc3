"""The shop served for browser tests: the demo institution on a database of its own, the shop
on ``shop.demo.test`` and a stand-in for the institution's website on ``www.demo.test`` (both
mapped to 127.0.0.1 in chromium), sharing the parent domain ``demo.test`` for cookies."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from playwright.async_api import Browser, async_playwright
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import HTMLResponse

from billetterie.app import build_app
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import create_engine, metadata, transaction
from tests.conftest import NOW, Backend, demo_document_data, set_demo_secrets, settings_for
from tests.factories import import_document
from tests.identity_support import free_port, served

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
    "--host-resolver-rules=MAP shop.demo.test 127.0.0.1, MAP www.demo.test 127.0.0.1",
]

WEBSITE_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<title>Demo website</title></head>
<body><h1>Welcome back</h1><dl>
<dt>contact</dt><dd id="contact"></dd><dt>cart</dt><dd id="cart"></dd></dl>
<script>
var jar = {};
document.cookie.split("; ").forEach(function (c) {
  var i = c.indexOf("="); if (i > 0) { jar[c.slice(0, i)] = c.slice(i + 1); } });
var contact = jar["stx_contact_DEMO_WEB_v1"];
document.getElementById("contact").textContent = contact ? decodeURIComponent(contact) : "";
document.getElementById("cart").textContent = jar["stx_cartSummary_DEMO_WEB"] || "";
</script></body></html>"""


def website() -> FastAPI:
    """The institution's website: one page showing what its script reads of the cookies."""
    app = FastAPI()

    @app.get("/{path:path}")
    async def page(path: str) -> HTMLResponse:
        return HTMLResponse(WEBSITE_PAGE)

    return app


@dataclass
class World:
    shop: str  # http://shop.demo.test:<port>
    website: str  # http://www.demo.test:<port>
    api: str  # http://127.0.0.1:<port> (the same server, for partner calls)
    engine: AsyncEngine
    clock: FixedClock
    browser: Browser

    async def context(self, **options: Any) -> Any:
        return await self.browser.new_context(viewport={"width": 390, "height": 844}, **options)


def demo_for_browsers(website_port: int) -> dict[str, Any]:
    data = demo_document_data()
    for channel in data["salesChannels"]:
        for pos in channel["pointsOfSale"]:
            if pos["code"] == "WEBSHOP":
                pos["cookieDomain"] = "demo.test"
                pos["returnHosts"] = [f"www.demo.test:{website_port}"]
                pos["parameters"] = {"shopColor": "#7a1f5c"}
    return data


@contextlib.asynccontextmanager
async def shop_world(
    backend: Backend, tmp: Path, change: Callable[[dict[str, Any]], None] | None = None
) -> AsyncIterator[World]:
    """The demo served for chromium; ``change`` edits its setup document before the import."""
    engine = create_engine(backend.scratch_url)
    clock = FixedClock(NOW)
    port, website_port = free_port(), free_port()
    try:
        document = demo_for_browsers(website_port)
        if change is not None:
            change(document)
        await import_document(engine, document)
        await set_demo_secrets(engine)
        settings = settings_for(backend.scratch_url, tmp).model_copy(
            update={
                "background_tasks": False,
                "dev_mail": True,
                "shop_point_of_sale": "WEBSHOP",
                # the test card provider calls its webhook there (the server cannot resolve
                # the browser's names)
                "public_url": f"http://127.0.0.1:{port}",
            }
        )
        async with (
            served(build_app(settings, clock=clock), port),
            served(website(), website_port),
            async_playwright() as playwright,
        ):
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                yield World(
                    f"http://shop.demo.test:{port}",
                    f"http://www.demo.test:{website_port}",
                    f"http://127.0.0.1:{port}",
                    engine,
                    clock,
                    browser,
                )
            finally:
                await browser.close()
    finally:
        async with transaction(engine) as conn:
            if engine.dialect.name == "postgresql":
                names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
                await conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            else:
                for table in reversed(metadata.sorted_tables):
                    await conn.execute(table.delete())
        await engine.dispose()
