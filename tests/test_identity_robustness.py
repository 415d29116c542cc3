"""Bad input on the contact, account and SSO surfaces: every answer is a clear 4xx (or a page
with a stable code), never a 500; and the setup file's sign-in settings are validated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog.setupfile import SetupFileError, parse_document
from billetterie.shared.clock import FixedClock
from tests.conftest import Api, Backend
from tests.identity_support import (
    CONTACT_SERVICE,
    browser,
    contact_document,
    contact_world,
    shop_app,
)

SHOP = "/shop/ACMEWEB"
GARBAGE: list[dict[str, Any]] = [
    {},
    {"x": "y"},
    {"token": "\x00\x01"},
    {"next": "\u202e" * 50},
    {"SAMLRequest": "!!!!", "RelayState": "r" * 5000},
    {"code": "a" * 3000, "state": "b" * 3000},
    {"client_id": "acme", "redirect_uri": "javascript:1", "response_type": "code"},
]


@pytest.fixture
async def app(
    scratch_engine: AsyncEngine, backend: Backend, clock: FixedClock, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    await contact_world(
        scratch_engine,
        samlServiceProviders=[
            {"entityId": "https://sp.example", "assertionConsumerService": "https://sp.example/a"}
        ],
        oidcClients=[{"clientId": "acme", "redirectUris": ["https://www.acme.example/cb"]}],
        identityProvider={
            "issuer": "http://127.0.0.1:9/nowhere",
            "clientId": "c",
            "clientSecret": "s",
        },
    )
    async with shop_app(backend.scratch_url, tmp_path, clock) as app:
        yield app


PAGES = [
    "account",
    "account/login",
    "account/register",
    "account/verify",
    "account/forgot",
    "account/reset",
    "account/logout",
    "saml/metadata",
    "saml/sso",
    "saml/slo",
    "oidc/authorize",
    "oidc/token",
    "oidc/userinfo",
    "oidc/jwks",
    "oidc/client/start",
    "oidc/client/callback",
    "oidc/client/link",
    "oidc/client/create",
    ".well-known/openid-configuration",
    ".well-known/contact-cookie-key.pem",
]


def handled(response: Any) -> bool:
    """A 4xx, or the 502 that says the external identity provider is unreachable."""
    if response.status_code == 502:
        return "error.oidc.provider" in response.text
    return bool(response.status_code < 500)


async def test_no_page_answers_500(app: FastAPI) -> None:
    async with browser(app) as client:
        await client.get(f"{SHOP}/account/login")  # a CSRF cookie, so forms get past the check
        csrf = client.cookies["bt_csrf"]
        for shop in (SHOP, "/shop/NOSUCH", "/shop/" + "X" * 40):
            for page in PAGES:
                for params in GARBAGE:
                    got = await client.get(f"{shop}/{page}", params=params)
                    assert handled(got), (shop, page, params, got.text[:300])
                    posted = await client.post(
                        f"{shop}/{page}", data={**params, "csrf_token": csrf}
                    )
                    assert handled(posted), (shop, page, params, posted.text[:300])
        # An unreachable identity provider is a clear 502 page, not a crash.
        start = await client.get(f"{SHOP}/oidc/client/start")
        assert start.status_code == 502 and 'data-code="error.oidc.provider"' in start.text


async def test_no_contact_call_answers_500(app: FastAPI) -> None:
    async with browser(app) as client:
        api = Api(client)
        token = await api.token("ACME_WEB", "web")
        bodies: list[Any] = [
            None,
            [],
            "text",
            {"contactNumber": -1},
            {"contactNumber": 2**60},
            {"contactNumber": "1"},
            {"contactNumber": 1, "details": ["EVERYTHING"]},
            {"contactDataList": [{"lastName": "x" * 500}]},
            {"contactDataList": [{"lastName": "L", "birthDate": "2020-13-45x"}]},
            {"contactDataList": [{"lastName": "L", "addresses": [{"countryCode": "ch"}]}]},
            {"email": "@"},
            {"login": "", "password": "", "pointOfSalesId": 0},
            {"login": "a", "password": "p" * 300, "pointOfSalesId": 1},
        ]
        for method in (
            "createCulturalContact",
            "getContactData",
            "updateContact",
            "deleteContact",
            "searchContactsByEmail",
            "authenticate",
            "changePassword",
        ):
            for body in bodies:
                response = await client.post(
                    f"/tnco/backend-apis/{CONTACT_SERVICE}/v2_21/{method}",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.status_code < 500, (method, body, response.text)
                assert response.json()["statusCode"] != "success" or method in {
                    "searchContactsByEmail"
                }, (method, body)


def _public_pem(key: Any) -> str:
    return str(
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        ({"websitePublicKey": "not a key"}, "websitePublicKey", "not a PEM public key"),
        (
            {"websitePublicKey": _public_pem(ed25519.Ed25519PrivateKey.generate())},
            "websitePublicKey",
            "not an RSA public key of 2048 bits or more",
        ),
        (
            {
                "websitePublicKey": _public_pem(
                    rsa.generate_private_key(public_exponent=65537, key_size=1024)
                )
            },
            "websitePublicKey",
            "not an RSA public key of 2048 bits or more",
        ),
        ({"returnHosts": ["https://www.acme.example"]}, "returnHosts[0]", "does not match"),
        (
            {"oidcClients": [{"clientId": "a", "redirectUris": ["ftp://x"]}]},
            "oidcClients[0].redirectUris[0]",
            "not an http(s) URL",
        ),
        (
            {
                "oidcClients": [
                    {"clientId": "a", "redirectUris": ["https://a.example/cb"]},
                    {"clientId": "a", "redirectUris": ["https://b.example/cb"]},
                ]
            },
            "oidcClients",
            "code a is used twice",
        ),
        (
            {
                "samlServiceProviders": [
                    {"entityId": "e", "assertionConsumerService": "https://a.example/acs"},
                    {"entityId": "e", "assertionConsumerService": "https://b.example/acs"},
                ]
            },
            "samlServiceProviders",
            "code e is used twice",
        ),
        (
            {"identityProvider": {"issuer": "https://id.example", "clientId": "c"}},
            "identityProvider.clientSecret",
            "required",
        ),
    ],
)
def test_sign_in_settings_are_validated(settings: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(SetupFileError) as caught:
        parse_document(contact_document("ACME", **settings))
    [(where, what)] = [
        (p, m)
        for p, m in caught.value.problems
        if p.endswith(path) or p.startswith("salesChannels")
    ]
    assert where.endswith(path) and what.startswith(message), caught.value.problems


def test_duplicate_criteria_are_refused() -> None:
    doc = contact_document("ACME")
    doc["organization"]["contactCriteria"].append({"code": "JAZZ", "name": {"en": "Jazz 2"}})
    with pytest.raises(SetupFileError) as caught:
        parse_document(doc)
    assert caught.value.problems == [("organization.contactCriteria", "code JAZZ is used twice")]
