"""What the contacts and identity tests share: an institution with criteria, consents and
sign-in settings, a second institution for tenancy, and helpers for the contact API."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.app import build_app
from billetterie.shared.clock import FixedClock
from tests.conftest import Api, set_secrets, settings_for
from tests.factories import import_document, setup_document, text

CONTACT_VERSION = "v2_21"
CONTACT_SERVICE = "contactInformationPublicService"


def contact_document(code: str = "ACME", **pos_settings: Any) -> dict[str, Any]:
    """``setup_document`` plus interests, two consents, and sign-in settings on the web shop."""
    doc = setup_document(code)
    doc["organization"]["contactCriteria"] = [
        {"code": "JAZZ", "name": text("Jazz")},
        {"code": "OPERA", "name": text("Opera")},
    ]
    doc["organization"]["contactAuthorizations"] = [
        {"code": "NEWS", "name": text("Newsletter")},
        {"code": "PARTNERS", "name": text("Partners' offers")},
    ]
    web = doc["salesChannels"][0]["pointsOfSale"][0]
    web["cookieDomain"] = f".{code.lower()}.example"
    web["returnHosts"] = [f"www.{code.lower()}.example"]
    web.update(pos_settings)
    return doc


async def contact_world(
    engine: AsyncEngine, other: dict[str, Any] | None = None, **pos_settings: Any
) -> None:
    """ACME (with the settings above) and OTHR, each with a web and a reseller operator;
    ``pos_settings`` and ``other`` go to their web shops."""
    await import_document(engine, contact_document("ACME", **pos_settings))
    await import_document(engine, contact_document("OTHR", **(other or {})))
    await set_secrets(
        engine, "ACME", [("ACME_WEB", "ACMEWEB", "web"), ("ACME_RES", "ACMERES", "res")]
    )
    await set_secrets(engine, "OTHR", [("OTHR_WEB", "OTHRWEB", "web")])


async def world_tokens(api: Api) -> dict[str, str]:
    return {
        "web": await api.token("ACME_WEB", "web"),
        "reseller": await api.token("ACME_RES", "res"),
        "other": await api.token("OTHR_WEB", "web"),
    }


async def contact_call(
    api: Api, method: str, body: dict[str, Any] | None, token: str | None
) -> httpx.Response:
    return await api.rpc(
        CONTACT_SERVICE, method, body, token=token, module="tnco", version=CONTACT_VERSION
    )


def person(n: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "identifier": f"p{n}",
        "firstName": f"Ada{n}",
        "lastName": f"Lovelace{n}",
        "email": f"ada{n}@example.org",
        **fields,
    }


async def create_contact(api: Api, token: str, **fields: Any) -> int:
    response = await contact_call(
        api, "createCulturalContact", {"contactDataList": [person(**fields)]}, token
    )
    body = response.json()
    assert response.status_code == 200 and body["statusCode"] == "success", body
    number: int = body["contactNumbers"][0]["contactNumber"]
    return number


# --- shop pages ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def shop_app(
    url: str, tmp: Path, clock: FixedClock, **settings: Any
) -> AsyncIterator[FastAPI]:
    """The app with the development mail sink, started; no background tasks."""
    base = settings_for(url, tmp).model_copy(
        update={"dev_mail": True, "background_tasks": False, **settings}
    )
    app = build_app(base, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


def browser(app: FastAPI, address: str = "198.51.100.7") -> httpx.AsyncClient:
    """A client with its own cookie jar, as one browser at ``address``."""
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def error_code(html: str) -> str | None:
    match = re.search(r'data-code="([^"]+)"', html)
    return match.group(1) if match else None


def mails(app: FastAPI) -> list[Any]:
    return list(app.state.mailer.messages)


def link_in(body: str) -> str:
    match = re.search(r"https?://\S+", body)
    assert match, body
    return match.group(0)


async def post_form(
    client: httpx.AsyncClient, page: str, data: dict[str, Any], *, action: str | None = None
) -> httpx.Response:
    """GET the page, then POST its form with its CSRF token."""
    form = await client.get(page)
    assert form.status_code == 200, form.text
    return await client.post(
        action or page.split("?")[0], data={**data, "csrf_token": csrf_of(form.text)}
    )


async def register(
    client: httpx.AsyncClient, shop: str, email: str, password: str, **fields: Any
) -> httpx.Response:
    return await post_form(
        client,
        f"/shop/{shop}/account/register",
        {
            "email": email,
            "password": password,
            "lastName": "Lovelace",
            "firstName": "Ada",
            **fields,
        },
    )


async def sign_in(
    client: httpx.AsyncClient, shop: str, email: str, password: str, **fields: Any
) -> httpx.Response:
    return await post_form(
        client, f"/shop/{shop}/account/login", {"email": email, "password": password, **fields}
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def served(app: FastAPI, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started
    try:
        yield
    finally:
        server.should_exit = True
        await task
