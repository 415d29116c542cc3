"""The organizer API's payloads (pydantic), camelCase on the wire as in TIXNGO's interface.

Incoming tickets and privileges are validated one by one (see ``services.injection``), so one
bad item in a batch is refused on its own while the others go in.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)

from billetterie_wallet.barcodes import MAX_KEY_ID, check_public_key

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,63}$")
MAX_BATCH = 1000


def _email(value: str) -> str:
    value = value.strip().lower()
    if not EMAIL.match(value):
        raise ValueError("not an email address")
    return value


def _sane_time(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date out of range") from None
    if not 1970 <= utc.year <= 2200:
        raise ValueError("date out of range (1970-2200)")
    return utc


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _strict_json(value: dict[str, Any]) -> dict[str, Any]:
    """Python's JSON parser takes NaN and Infinity; strict JSON (and PostgreSQL) does not.
    (A walk over the parsed value: encoding it to find them cost more than validating the
    rest of the ticket.)"""
    if not _finite(value):
        raise ValueError("numbers must be finite (no NaN or Infinity)")
    return value


def _as_text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


When = Annotated[AwareDatetime, AfterValidator(_sane_time)]
FreeForm = Annotated[dict[str, Any], AfterValidator(_strict_json)]
Email = Annotated[str, Field(max_length=254), AfterValidator(_email)]
ExternalId = Annotated[str, BeforeValidator(_as_text), Field(min_length=1, max_length=100)]
Name = Annotated[str, Field(max_length=100)]


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, str_strip_whitespace=True)


class Address(Model):
    site: Annotated[str, Field(max_length=200)] | None = None
    city: Annotated[str, Field(max_length=200)] | None = None
    country_code: Annotated[str, Field(pattern=r"^[A-Za-z]{2}$")] | None = Field(
        None, alias="countryCode"
    )
    zip: Annotated[str, BeforeValidator(_as_text), Field(max_length=20)] | None = None


class EventIn(Model):
    id: ExternalId
    name: Annotated[str, Field(min_length=1, max_length=300)]
    start_time: When = Field(alias="startTime")
    expiration_date: When | None = Field(None, alias="expirationDate")
    address: Address | None = None
    metadata: FreeForm = Field(default_factory=dict)


class Security(Model):
    barcode: Annotated[str, Field(min_length=1, max_length=512)]


class SpectatorDetails(Model):
    first_name: Name | None = Field(None, alias="firstName")
    last_name: Name | None = Field(None, alias="lastName")
    email: Email
    gender: Annotated[str, Field(max_length=16)] | None = None


class ActivationParameters(Model):
    group_id: ExternalId = Field(alias="groupId")
    method: Literal["online", "offline"] = "offline"
    time: When | None = None
    algorithm: Literal["SHA1", "SHA256"] = "SHA256"


class TransferRulesIn(Model):
    transferable: bool = True
    max_transfers: Annotated[int, Field(ge=0, le=100)] | None = Field(None, alias="maxTransfers")
    transfer_deadline: When | None = Field(None, alias="transferDeadline")
    resale_allowed: bool = Field(False, alias="resaleAllowed")


class TicketIn(Model):
    ticket_id: ExternalId = Field(alias="ticketId")
    event: EventIn
    purchase_details: FreeForm = Field(alias="purchaseDetails")
    security: Security
    spectator_details: SpectatorDetails = Field(alias="spectatorDetails")
    activation_parameters: ActivationParameters = Field(alias="activationParameters")
    transfer_rules: TransferRulesIn = Field(default_factory=TransferRulesIn, alias="transferRules")


class DefinitionIn(Model):
    id: ExternalId
    name: Annotated[str, Field(min_length=1, max_length=300)]
    type: Literal["MEMBERSHIP", "SEASON_CARD"]
    valid_from: When | None = Field(None, alias="validFrom")
    valid_until: When | None = Field(None, alias="validUntil")
    metadata: FreeForm = Field(default_factory=dict)


class PrivilegeIn(Model):
    privilege_id: ExternalId = Field(alias="privilegeId")
    definition: DefinitionIn
    security: Security
    spectator_details: SpectatorDetails = Field(alias="spectatorDetails")
    linked_ticket_ids: list[ExternalId] = Field(
        default_factory=list, alias="linkedTicketIds", max_length=100
    )


# Request bodies: items stay raw so that each is validated (and refused) on its own.
class TicketBatch(BaseModel):
    tickets: list[Any]


class PrivilegeBatch(BaseModel):
    privileges: list[Any]


class TicketIds(BaseModel):
    ticket_ids: list[ExternalId] = Field(alias="ticketIds", min_length=1, max_length=MAX_BATCH)
    model_config = ConfigDict(populate_by_name=True)


class DeleteRequest(TicketIds):
    reason: Literal["CANCELLED", "INVALIDATED"] = "CANCELLED"


class PrivilegeIds(BaseModel):
    privilege_ids: list[ExternalId] = Field(
        alias="privilegeIds", min_length=1, max_length=MAX_BATCH
    )
    reason: Literal["CANCELLED", "INVALIDATED"] = "CANCELLED"
    model_config = ConfigDict(populate_by_name=True)


def _public_key(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("publicKey must be base64 text")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("publicKey must be base64") from None
    check_public_key(raw)
    return raw


class BarcodeKeyIn(BaseModel):
    key_id: Annotated[int, Field(ge=0, le=MAX_KEY_ID, strict=True)] = Field(alias="keyId")
    public_key: Annotated[bytes, BeforeValidator(_public_key)] = Field(alias="publicKey")
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class BarcodeKeys(BaseModel):
    """The organizer's box-office barcode keys still verifiable (the box office publishes
    them at ``GET /api/v1/barcodes/keys``)."""

    keys: list[BarcodeKeyIn] = Field(max_length=100)

    @field_validator("keys")
    @classmethod
    def _distinct(cls, keys: list[BarcodeKeyIn]) -> list[BarcodeKeyIn]:
        if len({k.key_id for k in keys}) != len(keys):
            raise ValueError("a keyId appears twice")
        return keys


class ScanRequest(BaseModel):
    code: Annotated[str, Field(min_length=1, max_length=1200)]
    scanner: Annotated[str, Field(min_length=1, max_length=100)] = "scanner"


# --- answers (what the OpenAPI document shows) ---------------------------------------------


class Answer(BaseModel):
    """What the wallet answers: no field beyond the documented ones (tests check answers)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ItemResult(Answer):
    """One item of a batch: ``status`` CREATED, UPDATED, UNCHANGED, a ticket status
    (delete, controlled) or ERROR, which carries a stable ``code`` and a ``detail``."""

    ticket_id: str | None = Field(None, alias="ticketId")
    privilege_id: str | None = Field(None, alias="privilegeId")
    status: str
    code: str | None = None
    detail: str | None = None


