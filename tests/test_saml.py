"""The point of sale as a SAML identity provider, against a pysaml2 service provider: a round
trip with signatures verified by the SP, tampered responses and requests, replays, unknown
service providers, foreign ACS URLs, the HTTP-POST binding and single logout."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
from saml2.xmldsig import SIG_RSA_SHA256
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.shared.clock import FixedClock
from tests.conftest import Backend
from tests.identity_support import browser, contact_world, error_code, register, shop_app

PASSWORD = "correct horse 42"
SHOP = "/shop/ACMEWEB"
SP_ENTITY = "https://www.acme.example/saml/sp"
ACS = "https://www.acme.example/saml/acs"
SP_SLO = "https://www.acme.example/saml/slo"


@dataclass
class Credentials:
    key_file: Path
    cert_file: Path
    cert_pem: str


def make_credentials(folder: Path, name: str) -> Credentials:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    key_file, cert_file = folder / f"{name}.key", folder / f"{name}.crt"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_file.write_text(cert_pem)
    return Credentials(key_file, cert_file, cert_pem)


@pytest.fixture(scope="module")
def sp_credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("sp"), "sp")


@pytest.fixture
async def app(
    scratch_engine: AsyncEngine,
    backend: Backend,
    clock: FixedClock,
    tmp_path: Path,
    sp_credentials: Credentials,
) -> AsyncIterator[FastAPI]:
    await contact_world(
        scratch_engine,
        samlServiceProviders=[
            {
                "entityId": SP_ENTITY,
                "assertionConsumerService": ACS,
                "singleLogoutService": SP_SLO,
                "certificate": sp_credentials.cert_pem,
            }
        ],
    )
    async with shop_app(backend.scratch_url, tmp_path, clock) as app:
        yield app


async def service_provider(
    client: httpx.AsyncClient, credentials: Credentials, entity_id: str = SP_ENTITY
) -> Saml2Client:
    """A pysaml2 SP that trusts the IdP's published metadata."""
    response = await client.get(f"{SHOP}/saml/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/samlmetadata+xml")
    config = SPConfig()
    config.load(
        {
            "entityid": entity_id,
            "service": {
                "sp": {
                    "endpoints": {
                        "assertion_consumer_service": [(ACS, BINDING_HTTP_POST)],
                        "single_logout_service": [(SP_SLO, BINDING_HTTP_REDIRECT)],
                    },
                    "want_response_signed": True,
                    "want_assertions_signed": True,
                    "allow_unsolicited": False,
                }
            },
            "key_file": str(credentials.key_file),
            "cert_file": str(credentials.cert_file),
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "metadata": {"inline": [response.text]},
            "allow_unknown_attributes": True,
        }
    )
    return Saml2Client(config=config)


IDP = f"http://testserver{SHOP}/saml/metadata"


def redirect_request(sp: Saml2Client, **kwargs: str) -> tuple[str, str]:
    request_id, info = sp.prepare_for_authenticate(
        entityid=IDP, relay_state="/welcome", binding=BINDING_HTTP_REDIRECT, **kwargs
    )
    location = dict(info["headers"])["Location"]
    parts = urlsplit(location)
    assert parts.path == f"{SHOP}/saml/sso"
    return request_id, f"{parts.path}?{parts.query}"


def posted_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'name="([^"]+)" value="([^"]*)"', html))


