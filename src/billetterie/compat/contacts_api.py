"""contactInformationPublicService (module ``tnco``), version v2_21.

Who sees what: contacts belong to the institution; an operator of a RESELLER channel sees only
the contacts created through its channel, and may not check or change passwords. Every other
operator of the institution sees all of its contacts. A contact outside the caller's view
answers ``error.contact.unknown``, exactly like a number that does not exist.
"""

from __future__ import annotations

from typing import Any

from billetterie.catalog.models import ChannelType
from billetterie.compat import contacts_schemas as cs
from billetterie.compat.rpc import Call, RpcService
from billetterie.compat.schemas import Envelope
from billetterie.contacts import services
from billetterie.contacts.errors import ContactAccessDenied
from billetterie.contacts.models import (
    Address,
    AddressKind,
    Authorization,
    Contact,
    ContactInput,
    ContactState,
    ContactType,
    Detail,
    TicketHolder,
)
from billetterie.shared.db import read

VERSIONS = ("v2_21",)
contact_service = RpcService(
    "tnco", "contactInformationPublicService", VERSIONS, "Contacts of the institution"
)


async def scope_of(call: Call) -> services.ContactScope:
    context = await call.context()
    return services.ContactScope(
        institution_id=context.institution_id,
        sales_channel_id=context.sales_channel.id,
        own_channel_only=context.sales_channel.channel_type == ChannelType.RESELLER,
    )


async def login_institution(call: Call, point_of_sales_id: int) -> int:
    """Password checks are for the institution's own channels, on the caller's point of sale."""
    context = await call.context()
    if context.sales_channel.channel_type == ChannelType.RESELLER:
        raise ContactAccessDenied("a reseller's operator cannot check contact passwords")
    if point_of_sales_id != call.operator.point_of_sale_id:
        raise ContactAccessDenied("pointOfSalesId is not the operator's point of sale")
    return context.institution_id


def actor_of(call: Call) -> str:
    return f"operator:{call.operator.login}"


def general(data: cs.GeneralIn) -> ContactInput:
    return ContactInput(
        type=ContactType(data.type),
        title=data.title,
        first_name=data.firstName,
        last_name=data.lastName,
        structure_name=data.structureName,
        nickname=data.nickname,
        email=data.email,
        phone=data.phone,
        birth_date=data.birthDate,
        language=data.language,
    )


def addresses(items: list[cs.AddressIn]) -> list[Address]:
    return [
        Address(AddressKind(a.addressType), a.street1, a.street2, a.zipCode, a.town, a.countryCode)
        for a in items
    ]


def authorizations(items: list[cs.AuthorizationIn]) -> list[Authorization]:
    return [Authorization(a.authorizationCode, a.allowed) for a in items]


def without_none(value: Any) -> Any:
    """The wire leaves absent fields out rather than sending nulls."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def contact_json(contact: Contact) -> dict[str, Any]:
    data: dict[str, Any] = {
        "contactNumber": contact.number,
        "type": contact.type.value,
        "contactState": contact.state.value,
        "language": contact.language,
        "creationDate": contact.created_at.isoformat(),
        "lastUpdate": contact.updated_at.isoformat(),
        "hasLogin": contact.login is not None,
        "emailVerified": contact.email_verified,
    }
    if contact.state is ContactState.ERASED:
        return data
    if contact.type is ContactType.INDIVIDUAL:
        data["individualContact"] = {
            "individualTitle": contact.title,
            "individualFirstname": contact.first_name,
            "individualLastname": contact.last_name,
            "nickname": contact.nickname,
            "email": contact.email,
            "phone": contact.phone,
            "birthDate": contact.birth_date,
        }
    else:
        data["structureContact"] = {
            "structureName": contact.structure_name,
            "email": contact.email,
            "phone": contact.phone,
        }
    return data


def sections_json(contact: Contact, details: set[Detail]) -> dict[str, Any]:
    data = contact_json(contact)
    if contact.state is ContactState.ERASED:
        return without_none(data)  # type: ignore[no-any-return]
    if Detail.ADDRESSES in details:
        data["addresses"] = [
            {
                "addressType": a.kind.value,
                "street1": a.street,
                "street2": a.street2,
                "zipCode": a.zip,
                "town": a.city,
                "countryCode": a.country_code,
            }
            for a in contact.addresses
        ]
    if Detail.AUTHORIZATIONS in details:
        data["authorizations"] = [
            {
                "authorizationCode": a.code,
                "allowed": a.allowed,
                "date": a.at.isoformat() if a.at else None,
                "source": a.source,
            }
            for a in contact.authorizations
        ]
    if Detail.CRITERIA in details:
        data["contactCriteria"] = [{"criterionCode": code} for code in contact.criteria]
    if Detail.TICKET_HOLDERS in details:
        data["ticketHolders"] = [
            {
                "id": h.id,
                "firstName": h.first_name,
                "lastName": h.last_name,
                "email": h.email,
                "birthDate": h.birth_date,
            }
            for h in contact.ticket_holders
        ]
    result: dict[str, Any] = without_none(data)
    return result


@contact_service.method(
    "createCulturalContact",
    request=cs.CreateCulturalContactRequest,
    response=cs.CreateCulturalContactResponse,
)
async def create_cultural_contact(
    body: cs.CreateCulturalContactRequest, call: Call
) -> dict[str, Any]:
    """Create contacts, all or none. ``createLogin`` makes the email the contact's login (with
    ``password``, or without one: the contact then sets it through the shop's reset page)."""
    numbers = await services.create_contacts(
        call.runtime.engine,
        await scope_of(call),
        [
            services.NewContact(
                general=general(item),
                identifier=item.identifier,
                create_login=item.createLogin,
                password=item.password,
                addresses=addresses(item.addresses),
                criteria=list(item.criteria),
                authorizations=authorizations(item.authorizations),
            )
            for item in body.contactDataList
        ],
        point_of_sale_id=call.operator.point_of_sale_id,
        actor=actor_of(call),
        now=call.runtime.clock.now(),
    )
    return {
        "contactNumbers": [
            {"identifier": item.identifier, "contactNumber": number}
            for item, number in zip(body.contactDataList, numbers, strict=True)
        ]
    }


