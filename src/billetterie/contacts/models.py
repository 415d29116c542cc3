"""The contacts' vocabulary; nothing here knows storage or the wire."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class ContactType(StrEnum):
    INDIVIDUAL = "INDIVIDUAL"
    STRUCTURE = "STRUCTURE"


class AddressKind(StrEnum):
    MAIN = "MAIN"
    BILLING = "BILLING"
    SHIPPING = "SHIPPING"


class Detail(StrEnum):
    """The sections ``getContactData`` can return (``GENERAL`` always comes)."""

    GENERAL = "GENERAL"
    ADDRESSES = "ADDRESSES"
    AUTHORIZATIONS = "AUTHORIZATIONS"
    CRITERIA = "CRITERIA"
    TICKET_HOLDERS = "TICKET_HOLDERS"


class ContactState(StrEnum):
    ACTIVE = "ACTIVE"
    ERASED = "ERASED"


@dataclass(frozen=True)
class Address:
    kind: AddressKind
    street: str | None = None
    street2: str | None = None
    zip: str | None = None
    city: str | None = None
    country_code: str | None = None


@dataclass(frozen=True)
class Authorization:
    code: str
    allowed: bool
    at: datetime | None = None
    source: str | None = None


@dataclass(frozen=True)
class TicketHolder:
    first_name: str
    last_name: str
    email: str | None = None
    birth_date: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class ContactInput:
    """What a caller gives to create or update a contact's general section."""

    type: ContactType = ContactType.INDIVIDUAL
    title: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    structure_name: str | None = None
    nickname: str | None = None
    email: str | None = None
    phone: str | None = None
    birth_date: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class Contact:
    number: int
    institution_id: int
    type: ContactType
    state: ContactState
    title: str | None
    first_name: str | None
    last_name: str | None
    structure_name: str | None
    nickname: str | None
    email: str | None
    phone: str | None
    birth_date: str | None
    language: str | None
    login: str | None
    has_password: bool
    email_verified: bool
    origin_sales_channel_id: int | None
    created_at: datetime
    updated_at: datetime
    addresses: list[Address] = field(default_factory=list)
    authorizations: list[Authorization] = field(default_factory=list)
    criteria: list[str] = field(default_factory=list)
    ticket_holders: list[TicketHolder] = field(default_factory=list)


@dataclass(frozen=True)
class Criterion:
    code: str
    name: dict[str, str]


def normalize_email(email: str) -> str:
    """Logins compare case-insensitively; surrounding blanks are never part of them."""
    return email.strip().lower()
