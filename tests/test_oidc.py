"""OpenID Connect: the point of sale as a provider (authorization code + PKCE, ID token checked
against the JWKS, userinfo, refusals), and as a relying party of a provider served over real
HTTP by another app instance (linking by provider id, by verified email, by password, or a new
account), and the exclusive mode."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.app import build_app
from billetterie.contacts import db as contacts_db
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import read
from tests.conftest import NOW, Backend, settings_for
from tests.identity_support import (
    browser,
    contact_world,
    error_code,
    free_port,
    link_in,
    mails,
    post_form,
    register,
    served,
    shop_app,
    sign_in,
)

PASSWORD = "correct horse 42"
SHOP = "/shop/ACMEWEB"
ISSUER = f"http://testserver{SHOP}"
PUBLIC = "acme-website"
PUBLIC_REDIRECT = "https://www.acme.example/callback"
BACKEND = "acme-backend"
BACKEND_SECRET = "backend secret 1"
HASHER = PasswordHasher()

CLIENTS = [
    {"clientId": PUBLIC, "redirectUris": [PUBLIC_REDIRECT]},
    {
        "clientId": BACKEND,
        "redirectUris": ["https://www.acme.example/cb2"],
        "clientSecretHash": HASHER.hash(BACKEND_SECRET),
    },
]


@pytest.fixture
async def app(
    scratch_engine: AsyncEngine, backend: Backend, clock: FixedClock, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    await contact_world(scratch_engine, oidcClients=CLIENTS)
    async with shop_app(backend.scratch_url, tmp_path, clock) as app:
        yield app


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, create_s256_code_challenge(verifier)


def authorize_query(challenge: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": PUBLIC,
        "redirect_uri": PUBLIC_REDIRECT,
        "scope": "openid email profile",
        "state": "st-1",
        "nonce": "n-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


async def code_for(client: httpx.AsyncClient, challenge: str, **extra: str) -> str:
    response = await client.get(
        f"{SHOP}/oidc/authorize", params=authorize_query(challenge, **extra)
    )
    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    query = parse_qs(location.query)
    assert f"{location.scheme}://{location.netloc}{location.path}" == PUBLIC_REDIRECT
    assert query["state"] == ["st-1"] and query["iss"] == [ISSUER]
    return query["code"][0]


async def redeem(
    client: httpx.AsyncClient, code: str, verifier: str, **extra: Any
) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": PUBLIC_REDIRECT,
        "client_id": PUBLIC,
        "code_verifier": verifier,
        **extra,
    }
    return await client.post(f"{SHOP}/oidc/token", data=data)


async def test_code_flow_with_pkce(app: FastAPI) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
        number = int(
            (await client.get(f"{SHOP}/account"))
            .text.split('data-contact-number="')[1][:12]
            .split('"')[0]
        )
        discovery = (await client.get(f"{SHOP}/.well-known/openid-configuration")).json()
        assert discovery["issuer"] == ISSUER
        assert discovery["code_challenge_methods_supported"] == ["S256"]
        assert discovery["token_endpoint"] == f"{ISSUER}/oidc/token"
        keys = (await client.get(urlsplit(discovery["jwks_uri"]).path)).json()

        verifier, challenge = pkce()
        code = await code_for(client, challenge)
        response = await redeem(client, code, verifier)
        assert response.status_code == 200, response.text
        tokens = response.json()
        assert tokens["token_type"] == "Bearer" and tokens["scope"] == "openid email profile"
        key_set = jwt.PyJWKSet.from_dict(keys)
        id_token = jwt.decode(
            tokens["id_token"],
            key_set.keys[0].key,
            algorithms=["RS256"],
            audience=PUBLIC,
            issuer=ISSUER,
            options={"verify_exp": False, "verify_iat": False},
        )
        assert id_token["sub"] == str(number) and id_token["nonce"] == "n-1"
        assert (id_token["email"], id_token["email_verified"]) == ("ada@example.org", False)
        assert (id_token["given_name"], id_token["family_name"]) == ("Ada", "Lovelace")
        assert id_token["iat"] == int(NOW.timestamp())

        info = await client.get(
            f"{SHOP}/oidc/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert info.json() == {
            "sub": str(number),
            "contact_number": number,
            "email": "ada@example.org",
            "email_verified": False,
            "given_name": "Ada",
            "family_name": "Lovelace",
        }

        # A code is good once; the second use is invalid_grant.
        again = await redeem(client, code, verifier)
        assert again.status_code == 400
        assert again.headers["content-type"] == "application/problem+json"
        assert (again.json()["error"], again.json()["code"]) == (
            "invalid_grant",
            "error.oidc.invalid_grant",
        )
        # A wrong verifier burns the code; the right one cannot use it afterwards.
        code = await code_for(client, challenge)
        assert (await redeem(client, code, pkce()[0])).json()["error"] == "invalid_grant"
        assert (await redeem(client, code, verifier)).json()["error"] == "invalid_grant"
        # Bound to its redirect_uri and client.
        code = await code_for(client, challenge)
        other = await redeem(client, code, verifier, redirect_uri="https://www.acme.example/x")
        assert other.json()["error"] == "invalid_grant"
        # Not redeemable on another point of sale.
        code = await code_for(client, challenge)
        foreign = await client.post(
            "/shop/OTHRWEB/oidc/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": PUBLIC_REDIRECT,
                "client_id": PUBLIC,
                "code_verifier": verifier,
            },
        )
        assert foreign.status_code == 401 and foreign.json()["error"] == "invalid_client"
        assert (await redeem(client, code, verifier)).status_code == 200

        # Userinfo refuses what is not our token.
        for header in ({}, {"Authorization": "Bearer x.y.z"}, {"Authorization": "Basic abc"}):
            refused = await client.get(f"{SHOP}/oidc/userinfo", headers=header)
            assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
            assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        forged = jwt.encode({"sub": str(number), "scope": "openid"}, "g" * 32, algorithm="HS256")
        refused = await client.get(
            f"{SHOP}/oidc/userinfo", headers={"Authorization": f"Bearer {forged}"}
        )
        assert refused.status_code == 401


async def test_confidential_clients_authenticate(app: FastAPI) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
        verifier, challenge = pkce()
        query = authorize_query(
            challenge, client_id=BACKEND, redirect_uri="https://www.acme.example/cb2"
        )
        codes = []
        for _ in range(3):
            response = await client.get(f"{SHOP}/oidc/authorize", params=query)
            codes.append(parse_qs(urlsplit(response.headers["location"]).query)["code"][0])
        data = {
            "grant_type": "authorization_code",
            "redirect_uri": "https://www.acme.example/cb2",
            "code_verifier": verifier,
        }
        without = await client.post(
            f"{SHOP}/oidc/token", data={**data, "code": codes[0], "client_id": BACKEND}
        )
        assert without.status_code == 401 and without.json()["error"] == "invalid_client"
        wrong = await client.post(
            f"{SHOP}/oidc/token", data={**data, "code": codes[0]}, auth=(BACKEND, "nope")
        )
        assert wrong.status_code == 401
        basic = await client.post(
            f"{SHOP}/oidc/token", data={**data, "code": codes[1]}, auth=(BACKEND, BACKEND_SECRET)
        )
        assert basic.status_code == 200 and "id_token" in basic.json()
        posted = await client.post(
            f"{SHOP}/oidc/token",
            data={
                **data,
                "code": codes[2],
                "client_id": BACKEND,
                "client_secret": BACKEND_SECRET,
            },
        )
        assert posted.status_code == 200


async def test_authorize_refusals(app: FastAPI, scratch_engine: AsyncEngine) -> None:
    async with browser(app) as client:
        _, challenge = pkce()
        # Not signed in: the shop's login page, and back.
        response = await client.get(f"{SHOP}/oidc/authorize", params=authorize_query(challenge))
        assert response.headers["location"].startswith(f"{SHOP}/account/login?next=")
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
        # Unknown client or redirect URI: an error page, never a redirect.
        for extra, code in [
            ({"client_id": "nobody"}, "error.oidc.unknown_client"),
            ({"redirect_uri": "https://evil.example/cb"}, "error.oidc.bad_redirect_uri"),
            ({"redirect_uri": PUBLIC_REDIRECT + "/more"}, "error.oidc.bad_redirect_uri"),
        ]:
            page = await client.get(
                f"{SHOP}/oidc/authorize", params=authorize_query(challenge, **extra)
            )
            assert page.status_code in {400, 401} and "location" not in page.headers
            assert error_code(page.text) == code
        # Other mistakes go back to the client with error= (RFC 6749 §4.1.2.1).
        for extra in (
            {"code_challenge_method": "plain"},
            {"code_challenge": "short"},
            {"response_type": "token"},
            {"scope": "email"},
            {"scope": "openid admin"},
        ):
            response = await client.get(
                f"{SHOP}/oidc/authorize", params=authorize_query(challenge, **extra)
            )
            assert response.status_code == 303
            query = parse_qs(urlsplit(response.headers["location"]).query)
            assert query["error"] == ["invalid_request"] and query["state"] == ["st-1"]
            assert "code" not in query
        for body in ({"grant_type": "password"}, {"grant_type": "authorization_code"}):
            refused = await client.post(f"{SHOP}/oidc/token", data=body)
            assert refused.status_code in {400, 401}
    async with read(scratch_engine) as conn:
        from billetterie.identity import db as identity_db

        codes = (
            await conn.execute(sa.select(sa.func.count()).select_from(identity_db.oidc_code))
        ).scalar_one()
    assert codes == 0


# --- the shop as a relying party ---------------------------------------------------------------


RP_SECRET = "relying party secret 1"


@pytest.fixture
async def federation(
    scratch_engine: AsyncEngine, backend: Backend, clock: FixedClock, tmp_path: Path
) -> AsyncIterator[tuple[FastAPI, FastAPI, str]]:
    """ACME's shop signs contacts in with OTHR's shop, served on a real port."""
    port = free_port()
    provider_url = f"http://127.0.0.1:{port}"
    await contact_world(
        scratch_engine,
        other={
            "oidcClients": [
                {
                    "clientId": "acme-shop",
                    "redirectUris": [f"http://testserver{SHOP}/oidc/client/callback"],
                    "clientSecretHash": HASHER.hash(RP_SECRET),
                }
            ]
        },
        identityProvider={
            "issuer": f"{provider_url}/shop/OTHRWEB",
            "clientId": "acme-shop",
            "clientSecret": RP_SECRET,
            "name": "Othr ID",
        },
    )
    provider_settings = settings_for(backend.scratch_url, tmp_path / "provider").model_copy(
        update={"dev_mail": True, "background_tasks": False, "public_url": provider_url}
    )
    provider = build_app(provider_settings, clock=clock)
    async with served(provider, port), shop_app(backend.scratch_url, tmp_path, clock) as shop:
        yield shop, provider, provider_url


async def federated_sign_in(
    shop_client: httpx.AsyncClient, provider_client: httpx.AsyncClient
) -> httpx.Response:
    start = await shop_client.get(f"{SHOP}/oidc/client/start", params={"next": f"{SHOP}/account"})
    assert start.status_code == 303, start.text
    authorize = urlsplit(start.headers["location"])
    assert authorize.path == "/shop/OTHRWEB/oidc/authorize"
    answer = await provider_client.get(f"{authorize.path}?{authorize.query}")
    assert answer.status_code == 303, answer.text
    callback = urlsplit(answer.headers["location"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == (
        f"http://testserver{SHOP}/oidc/client/callback"
    )
    return await shop_client.get(f"{callback.path}?{callback.query}")


async def external_links(engine: AsyncEngine) -> list[tuple[int, str]]:
    async with read(engine) as conn:
        rows = (
            await conn.execute(
                sa.select(
                    contacts_db.contact_external_identity.c.contact_id,
                    contacts_db.contact_external_identity.c.subject,
                )
            )
        ).all()
    return [(r[0], r[1]) for r in rows]


async def test_relying_party_links_accounts(
    federation: tuple[FastAPI, FastAPI, str], scratch_engine: AsyncEngine
) -> None:
    shop, provider, provider_url = federation
    async with (
        httpx.AsyncClient(base_url=provider_url) as grace_at_provider,
        browser(shop) as grace,
    ):
        await register(grace_at_provider, "OTHRWEB", "grace@example.org", PASSWORD)
        # Unknown here: the link-account page, then a new account from the provider's claims.
        response = await federated_sign_in(grace, grace_at_provider)
        assert response.headers["location"] == f"{SHOP}/oidc/client/link"
        page = await grace.get(f"{SHOP}/oidc/client/link")
        assert "Othr ID signed you in as grace@example.org" in page.text
        created = await post_form(
            grace, f"{SHOP}/oidc/client/link", {}, action=f"{SHOP}/oidc/client/create"
        )
        assert created.headers["location"] == f"{SHOP}/account"
        account = await grace.get(f"{SHOP}/account")
        assert "Ada Lovelace" in account.text  # the provider's given and family names
    [(grace_number, grace_subject)] = await external_links(scratch_engine)

    # Next time the provider's id is enough.
    async with (
        httpx.AsyncClient(base_url=provider_url) as at_provider,
        browser(shop) as client,
    ):
        await sign_in(at_provider, "OTHRWEB", "grace@example.org", PASSWORD)
        response = await federated_sign_in(client, at_provider)
        assert response.headers["location"] == f"{SHOP}/account"
        assert f'data-contact-number="{grace_number}"' in (await client.get(f"{SHOP}/account")).text

    # A verified email equal to an account's login links by itself.
    async with browser(shop) as ada:
        await register(ada, "ACMEWEB", "ada@example.org", PASSWORD)
        ada_number = int(
            (await ada.get(f"{SHOP}/account")).text.split('data-contact-number="')[1].split('"')[0]
        )
    async with httpx.AsyncClient(base_url=provider_url) as at_provider, browser(shop) as client:
        await register(at_provider, "OTHRWEB", "ada@example.org", PASSWORD)
        verify = next(m for m in mails(provider) if m.recipient == "ada@example.org")
        verified = await at_provider.get(link_in(verify.body).removeprefix(provider_url))
        assert verified.status_code == 200
        response = await federated_sign_in(client, at_provider)
        assert response.headers["location"] == f"{SHOP}/account"
        assert f'data-contact-number="{ada_number}"' in (await client.get(f"{SHOP}/account")).text

    # An unverified email is linked only with the account's password.
    async with browser(shop) as bob:
        await register(bob, "ACMEWEB", "bob@example.org", PASSWORD)
    async with httpx.AsyncClient(base_url=provider_url) as at_provider, browser(shop) as client:
        await register(at_provider, "OTHRWEB", "bob@example.org", PASSWORD)
        response = await federated_sign_in(client, at_provider)
        assert response.headers["location"] == f"{SHOP}/oidc/client/link"
        wrong = await post_form(
            client,
            f"{SHOP}/oidc/client/link",
            {"email": "bob@example.org", "password": "nope 1234"},
        )
        assert error_code(wrong.text) == "error.contact.bad_credentials"
        linked = await post_form(
            client, f"{SHOP}/oidc/client/link", {"email": "bob@example.org", "password": PASSWORD}
        )
        assert linked.status_code == 303
    links = await external_links(scratch_engine)
    assert len(links) == 3 and (grace_number, grace_subject) in links
    assert ada_number in {n for n, _ in links}


async def test_relying_party_refuses_what_it_did_not_start(
    federation: tuple[FastAPI, FastAPI, str],
) -> None:
    shop, _, provider_url = federation
    async with httpx.AsyncClient(base_url=provider_url) as at_provider, browser(shop) as client:
        await register(at_provider, "OTHRWEB", "grace@example.org", PASSWORD)
        start = await client.get(f"{SHOP}/oidc/client/start")
        authorize = urlsplit(start.headers["location"])
        answer = await at_provider.get(f"{authorize.path}?{authorize.query}")
        callback = urlsplit(answer.headers["location"])
        query = parse_qs(callback.query)
        forged = await client.get(
            callback.path, params={"code": query["code"][0], "state": "not-ours"}
        )
        assert forged.status_code == 400 and error_code(forged.text) == "error.oidc.state"
        async with browser(shop) as stranger:  # no flow cookie at all
            stolen = await stranger.get(f"{callback.path}?{callback.query}")
            assert error_code(stolen.text) == "error.oidc.state"
        bad_code = await client.get(
            callback.path, params={"code": "made-up", "state": query["state"][0]}
        )
        assert bad_code.status_code == 502 and error_code(bad_code.text) == "error.oidc.provider"
        assert (await client.get(f"{SHOP}/account")).status_code == 303


async def test_exclusive_mode_turns_passwords_off(
    scratch_engine: AsyncEngine, backend: Backend, clock: FixedClock, tmp_path: Path
) -> None:
    await contact_world(
        scratch_engine,
        identityProvider={
            "issuer": "https://id.acme.example",
            "clientId": "shop",
            "clientSecret": "x",
            "name": "Acme ID",
            "exclusive": True,
        },
    )
    async with shop_app(backend.scratch_url, tmp_path, clock) as app, browser(app) as client:
        page = await client.get(f"{SHOP}/account/login")
        assert 'name="password"' not in page.text and "Sign in with Acme ID" in page.text
        csrf = client.cookies["bt_csrf"]
        response = await client.post(
            f"{SHOP}/account/login",
            data={"email": "a@example.org", "password": PASSWORD, "csrf_token": csrf},
        )
        assert error_code(response.text) == "error.account.password_login_disabled"
        form = await client.get(f"{SHOP}/account/register")
        assert form.status_code == 403
        refused = await client.post(
            f"{SHOP}/account/register",
            data={
                "email": "a@example.org",
                "password": PASSWORD,
                "lastName": "A",
                "csrf_token": csrf,
            },
        )
        assert error_code(refused.text) == "error.account.password_login_disabled"
    async with read(scratch_engine) as conn:
        count = (
            await conn.execute(sa.select(sa.func.count()).select_from(contacts_db.contact))
        ).scalar_one()
    assert count == 0
