"""The website contact cookie: written at login on the configured domain, its additionalData
opened with the website's key by the partner SDK's helper, tampering detected, cleared at
logout."""

from __future__ import annotations

import ast
import json
from collections.abc import AsyncIterator
from datetime import datetime
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

import billetterie_partner.cookies as partner_cookies
from billetterie.shared.clock import FixedClock
from billetterie_partner.cookies import CookieError, read_contact_cookie
from tests.conftest import NOW, Backend
from tests.identity_support import browser, contact_world, register, shop_app, sign_in

PASSWORD = "correct horse 42"
NAME = "stx_contact_ACME_WEB_v1"


def rsa_pair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


WEBSITE_PRIVATE, WEBSITE_PUBLIC = rsa_pair()


@pytest.fixture
async def app(
    scratch_engine: AsyncEngine, backend: Backend, clock: FixedClock, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    await contact_world(scratch_engine, websitePublicKey=WEBSITE_PUBLIC)
    async with shop_app(backend.scratch_url, tmp_path, clock) as app:
        yield app


def website_cookie(response: httpx.Response, name: str = NAME) -> tuple[str, dict[str, str]]:
    for header in response.headers.get_list("set-cookie"):
        parsed = SimpleCookie()
        parsed.load(header)
        if name in parsed:
            morsel = parsed[name]
            return morsel.value, {k: v for k, v in morsel.items() if v}
    raise AssertionError(f"no {name} cookie set")


async def test_login_writes_the_cookie_for_the_website(app: FastAPI) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD, title="Dr")
        number_page = await client.get("/shop/ACMEWEB/account")
        number = int(number_page.text.split('data-contact-number="')[1].split('"')[0])
    async with browser(app) as client:
        response = await sign_in(client, "ACMEWEB", "ada@example.org", PASSWORD)
        value, attributes = website_cookie(response)
        shop_key = (await client.get("/shop/ACMEWEB/.well-known/contact-cookie-key.pem")).content
    assert attributes["domain"] == ".acme.example" and attributes["path"] == "/"
    assert "httponly" not in attributes  # the website's scripts may read the names
    body = json.loads(unquote(value))
    assert set(body) == {
        "individualTitle",
        "individualFirstname",
        "individualLastname",
        "nickname",
        "lang",
        "timestamp",
        "additionalData",
    }
    assert "example.org" not in unquote(value)  # the email travels encrypted only
    cookie = read_contact_cookie(
        value, cookie_name=NAME, website_private_key=WEBSITE_PRIVATE, shop_public_key=shop_key
    )
    assert (cookie.title, cookie.first_name, cookie.last_name, cookie.language) == (
        "Dr",
        "Ada",
        "Lovelace",
        "en",
    )
    assert (cookie.contact_number, cookie.email) == (number, "ada@example.org")
    assert cookie.logged_in_at == NOW and cookie.issued_at == NOW

    token = body["additionalData"]
    parts = token.split(".")
    other_private, _ = rsa_pair()
    async with browser(app) as client:
        other_shop_key = (
            await client.get("/shop/OTHRWEB/.well-known/contact-cookie-key.pem")
        ).content
    flipped = parts[3][:-2] + ("A" if parts[3][-2] != "A" else "B") + parts[3][-1]
    cases = [
        (".".join([*parts[:3], flipped, parts[4]]), WEBSITE_PRIVATE, shop_key, NAME),
        (token, other_private, shop_key, NAME),  # not encrypted for this website
        (token, WEBSITE_PRIVATE, other_shop_key, NAME),  # not signed by this shop
        (token, WEBSITE_PRIVATE, shop_key, "stx_contact_OTHR_WEB_v1"),  # another cookie's data
        ("v2." + token[3:], WEBSITE_PRIVATE, shop_key, NAME),
        ("v1.x.y", WEBSITE_PRIVATE, shop_key, NAME),
    ]
    for data, private, public, name in cases:
        with pytest.raises(CookieError):
            partner_cookies.open_additional_data(
                data, cookie_name=name, website_private_key=private, shop_public_key=public
            )
    with pytest.raises(CookieError):
        read_contact_cookie("%7Bnot json", cookie_name=NAME)


async def test_without_a_website_key_the_cookie_has_names_only(app: FastAPI) -> None:
    async with browser(app) as client:
        await register(client, "OTHRWEB", "ada@example.org", PASSWORD)
        response = await sign_in(client, "OTHRWEB", "ada@example.org", PASSWORD)
    value, attributes = website_cookie(response, "stx_contact_OTHR_WEB_v1")
    assert attributes["domain"] == ".othr.example"
    body = json.loads(unquote(value))
    assert body["additionalData"] is None and body["individualLastname"] == "Lovelace"
    assert datetime.fromisoformat(body["timestamp"]) == NOW


def test_the_partner_helper_does_not_import_the_server() -> None:
    tree = ast.parse(Path(partner_cookies.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert "billetterie" not in imported
    assert imported <= {
        "__future__",
        "base64",
        "binascii",
        "json",
        "dataclasses",
        "datetime",
        "typing",
        "urllib",
        "httpx",
        "cryptography",
    }