async def test_round_trip_with_login_and_signed_assertion(
    app: FastAPI, sp_credentials: Credentials
) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
        number = int(
            (await client.get(f"{SHOP}/account"))
            .text.split('data-contact-number="')[1]
            .split('"')[0]
        )
        await client.post(f"{SHOP}/account/logout", data={"csrf_token": client.cookies["bt_csrf"]})
        sp = await service_provider(client, sp_credentials)
        request_id, url = redirect_request(sp)
        # Not signed in: the shop's own login page, then back to the same request.
        bounce = await client.get(url)
        assert bounce.status_code == 303
        login_url = bounce.headers["location"]
        assert login_url.startswith(f"{SHOP}/account/login?next=")
        login_page = await client.get(login_url)
        next_url = parse_qs(urlsplit(login_url).query)["next"][0]
        assert next_url == url
        token = re.search(r'name="csrf_token" value="([^"]+)"', login_page.text)
        assert token
        signed = await client.post(
            f"{SHOP}/account/login",
            data={
                "email": "ada@example.org",
                "password": PASSWORD,
                "next": next_url,
                "csrf_token": token.group(1),
            },
        )
        assert signed.headers["location"] == url
        page = await client.get(url)
    assert page.status_code == 200
    assert f'action="{ACS}"' in page.text
    fields = posted_fields(page.text)
    assert fields["RelayState"] == "/welcome"

    response = sp.parse_authn_request_response(
        fields["SAMLResponse"], BINDING_HTTP_POST, outstanding={request_id: "/welcome"}
    )
    assert response is not None
    assert response.get_subject().text == str(number)
    assert response.get_subject().format == NAMEID_FORMAT_PERSISTENT
    assert response.ava == {
        "contactNumber": [str(number)],
        "givenName": ["Ada"],
        "sn": ["Lovelace"],
        "mail": ["ada@example.org"],
    }
    xml = base64.b64decode(fields["SAMLResponse"]).decode()
    assert len(re.findall(r"<\w+:SignatureValue>", xml)) == 2  # the response and the assertion

    # A response altered on the way is refused by the SP.
    tampered = base64.b64encode(xml.replace("ada@example.org", "eve@example.org").encode())
    sp_again = Saml2Client(config=sp.config)
    with pytest.raises(Exception, match=r"(?i)signature"):
        sp_again.parse_authn_request_response(
            tampered.decode(), BINDING_HTTP_POST, outstanding={request_id: "/welcome"}
        )


async def test_replays_unknown_sps_and_foreign_acs_are_refused(
    app: FastAPI, sp_credentials: Credentials, tmp_path: Path
) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
        sp = await service_provider(client, sp_credentials)
        _, url = redirect_request(sp)
        assert (await client.get(url)).status_code == 200
        replay = await client.get(url)
        assert replay.status_code == 400 and error_code(replay.text) == "error.saml.replayed"

        stranger = await service_provider(
            client, make_credentials(tmp_path, "stranger"), "https://evil.example/sp"
        )
        _, url = redirect_request(stranger)
        refused = await client.get(url)
        assert refused.status_code == 400
        assert error_code(refused.text) == "error.saml.unknown_service_provider"

        _, url = redirect_request(sp, assertion_consumer_service_url="https://evil.example/acs")
        refused = await client.get(url)
        assert error_code(refused.text) == "error.saml.bad_destination"

        _, url = redirect_request(sp)
        path, query = url.split("?", 1)
        params = parse_qs(query)
        broken = params["SAMLRequest"][0]
        broken = broken[:20] + ("A" if broken[20] != "A" else "B") + broken[21:]
        refused = await client.get(path, params={"SAMLRequest": broken})
        assert refused.status_code == 400
        assert error_code(refused.text) == "error.saml.invalid_request"
        for bad in ({}, {"SAMLRequest": "%%%"}, {"SAMLRequest": "x" * 60_000}):
            refused = await client.get(path, params=bad)
            assert refused.status_code == 400
            assert error_code(refused.text) == "error.saml.invalid_request"


