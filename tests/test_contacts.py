"""contactInformationPublicService over HTTP on both databases: contents, erasure, passwords,
tenancy (authorization matrix) and the contact events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog.setupfile import parse_document
from billetterie.contacts import db as contacts_db
from billetterie.setup import export_institution, import_institution
from billetterie.shared.audit import audit_entry
from billetterie.shared.db import read
from tests.conftest import NOW, Api
from tests.identity_support import (
    contact_call,
    contact_world,
    create_contact,
    person,
    world_tokens,
)

PASSWORD = "correct horse 42"


@pytest.fixture
async def world(scratch_engine: AsyncEngine, scratch_api: Api) -> AsyncIterator[dict[str, str]]:
    await contact_world(scratch_engine)
    yield await world_tokens(scratch_api)


async def ok(api: Api, method: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    response = await contact_call(api, method, body, token)
    data: dict[str, Any] = response.json()
    assert response.status_code == 200 and data["statusCode"] == "success", data
    return data


async def refused(
    api: Api, method: str, body: dict[str, Any] | None, token: str | None, status: int = 200
) -> str:
    response = await contact_call(api, method, body, token)
    assert response.status_code == status, response.text
    code: str = response.json()["statusCode"]
    assert code != "success"
    return code


async def contact_count(engine: AsyncEngine) -> int:
    async with read(engine) as conn:
        return int(
            (
                await conn.execute(sa.select(sa.func.count()).select_from(contacts_db.contact))
            ).scalar_one()
        )


async def audit_actions(engine: AsyncEngine, prefix: str) -> list[tuple[str, Any]]:
    async with read(engine) as conn:
        rows = (
            await conn.execute(
                sa.select(audit_entry.c.action, audit_entry.c.data)
                .where(audit_entry.c.action.startswith(prefix))
                .order_by(audit_entry.c.id)
            )
        ).all()
    return [(r.action, r.data) for r in rows]


FULL = ["GENERAL", "ADDRESSES", "AUTHORIZATIONS", "CRITERIA", "TICKET_HOLDERS"]


async def test_create_and_read_every_section(scratch_api: Api, world: dict[str, str]) -> None:
    body = {
        "contactDataList": [
            person(
                1,
                title="Dr",
                phone="+41 21 000 00 00",
                birthDate="1815-12-10",
                language="en",
                addresses=[
                    {
                        "addressType": "MAIN",
                        "street1": "1 Analytical Street",
                        "zipCode": "1000",
                        "town": "Lausanne",
                        "countryCode": "CH",
                    },
                    {"addressType": "BILLING", "street1": "2 Engine Road", "town": "London"},
                ],
                criteria=["OPERA", "JAZZ"],
                authorizations=[
                    {"authorizationCode": "NEWS", "allowed": True},
                    {"authorizationCode": "PARTNERS", "allowed": False},
                ],
            ),
            {"identifier": "s1", "type": "STRUCTURE", "structureName": "Babbage & Co"},
        ]
    }
    created = await ok(scratch_api, "createCulturalContact", body, world["web"])
    [first, second] = created["contactNumbers"]
    assert [first["identifier"], second["identifier"]] == ["p1", "s1"]
    assert second["contactNumber"] == first["contactNumber"] + 1

    data = (
        await ok(
            scratch_api,
            "getContactData",
            {"contactNumber": first["contactNumber"], "details": FULL},
            world["web"],
        )
    )["contactData"]
    assert data == {
        "contactNumber": first["contactNumber"],
        "type": "INDIVIDUAL",
        "contactState": "ACTIVE",
        "language": "en",
        "creationDate": NOW.isoformat(),
        "lastUpdate": NOW.isoformat(),
        "hasLogin": False,
        "emailVerified": False,
        "individualContact": {
            "individualTitle": "Dr",
            "individualFirstname": "Ada1",
            "individualLastname": "Lovelace1",
            "email": "ada1@example.org",
            "phone": "+41 21 000 00 00",
            "birthDate": "1815-12-10",
        },
        "addresses": [
            {"addressType": "BILLING", "street1": "2 Engine Road", "town": "London"},
            {
                "addressType": "MAIN",
                "street1": "1 Analytical Street",
                "zipCode": "1000",
                "town": "Lausanne",
                "countryCode": "CH",
            },
        ],
        "authorizations": [
            {
                "authorizationCode": "NEWS",
                "allowed": True,
                "date": NOW.isoformat(),
                "source": "operator:ACME_WEB",
            },
            {
                "authorizationCode": "PARTNERS",
                "allowed": False,
                "date": NOW.isoformat(),
                "source": "operator:ACME_WEB",
            },
        ],
        "contactCriteria": [{"criterionCode": "JAZZ"}, {"criterionCode": "OPERA"}],
        "ticketHolders": [],
    }
    general = (
        await ok(
            scratch_api, "getContactData", {"contactNumber": second["contactNumber"]}, world["web"]
        )
    )["contactData"]
    assert general["structureContact"] == {"structureName": "Babbage & Co"}
    assert "addresses" not in general and "individualContact" not in general


async def test_a_bad_item_creates_nothing(
    scratch_api: Api, scratch_engine: AsyncEngine, world: dict[str, str]
) -> None:
    before = await contact_count(scratch_engine)
    for item, code in [
        (person(2, criteria=["ROCK"]), "error.contact.unknown_criterion"),
        (
            person(2, authorizations=[{"authorizationCode": "SPAM", "allowed": True}]),
            "error.contact.unknown_authorization",
        ),
        (person(2, email="not-an-email"), "error.contact.invalid"),
        (person(2, lastName=" "), "error.contact.invalid"),
        (person(2, createLogin=True, password="short"), "error.contact.weak_password"),
        (person(2, password=PASSWORD), "error.contact.invalid"),
        (person(2, firstName="A\x00da"), "error.contact.invalid"),
    ]:
        body = {"contactDataList": [person(1), item]}
        assert await refused(scratch_api, "createCulturalContact", body, world["web"]) == code
    for body in (
        {"contactDataList": []},
        {"contactDataList": [person(1, shoeSize=42)]},
        {"contactDataList": [person(1, addresses=[{"addressType": "HOLIDAY"}])]},
        {"contactDataList": "everyone"},
    ):
        code = await refused(scratch_api, "createCulturalContact", body, world["web"], status=400)
        assert code == "error.request.invalid"
    assert await contact_count(scratch_engine) == before
    assert await audit_actions(scratch_engine, "contacts.") == []


async def test_logins_are_unique_and_checked(
    scratch_api: Api, scratch_engine: AsyncEngine, world: dict[str, str]
) -> None:
    web = world["web"]
    pos = await pos_id(scratch_api, web)
    number = await create_contact(scratch_api, web, createLogin=True, password=PASSWORD)
    login = {"login": "ADA1@example.org ", "password": PASSWORD, "pointOfSalesId": pos}
    assert (await ok(scratch_api, "authenticate", login, web))["contactNumber"] == number
    for wrong in ({**login, "password": PASSWORD + "!"}, {**login, "login": "eve@example.org"}):
        assert await refused(scratch_api, "authenticate", wrong, web) == (
            "error.contact.bad_credentials"
        )
    before = await contact_count(scratch_engine)
    duplicate = {"contactDataList": [person(1, email="Ada1@Example.org", createLogin=True)]}
    code = await refused(scratch_api, "createCulturalContact", duplicate, web)
    assert code == "error.contact.duplicate_login"
    assert await contact_count(scratch_engine) == before
    # The same email without a login is another contact (a purchaser without an account).
    await create_contact(scratch_api, web, email="ada1@example.org")
    nul = {"email": "ada1\x00@example.org"}
    code = await refused(scratch_api, "searchContactsByEmail", nul, web, status=400)
    assert code == "error.request.invalid"
    found = await ok(scratch_api, "searchContactsByEmail", {"email": "ADA1@example.org"}, web)
    assert [(c["contactNumber"], c["hasLogin"]) for c in found["contacts"]] == [
        (number, True),
        (number + 1, False),
    ]

    change = {
        "login": "ada1@example.org",
        "oldPassword": PASSWORD,
        "newPassword": "another horse 43",
        "pointOfSalesId": pos,
    }
    for bad, code in [
        ({**change, "oldPassword": "guess guess 1"}, "error.contact.bad_credentials"),
        ({**change, "newPassword": "12345678901"}, "error.contact.weak_password"),
    ]:
        assert await refused(scratch_api, "changePassword", bad, web) == code
    assert (await ok(scratch_api, "changePassword", change, web))["contactNumber"] == number
    assert await refused(scratch_api, "authenticate", login, web) == "error.contact.bad_credentials"
    new_login = {**login, "password": "another horse 43"}
    assert (await ok(scratch_api, "authenticate", new_login, web))["contactNumber"] == number


async def pos_id(api: Api, token: str) -> int:
    response = await api.rpc("catalogService", "getPOSConfig", {}, token=token)
    value: int = response.json()["posConfigData"]["posId"]
    return value


async def test_update_replaces_the_sections_given(
    scratch_api: Api, world: dict[str, str], clock: Any
) -> None:
    web = world["web"]
    number = await create_contact(
        scratch_api,
        web,
        createLogin=True,
        password=PASSWORD,
        authorizations=[{"authorizationCode": "NEWS", "allowed": True}],
        criteria=["JAZZ"],
    )
    later = NOW.replace(minute=30)
    clock.set(later)
    try:
        updated = await ok(
            scratch_api,
            "updateContact",
            {
                "contactNumber": number,
                "contactData": {
                    "firstName": "Augusta",
                    "lastName": "King",
                    "email": "augusta@example.org",
                },
                "authorizations": [
                    {"authorizationCode": "NEWS", "allowed": True},
                    {"authorizationCode": "PARTNERS", "allowed": True},
                ],
                "ticketHolders": [{"firstName": "Byron", "lastName": "King"}],
            },
            web,
        )
    finally:
        clock.set(NOW)
    data = updated["contactData"]
    assert data["individualContact"]["individualFirstname"] == "Augusta"
    assert data["lastUpdate"] == later.isoformat()
    # A consent given again keeps its time; a new one has the update's time.
    assert [(a["authorizationCode"], a["date"]) for a in data["authorizations"]] == [
        ("NEWS", NOW.isoformat()),
        ("PARTNERS", later.isoformat()),
    ]
    assert data["contactCriteria"] == [{"criterionCode": "JAZZ"}]  # not given: kept
    assert [(h["firstName"], h["lastName"]) for h in data["ticketHolders"]] == [("Byron", "King")]
    # The login follows the email.
    pos = await pos_id(scratch_api, web)
    login = {"login": "augusta@example.org", "password": PASSWORD, "pointOfSalesId": pos}
    assert (await ok(scratch_api, "authenticate", login, web))["contactNumber"] == number
    old = {**login, "login": "ada1@example.org"}
    assert await refused(scratch_api, "authenticate", old, web) == "error.contact.bad_credentials"


async def test_erasure_keeps_the_number_and_nothing_else(
    scratch_api: Api, scratch_engine: AsyncEngine, world: dict[str, str]
) -> None:
    web = world["web"]
    pos = await pos_id(scratch_api, web)
    number = await create_contact(
        scratch_api,
        web,
        createLogin=True,
        password=PASSWORD,
        addresses=[{"addressType": "MAIN", "town": "Lausanne"}],
        criteria=["OPERA"],
        authorizations=[{"authorizationCode": "NEWS", "allowed": True}],
    )
    await ok(scratch_api, "deleteContact", {"contactNumber": number}, web)
    await ok(scratch_api, "deleteContact", {"contactNumber": number}, web)  # idempotent
    data = (
        await ok(scratch_api, "getContactData", {"contactNumber": number, "details": FULL}, web)
    )["contactData"]
    assert data == {
        "contactNumber": number,
        "type": "INDIVIDUAL",
        "contactState": "ERASED",
        "creationDate": NOW.isoformat(),
        "lastUpdate": NOW.isoformat(),
        "hasLogin": False,
        "emailVerified": False,
    }
    async with read(scratch_engine) as conn:
        row = (
            await conn.execute(
                sa.select(contacts_db.contact).where(contacts_db.contact.c.id == number)
            )
        ).one()
        for table in (
            contacts_db.contact_address,
            contacts_db.contact_criterion_choice,
            contacts_db.contact_authorization,
            contacts_db.ticket_holder,
        ):
            left = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(table.c.contact_id == number)
                )
            ).scalar_one()
            assert left == 0, table.name
    assert (row.first_name, row.last_name, row.email, row.login, row.password_hash) == (None,) * 5
    found = await ok(scratch_api, "searchContactsByEmail", {"email": "ada1@example.org"}, web)
    assert found["contacts"] == []
    login = {"login": "ada1@example.org", "password": PASSWORD, "pointOfSalesId": pos}
    assert await refused(scratch_api, "authenticate", login, web) == "error.contact.bad_credentials"
    update = {"contactNumber": number, "criteria": ["JAZZ"]}
    assert await refused(scratch_api, "updateContact", update, web) == "error.contact.erased"
    # The email is free again for a new account.
    assert await create_contact(scratch_api, web, createLogin=True) == number + 1

    events = [a for a, _ in await audit_actions(scratch_engine, "contacts.webhook.")]
    assert events == [
        "contacts.webhook.created",
        "contacts.webhook.erased",
        "contacts.webhook.created",
    ]
    [(_, erased)] = [e for e in await audit_actions(scratch_engine, "contacts.webhook.erased")]
    assert erased == {
        "event": "contact.erased",
        "point_of_sale_id": pos,
        "subject_id": number,
    }


async def test_authorization_matrix(scratch_api: Api, world: dict[str, str]) -> None:
    web, reseller, other = world["web"], world["reseller"], world["other"]
    web_contact = await create_contact(scratch_api, web, createLogin=True, password=PASSWORD)
    reseller_contact = await create_contact(scratch_api, reseller, email="buyer@example.org")
    pos = await pos_id(scratch_api, web)
    reads: list[tuple[str, dict[str, Any]]] = [
        ("getContactData", {"contactNumber": web_contact}),
        ("updateContact", {"contactNumber": web_contact, "criteria": ["JAZZ"]}),
        ("deleteContact", {"contactNumber": web_contact}),
    ]
    logins: list[tuple[str, dict[str, Any]]] = [
        (
            "authenticate",
            {"login": "ada1@example.org", "password": PASSWORD, "pointOfSalesId": pos},
        ),
        (
            "changePassword",
            {
                "login": "ada1@example.org",
                "oldPassword": PASSWORD,
                "newPassword": PASSWORD + "x",
                "pointOfSalesId": pos,
            },
        ),
    ]
    every = [
        *reads,
        *logins,
        ("createCulturalContact", {"contactDataList": [person(9)]}),
        ("searchContactsByEmail", {"email": "ada1@example.org"}),
    ]
    for method, body in every:
        # anonymous, and a token that is not one
        assert await refused(scratch_api, method, body, None, 401) == "error.auth.missing_token"
        assert await refused(scratch_api, method, body, "x.y.z", 401) == "error.auth.invalid_token"
    for method, body in reads:
        # another institution, and a reseller of the same institution, do not see the contact
        assert await refused(scratch_api, method, body, other) == "error.contact.unknown"
        assert await refused(scratch_api, method, body, reseller) == "error.contact.unknown"
    for method, body in logins:
        assert await refused(scratch_api, method, body, reseller) == "error.contact.forbidden"
        # another institution's operator names its own point of sale: no such login there
        other_pos = await pos_id(scratch_api, other)
        assert (
            await refused(scratch_api, method, {**body, "pointOfSalesId": other_pos}, other)
            == "error.contact.bad_credentials"
        )
        # a point of sale that is not the operator's
        assert (
            await refused(scratch_api, method, {**body, "pointOfSalesId": other_pos}, web)
            == "error.contact.forbidden"
        )
    for token in (other, reseller):
        found = await ok(scratch_api, "searchContactsByEmail", {"email": "ada1@example.org"}, token)
        assert found["contacts"] == []
    # The reseller sees its own customer; the institution's web shop sees every contact.
    for token in (reseller, web):
        data = await ok(scratch_api, "getContactData", {"contactNumber": reseller_contact}, token)
        assert data["contactData"]["individualContact"]["email"] == "buyer@example.org"
    # Allowed: the web shop's operator does all of it.
    for method, body in [*reads[:2], *logins, *every[-2:], reads[2]]:
        await ok(scratch_api, method, body, web)


async def test_criteria_and_sign_in_settings_round_trip(
    scratch_engine: AsyncEngine, world: dict[str, str]
) -> None:
    async with read(scratch_engine) as conn:
        exported = await export_institution(conn, "ACME")
    assert exported["organization"]["contactCriteria"] == [
        {"code": "JAZZ", "name": {"en": "Jazz", "fr": "Jazz (fr)"}},
        {"code": "OPERA", "name": {"en": "Opera", "fr": "Opera (fr)"}},
    ]
    assert [a["code"] for a in exported["organization"]["contactAuthorizations"]] == [
        "NEWS",
        "PARTNERS",
    ]
    web = exported["salesChannels"][0]["pointsOfSale"][0]
    assert web["returnHosts"] == ["www.acme.example"]
    again = await import_institution(scratch_engine, parse_document(exported), now=NOW, actor="t")
    assert again.changes == 0
    exported["organization"]["contactCriteria"].pop()
    changed = await import_institution(scratch_engine, parse_document(exported), now=NOW, actor="t")
    assert changed.changes == 1