class BatchResult(Answer):
    results: list[ItemResult]
    summary: dict[str, int]


class LogEntry(Answer):
    action: str
    status: str
    actor: str
    device: str | None
    at: str
    data: dict[str, Any]


class Owner(Answer):
    email: str


class Holder(Answer):
    first_name: str | None = Field(alias="firstName")
    last_name: str | None = Field(alias="lastName")


class FeedbackTicket(Answer):
    ticket_id: str = Field(alias="ticketId")
    event_id: str = Field(alias="eventId")
    status: str
    wallet_owner: Owner = Field(alias="walletOwner")
    holder: Holder | None
    transfer_count: int = Field(alias="transferCount")
    controlled_at: str | None = Field(alias="controlledAt")
    deleted_at: str | None = Field(alias="deletedAt")
    updated_at: str | None = Field(alias="updatedAt")
    log_entries: list[LogEntry] = Field(alias="logEntries")


class FeedbackPage(Answer):
    tickets: list[FeedbackTicket]
    next_key: str = Field(alias="nextKey")
    has_more: bool = Field(alias="hasMore")


class ReportEntry(LogEntry):
    ticket_id: str = Field(alias="ticketId")
    event_id: str = Field(alias="eventId")


class ReportPage(Answer):
    entries: list[ReportEntry]
    next_cursor: str | None = Field(alias="nextCursor")


class ScanResult(Answer):
    result: Literal[
        "VALID", "DUPLICATE", "EXPIRED", "INVALID_BARCODE", "UNKNOWN_GROUP", "MALFORMED"
    ]
    group_id: str | None = Field(None, alias="groupId")
    barcode: str | None = None
    step_offset: int | None = Field(None, alias="stepOffset")
    first_scan_at: str | None = Field(None, alias="firstScanAt")
    code: str | None = None
    detail: str | None = None


class BarcodeKeyOut(Answer):
    key_id: int = Field(alias="keyId")
    public_key: str = Field(alias="publicKey")
    state: Literal["VERIFIABLE", "RETIRED"]
    registered_at: str = Field(alias="registeredAt")
    retired_at: str | None = Field(alias="retiredAt")


class BarcodeKeyList(Answer):
    keys: list[BarcodeKeyOut]


class BarcodeKeyChanges(BarcodeKeyList):
    added: list[int]
    retired: list[int]