async def test_post_binding_and_single_logout(app: FastAPI, sp_credentials: Credentials) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
        sp = await service_provider(client, sp_credentials)
        request_id, info = sp.prepare_for_authenticate(
            entityid=IDP, relay_state="r1", binding=BINDING_HTTP_POST
        )
        form = posted_fields(info["data"])
        posted = await client.post(
            f"{SHOP}/saml/sso",
            data={"SAMLRequest": form["SAMLRequest"], "RelayState": form["RelayState"]},
        )
        assert posted.status_code == 303
        page = await client.get(posted.headers["location"])
        fields = posted_fields(page.text)
        response = sp.parse_authn_request_response(
            fields["SAMLResponse"], BINDING_HTTP_POST, outstanding={request_id: "r1"}
        )
        name_id = response.get_subject()

        _, unsigned = sp.create_logout_request(
            f"http://testserver{SHOP}/saml/slo",
            IDP,
            name_id=NameID(format=name_id.format, text=name_id.text),
            sign=False,
        )
        info = sp.apply_binding(
            BINDING_HTTP_REDIRECT, str(unsigned), f"http://testserver{SHOP}/saml/slo", "x"
        )
        location = urlsplit(dict(info["headers"])["Location"])
        refused = await client.get(f"{location.path}?{location.query}")
        assert error_code(refused.text) == "error.saml.invalid_request"
        assert (await client.get(f"{SHOP}/account")).status_code == 200  # still signed in

        _, logout = sp.create_logout_request(
            f"http://testserver{SHOP}/saml/slo",
            IDP,
            name_id=NameID(format=name_id.format, text=name_id.text),
            sign=True,
            sign_alg=SIG_RSA_SHA256,
        )
        info = sp.apply_binding(
            BINDING_HTTP_REDIRECT,
            str(logout),
            f"http://testserver{SHOP}/saml/slo",
            "bye",
            sign=True,
            sigalg=SIG_RSA_SHA256,
        )
        location = urlsplit(dict(info["headers"])["Location"])
        answer = await client.get(f"{location.path}?{location.query}")
        assert answer.status_code == 303
        back = urlsplit(answer.headers["location"])
        assert f"{back.scheme}://{back.netloc}{back.path}" == SP_SLO
        saml_response = parse_qs(back.query)["SAMLResponse"][0]
        assert parse_qs(back.query)["RelayState"] == ["bye"]
        parsed = sp.parse_logout_request_response(saml_response, BINDING_HTTP_REDIRECT)
        assert parsed is not None and parsed.status_ok()
        assert any(
            c.startswith("stx_contact_ACME_WEB_v1=") for c in answer.headers.get_list("set-cookie")
        )
        account = await client.get(f"{SHOP}/account")
        assert account.headers["location"] == f"{SHOP}/account/login"


async def test_a_service_provider_that_must_sign(
    scratch_engine: AsyncEngine,
    backend: Backend,
    clock: FixedClock,
    tmp_path: Path,
    sp_credentials: Credentials,
) -> None:
    await contact_world(
        scratch_engine,
        samlServiceProviders=[
            {
                "entityId": SP_ENTITY,
                "assertionConsumerService": ACS,
                "certificate": sp_credentials.cert_pem,
                "wantRequestsSigned": True,
            }
        ],
    )
    async with shop_app(backend.scratch_url, tmp_path, clock) as app, browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
        sp = await service_provider(client, sp_credentials)
        _, unsigned = redirect_request(sp)
        refused = await client.get(unsigned)
        assert error_code(refused.text) == "error.saml.invalid_request"

        _, signed = redirect_request(sp, sign=True, sigalg=SIG_RSA_SHA256)
        assert "Signature=" in signed
        path, query = signed.split("?", 1)
        params = {k: v[0] for k, v in parse_qs(query).items()}
        forged = dict(params, RelayState="/somewhere-else")  # the signature covers RelayState
        refused = await client.get(path, params=forged)
        assert error_code(refused.text) == "error.saml.invalid_request"
        stranger = make_credentials(tmp_path, "stranger")
        other_sp = await service_provider(client, stranger)
        _, wrong_key = redirect_request(other_sp, sign=True, sigalg=SIG_RSA_SHA256)
        refused = await client.get(wrong_key)
        assert error_code(refused.text) == "error.saml.invalid_request"

        accepted = await client.get(signed)
        assert accepted.status_code == 200 and f'action="{ACS}"' in accepted.text
