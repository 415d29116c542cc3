"""Request and response models of contactInformationPublicService (``tnco``, v2_21)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from billetterie.compat.schemas import Envelope, Request, StorableText

Short = Annotated[str, Field(max_length=255)]
Number = Annotated[int, Field(ge=1, le=2**53 - 1)]
Password = Annotated[str, Field(max_length=256)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddressIn(Strict):
    addressType: Literal["MAIN", "BILLING", "SHIPPING"] = "MAIN"
    street1: Short | None = None
    street2: Short | None = None
    zipCode: Annotated[str, Field(max_length=16)] | None = None
    town: Annotated[str, Field(max_length=128)] | None = None
    countryCode: Annotated[str, Field(max_length=2)] | None = None


class AuthorizationIn(Strict):
    authorizationCode: Annotated[str, Field(min_length=1, max_length=16)]
    allowed: bool


class TicketHolderIn(Strict):
    firstName: Annotated[str, Field(max_length=128)]
    lastName: Annotated[str, Field(max_length=128)]
    email: Annotated[str, Field(max_length=320)] | None = None
    birthDate: Annotated[str, Field(max_length=10)] | None = None


class GeneralIn(Strict):
    type: Literal["INDIVIDUAL", "STRUCTURE"] = "INDIVIDUAL"
    title: Annotated[str, Field(max_length=32)] | None = None
    firstName: Annotated[str, Field(max_length=128)] | None = None
    lastName: Annotated[str, Field(max_length=128)] | None = None
    structureName: Short | None = None
    nickname: Annotated[str, Field(max_length=64)] | None = None
    email: Annotated[str, Field(max_length=320)] | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    birthDate: Annotated[str, Field(max_length=10)] | None = None
    language: Annotated[str, Field(max_length=8)] | None = None


class ContactIn(GeneralIn):
    identifier: Annotated[str, Field(max_length=64)] | None = None
    createLogin: bool = False
    password: Password | None = None
    addresses: Annotated[list[AddressIn], Field(max_length=3)] = Field(default_factory=list)
    criteria: Annotated[list[Annotated[str, Field(max_length=16)]], Field(max_length=200)] = Field(
        default_factory=list
    )
    authorizations: Annotated[list[AuthorizationIn], Field(max_length=100)] = Field(
        default_factory=list
    )


class CreateCulturalContactRequest(Request):
    contactDataList: Annotated[list[ContactIn], Field(min_length=1, max_length=100)]


class CreatedContact(BaseModel):
    identifier: str | None = None
    contactNumber: int


class CreateCulturalContactResponse(Envelope):
    contactNumbers: list[CreatedContact] = []


class GetContactDataRequest(Request):
    contactNumber: Number
    details: Annotated[
        list[Literal["GENERAL", "ADDRESSES", "AUTHORIZATIONS", "CRITERIA", "TICKET_HOLDERS"]],
        Field(max_length=5),
    ] = Field(default=["GENERAL"])


class IndividualContactOut(BaseModel):
    individualTitle: str | None = None
    individualFirstname: str | None = None
    individualLastname: str | None = None
    nickname: str | None = None
    email: str | None = None
    phone: str | None = None
    birthDate: str | None = None


class StructureContactOut(BaseModel):
    structureName: str | None = None
    email: str | None = None
    phone: str | None = None


class AddressOut(BaseModel):
    addressType: str
    street1: str | None = None
    street2: str | None = None
    zipCode: str | None = None
    town: str | None = None
    countryCode: str | None = None


class AuthorizationOut(BaseModel):
    authorizationCode: str
    allowed: bool
    date: str | None = None
    source: str | None = None


class CriterionOut(BaseModel):
    criterionCode: str


class TicketHolderOut(BaseModel):
    id: int | None = None
    firstName: str
    lastName: str
    email: str | None = None
    birthDate: str | None = None


class ContactDataOut(BaseModel):
    contactNumber: int
    type: str
    contactState: str
    language: str | None = None
    creationDate: str
    lastUpdate: str
    hasLogin: bool
    emailVerified: bool
    individualContact: IndividualContactOut | None = None
    structureContact: StructureContactOut | None = None
    addresses: list[AddressOut] | None = None
    authorizations: list[AuthorizationOut] | None = None
    contactCriteria: list[CriterionOut] | None = None
    ticketHolders: list[TicketHolderOut] | None = None


class GetContactDataResponse(Envelope):
    contactData: ContactDataOut | None = None


class UpdateContactRequest(Request):
    contactNumber: Number
    contactData: GeneralIn | None = None
    addresses: Annotated[list[AddressIn], Field(max_length=3)] | None = None
    criteria: (
        Annotated[list[Annotated[str, Field(max_length=16)]], Field(max_length=200)] | None
    ) = None
    authorizations: Annotated[list[AuthorizationIn], Field(max_length=100)] | None = None
    ticketHolders: Annotated[list[TicketHolderIn], Field(max_length=50)] | None = None


class DeleteContactRequest(Request):
    contactNumber: Number


class SearchContactsByEmailRequest(Request):
    email: Annotated[StorableText, Field(min_length=3, max_length=320)]


class ContactSummary(BaseModel):
    contactNumber: int
    type: str
    individualFirstname: str | None = None
    individualLastname: str | None = None
    structureName: str | None = None
    email: str | None = None
    hasLogin: bool


class SearchContactsByEmailResponse(Envelope):
    contacts: list[ContactSummary] = []


class AuthenticateRequest(Request):
    login: Annotated[str, Field(min_length=1, max_length=320)]
    password: Password
    pointOfSalesId: Number


class AuthenticateResponse(Envelope):
    contactNumber: int | None = None


class ChangePasswordRequest(Request):
    login: Annotated[str, Field(min_length=1, max_length=320)]
    oldPassword: Password
    newPassword: Password
    pointOfSalesId: Number


class ChangePasswordResponse(Envelope):
    contactNumber: int | None = None
