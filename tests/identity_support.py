"""What the contacts and identity tests share: an institution with criteria, consents and
sign-in settings, a second institution for tenancy, and helpers for the contact API."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Api, set_secrets
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


async def contact_world(engine: AsyncEngine, **pos_settings: Any) -> None:
    """ACME (with the settings above) and OTHR, each with a web and a reseller operator."""
    await import_document(engine, contact_document("ACME", **pos_settings))
    await import_document(engine, contact_document("OTHR"))
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