@contact_service.method(
    "getContactData", request=cs.GetContactDataRequest, response=cs.GetContactDataResponse
)
async def get_contact_data(body: cs.GetContactDataRequest, call: Call) -> dict[str, Any]:
    """One contact; ``details`` picks the sections (GENERAL always comes). An erased contact
    answers its number, type and ``contactState: ERASED`` only."""
    details = {Detail(d) for d in body.details} | {Detail.GENERAL}
    async with read(call.runtime.engine) as conn:
        contact = await services.get_contact(
            conn, await scope_of(call), body.contactNumber, details
        )
    return {"contactData": sections_json(contact, details)}


@contact_service.method(
    "updateContact", request=cs.UpdateContactRequest, response=cs.GetContactDataResponse
)
async def update_contact(body: cs.UpdateContactRequest, call: Call) -> dict[str, Any]:
    """Replace the sections given (``contactData``, ``addresses``, ``criteria``,
    ``authorizations``, ``ticketHolders``); absent sections stay. Answers the whole contact."""
    contact = await services.update_contact(
        call.runtime.engine,
        await scope_of(call),
        body.contactNumber,
        services.ContactChanges(
            general=general(body.contactData) if body.contactData is not None else None,
            addresses=addresses(body.addresses) if body.addresses is not None else None,
            criteria=list(body.criteria) if body.criteria is not None else None,
            authorizations=authorizations(body.authorizations)
            if body.authorizations is not None
            else None,
            ticket_holders=[
                TicketHolder(h.firstName, h.lastName, h.email, h.birthDate)
                for h in body.ticketHolders
            ]
            if body.ticketHolders is not None
            else None,
        ),
        point_of_sale_id=call.operator.point_of_sale_id,
        actor=actor_of(call),
        now=call.runtime.clock.now(),
    )
    return {"contactData": sections_json(contact, set(Detail))}


@contact_service.method("deleteContact", request=cs.DeleteContactRequest, response=Envelope)
async def delete_contact(body: cs.DeleteContactRequest, call: Call) -> dict[str, Any]:
    """Erase a contact: its personal data go, its number stays for the orders that cite it.
    Idempotent."""
    await services.erase_contact(
        call.runtime.engine,
        await scope_of(call),
        body.contactNumber,
        point_of_sale_id=call.operator.point_of_sale_id,
        actor=actor_of(call),
        now=call.runtime.clock.now(),
    )
    return {}


@contact_service.method(
    "searchContactsByEmail",
    request=cs.SearchContactsByEmailRequest,
    response=cs.SearchContactsByEmailResponse,
)
async def search_contacts_by_email(
    body: cs.SearchContactsByEmailRequest, call: Call
) -> dict[str, Any]:
    """The caller's visible contacts with this email (case-insensitive), at most 50."""
    async with read(call.runtime.engine) as conn:
        found = await services.search_by_email(conn, await scope_of(call), body.email)
    return {
        "contacts": [
            without_none(
                {
                    "contactNumber": c.number,
                    "type": c.type.value,
                    "individualFirstname": c.first_name,
                    "individualLastname": c.last_name,
                    "structureName": c.structure_name,
                    "email": c.email,
                    "hasLogin": c.login is not None,
                }
            )
            for c in found
        ]
    }


@contact_service.method(
    "authenticate", request=cs.AuthenticateRequest, response=cs.AuthenticateResponse
)
async def authenticate(body: cs.AuthenticateRequest, call: Call) -> dict[str, Any]:
    """Check a contact's login and password; answers its number, or
    ``error.contact.bad_credentials`` for an unknown login and a wrong password alike."""
    institution_id = await login_institution(call, body.pointOfSalesId)
    async with read(call.runtime.engine) as conn:
        number = await services.authenticate(conn, institution_id, body.login, body.password)
    return {"contactNumber": number}


@contact_service.method(
    "changePassword", request=cs.ChangePasswordRequest, response=cs.ChangePasswordResponse
)
async def change_password(body: cs.ChangePasswordRequest, call: Call) -> dict[str, Any]:
    """Change a contact's password knowing the old one."""
    institution_id = await login_institution(call, body.pointOfSalesId)
    number = await services.change_password(
        call.runtime.engine,
        institution_id,
        login=body.login,
        old_password=body.oldPassword,
        new_password=body.newPassword,
        actor=actor_of(call),
        now=call.runtime.clock.now(),
    )
    return {"contactNumber": number}
