"""The setup file: an institution's whole configuration as one declarative YAML document.

Parsing happens in two passes, both before anything is written:

1. shape — pydantic models with ``extra="forbid"``: types, enums, ISO dates, amounts;
2. references — every code a section names exists where it must (seasons, tariffs, seat
   categories, configurations, channels...), and codes are unique.

Every problem is reported as ``path: message`` with the path in the document
(``products[3].event.performances[2].start: not an ISO date``). See ``docs/setup-file.md``.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from billetterie.catalog.models import (
    AudienceCategoryKind,
    ChannelType,
    ContactLoginMode,
    ItemKind,
    MainAudienceCategory,
    PaymentType,
    PerformanceState,
    ProductFamily,
    ProductState,
    SeasonState,
    SeatSelectionMode,
    SecondaryAudienceCategory,
)
from billetterie.shared.money import parse_amount

CODE_PATTERN = r"^[A-Z0-9][A-Z0-9_\-]{0,15}$"


class SetupFileError(Exception):
    """The document is not a valid setup file; ``problems`` lists ``(path, message)``."""

    code = "error.setup.invalid"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{path}: {message}" for path, message in problems))


# --- field types ---------------------------------------------------------------------------


def _iso_datetime(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time())
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    raise PydanticCustomError("iso_date", "not an ISO date")


def _iso_date(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise PydanticCustomError("iso_date", "not an ISO date")


def _clock_time(value: Any) -> Any:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return time(value // 60, value % 60)  # YAML 1.1 reads an unquoted 10:00 as 600
    if isinstance(value, str):
        try:
            return time.fromisoformat(value.strip())
        except ValueError:
            pass
    raise PydanticCustomError("clock_time", "not a time of day (HH:MM)")


def _amount(value: Any) -> Any:
    try:
        return parse_amount(value)
    except ValueError as exc:
        if str(exc) == "not an amount":
            raise PydanticCustomError("amount", "not an amount") from exc
        raise PydanticCustomError(
            "amount", "not an amount ({reason})", {"reason": str(exc)}
        ) from exc


def _duration(value: Any) -> Any:
    """Seconds as an integer, or ``"2h30"``, ``"90min"``, ``"PT2H30M"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        text = value.strip().upper()
        match = re.fullmatch(r"P?T?(?:(\d+)H)?(?:(\d+)(?:M|MIN))?(?:(\d+)S)?", text)
        seconds = None
        if text and match and any(match.groups()):
            hours, minutes, secs = (int(g or 0) for g in match.groups())
            seconds = hours * 3600 + minutes * 60 + secs
        match = re.fullmatch(r"(\d+)H(\d+)", text)
        if match:
            seconds = int(match[1]) * 3600 + int(match[2]) * 60
        if seconds:
            return seconds
    raise PydanticCustomError("duration", "not a duration (seconds, '2h30', '90min' or 'PT2H30M')")


def _local_text(value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        return {"": value}  # the main language, filled in once the organization is known
    if (
        isinstance(value, dict)
        and value
        and all(
            isinstance(k, str) and re.fullmatch(r"[a-z]{2}", k) and isinstance(v, str)
            for k, v in value.items()
        )
    ):
        return value
    raise PydanticCustomError(
        "local_text", "not a text (a string, or a mapping of ISO 639-1 codes to strings)"
    )


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_datetime)]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
ClockTime = Annotated[time, BeforeValidator(_clock_time)]
Amount = Annotated[int, BeforeValidator(_amount)]
Duration = Annotated[int, BeforeValidator(_duration)]
LocalText = Annotated[dict[str, str], BeforeValidator(_local_text)]
Code = Annotated[str, Field(pattern=CODE_PATTERN)]
Language = Annotated[str, Field(pattern=r"^[a-z]{2}$")]
# seat category code -> tariff code -> amount, or price level code -> amount
PriceGrid = dict[str, dict[str, Amount | dict[str, Amount]]]
TariffPrices = dict[str, Amount | dict[str, Amount]]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


# --- sections ------------------------------------------------------------------------------


class InstitutionSpec(Model):
    code: Code
    name: LocalText
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class ContactChoiceSpec(Model):
    """An interest (criterion) or a legal authorization a contact can choose."""

    code: Code
    name: LocalText


class OrganizationSpec(Model):
    code: Code
    name: LocalText
    timeZone: str
    mainLanguage: Language
    languages: list[Language] = Field(min_length=1)
    contactCriteria: list[ContactChoiceSpec] = Field(default_factory=list)
    contactAuthorizations: list[ContactChoiceSpec] = Field(default_factory=list)


class PaymentMethodSpec(Model):
    code: Code
    name: LocalText
    type: PaymentType
    forPayment: bool = True
    forReimbursement: bool = True


class ExternalUrls(Model):
    termsOfSale: str | None = None
    privacy: str | None = None
    help: str | None = None
    contact: str | None = None
    home: str | None = None


def _url(value: Any) -> Any:
    if isinstance(value, str) and not re.match(r"^https?://[^/?#\s]+(/[^\s]*)?$", value):
        raise PydanticCustomError("url", "not an http(s) URL")
    return value


def _public_key(value: Any) -> Any:
    if isinstance(value, str):
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            key = load_pem_public_key(value.encode())
        except ValueError:
            raise PydanticCustomError("public_key", "not a PEM public key") from None
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
            raise PydanticCustomError("public_key", "not an RSA public key of 2048 bits or more")
    return value


Url = Annotated[str, BeforeValidator(_url)]
Host = Annotated[str, Field(pattern=r"^(\*\.)?[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$")]


class SamlServiceProviderSpec(Model):
    """A website that signs its users in through the point of sale (SAML 2.0 SP)."""

    entityId: str = Field(min_length=1, max_length=255)
    assertionConsumerService: Url
    singleLogoutService: Url | None = None
    certificate: str | None = Field(
        default=None, description="PEM certificate the SP signs its requests with"
    )
    wantRequestsSigned: bool = False


class OidcClientSpec(Model):
    """A relying party of the point of sale's OpenID provider."""

    clientId: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    name: str | None = None
    redirectUris: list[Url] = Field(min_length=1)
    clientSecretHash: str | None = Field(
        default=None, description="argon2 hash; none: a public client (PKCE only)"
    )


class IdentityProviderSpec(Model):
    """An external OpenID provider the point of sale signs contacts in with."""

    issuer: Url
    clientId: str = Field(min_length=1, max_length=255)
    clientSecret: str = Field(min_length=1, max_length=512)
    name: str = "SSO"
    scopes: list[str] = Field(default=["openid", "email", "profile"])
    exclusive: bool = Field(default=False, description="only this provider, no passwords")


class PointOfSaleSpec(Model):
    code: Code
    number: int = Field(ge=1)
    name: LocalText
    type: str = "STANDARD"
    paymentMethods: list[Code] = Field(default_factory=list)
    orderAbandonDelay: int = Field(default=20, ge=1, le=7 * 24 * 60, description="minutes")
    seatSelectionMode: SeatSelectionMode = SeatSelectionMode.BEST_AVAILABLE
    splitSeatingAllowed: bool = False
    maxSeatsPerPerformance: int = Field(default=10, ge=1, le=10000)
    contactLoginMode: ContactLoginMode = ContactLoginMode.EMAIL_PASSWORD
    guestLoginAvailable: bool = False
    contactAccountCreationAllowed: bool = True
    cookieDomain: str | None = None
    languages: list[Language] | None = None
    externalUrls: ExternalUrls = ExternalUrls()
    parameters: dict[str, str] = Field(default_factory=dict)
    websitePublicKey: Annotated[str, BeforeValidator(_public_key)] | None = Field(
        default=None, description="PEM RSA key the contact cookie's data is encrypted for"
    )
    returnHosts: list[Host] = Field(
        default_factory=list, description="hosts callbackUrl and redirects may point to"
    )
    samlServiceProviders: list[SamlServiceProviderSpec] = Field(default_factory=list)
    oidcClients: list[OidcClientSpec] = Field(default_factory=list)
    identityProvider: IdentityProviderSpec | None = None


class SalesChannelSpec(Model):
    code: Code
    name: LocalText
    type: ChannelType
    pointsOfSale: list[PointOfSaleSpec] = Field(min_length=1)


class OperatorSpec(Model):
    login: Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9_]{1,63}$")]
    partner: str = Field(min_length=1, max_length=64)
    pointOfSale: Code
    callsPerMinute: int | None = Field(
        default=None, ge=0, description="calls per minute per endpoint; 0 = no limit"
    )
    secretHash: str | None = None


WebhookEvent = Literal["order.closed", "order.cancelled", "contact.created", "contact.updated"]
WEBHOOK_SUBJECTS = {
    "order.closed": "orderId",
    "order.cancelled": "orderId",
    "contact.created": "contactNumber",
    "contact.updated": "contactNumber",
}


class WebhookFilterSpec(Model):
    products: list[Code] = Field(default_factory=list)
    productFamilies: list[ProductFamily] = Field(default_factory=list)


class WebhookSpec(Model):
    """A partner URL called on events of one point of sale (see docs/api/webhooks.md)."""

    code: Code
    pointOfSale: Code
    events: list[WebhookEvent] = Field(min_length=1)
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000)]
    method: Literal["GET", "POST"] = "POST"
    payload: Literal["ping", "full"] = "ping"
    filter: WebhookFilterSpec | None = None
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=255,
        description="the signing secret; none: generated once (billetterie webhooks secret)",
    )
    enabled: bool = True


PrintingFunctionName = Literal[
    "injection", "feedback", "push-cancelled", "push-controlled", "privileges"
]


class PrintingInterfaceSpec(Model):
    """An external printing interface of the organization (see docs/printing.md)."""

    code: Code
    type: Literal["WALLET"] = "WALLET"
    url: Annotated[
        str,
        Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?/organizer/tickets$", max_length=2000),
    ]
    login: Annotated[str, Field(min_length=1, max_length=128)]
    apiKey: str | None = Field(
        default=None,
        min_length=16,
        max_length=255,
        description="the wallet's API key; none: keep the current one (never exported)",
    )
    products: list[Code] = Field(min_length=1)
    schedule: dict[PrintingFunctionName, Annotated[int, Field(ge=10, le=86400)]] = Field(
        default_factory=dict, description="seconds between runs, per function"
    )
    batchSize: int = Field(default=1000, ge=1, le=1000)
    enabled: bool = True


class VatCodeSpec(Model):
    code: Code
    name: LocalText
    rate: Annotated[int, Field(ge=0, le=100000, description="thousandths of a percent")]
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class SeasonSpec(Model):
    code: Code
    name: LocalText
    state: SeasonState = SeasonState.OPEN
    start: IsoDateTime
    end: IsoDateTime


class TariffSpec(Model):
    code: Code
    name: LocalText
    kind: AudienceCategoryKind
    crossSeatCategory: bool = False
    requires: list[Code] = Field(default_factory=list)


class AudienceCategorySpec(Model):
    code: Code
    season: Code
    name: LocalText
    mainCategory: MainAudienceCategory = MainAudienceCategory.OCCASIONAL
    secondaryCategory: SecondaryAudienceCategory = SecondaryAudienceCategory.INDIVIDUAL
    tariffs: list[TariffSpec] = Field(min_length=1)


class PriceLevelSpec(Model):
    code: Code
    season: Code
    name: LocalText


class ThemeSpec(Model):
    code: Code
    name: LocalText
    subThemes: list[ThemeSpec] = Field(default_factory=list)


class Address(Model):
    street: str | None = None
    zip: str
    city: str
    countryCode: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class Point(Model):
    x: float = 0.0
    y: float = 0.0


class BlockSpec(Model):
    """Seats from compact rows: ``rows: "1-20"`` with ``seats: "1-30"``, or ``rowSeats`` per range.

    Rows may be numbers or letters (``"A-T"``). Seat x is the origin plus the seat's position
    in its row (times ``seatSpacing``); y is the origin plus the row's position (times
    ``rowSpacing``). A seat's rank for best-available is its order by distance to the stage.
    """

    code: Code
    name: LocalText | None = None
    rows: str | None = None
    seats: str | None = None
    rowSeats: dict[str, str] | None = None
    origin: Point = Point()
    seatSpacing: float = Field(default=1.0, gt=0)
    rowSpacing: float = Field(default=1.0, gt=0)


class AreaSpec(Model):
    code: Code
    name: LocalText
    blocks: list[BlockSpec] = Field(min_length=1)


class SeatCategorySpec(Model):
    code: Code
    name: LocalText
    color: Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")] | None = None
    seats: list[str] = Field(
        default_factory=list,
        description='selectors "AREA/BLOCK" or "AREA/BLOCK rows 1-8"',
    )


class ZoneSpec(Model):
    code: Code
    name: LocalText
    seatCategory: Code
    capacity: int = Field(ge=1)


class LogicalConfigurationSpec(Model):
    code: Code
    name: LocalText
    seatCategories: list[SeatCategorySpec] = Field(min_length=1)
    zones: list[ZoneSpec] = Field(default_factory=list)


class PhysicalConfigurationSpec(Model):
    code: Code
    name: LocalText
    stage: Point = Point()
    areas: list[AreaSpec] = Field(default_factory=list)
    logicalConfigurations: list[LogicalConfigurationSpec] = Field(min_length=1)


class SpaceSpec(Model):
    code: Code
    name: LocalText
    configurations: list[PhysicalConfigurationSpec] = Field(min_length=1)


class SiteSpec(Model):
    code: Code
    name: LocalText
    address: Address
    spaces: list[SpaceSpec] = Field(min_length=1)


class ContingentSpec(Model):
    code: Code
    name: LocalText
    salesChannels: list[Code] = Field(min_length=1)


class AllocationSpec(Model):
    contingent: Code
    seatCategory: Code
    quantity: int = Field(ge=1)


class SalesPeriodSpec(Model):
    salesChannel: Code
    start: IsoDateTime
    end: IsoDateTime


class PerformanceSpec(Model):
    code: Code
    start: IsoDateTime
    duration: Duration | None = None
    state: PerformanceState = PerformanceState.RUNNING
    configuration: Code | None = None
    name: LocalText | None = None
    prices: PriceGrid | None = None
    allocations: list[AllocationSpec] | None = None


class EventSpec(Model):
    configuration: Code | None = None
    duration: Duration | None = None
    prices: PriceGrid | None = None
    allocations: list[AllocationSpec] = Field(default_factory=list)
    performances: list[PerformanceSpec] = Field(min_length=1)


class ScheduleSpec(Model):
    """Timeslots every ``everyMinutes`` from ``opens`` to ``closes`` (local time), on
    ``weekdays`` (1 = Monday), from ``firstDay`` to ``lastDay``, each with ``quota`` places."""

    firstDay: IsoDate
    lastDay: IsoDate
    weekdays: list[Annotated[int, Field(ge=1, le=7)]] = Field(default=[1, 2, 3, 4, 5, 6, 7])
    opens: ClockTime
    closes: ClockTime
    everyMinutes: int = Field(ge=5, le=24 * 60)
    quota: int = Field(ge=1)


class TimeslotSpec(Model):
    start: IsoDateTime
    end: IsoDateTime
    quota: int = Field(ge=1)


class ItemSpec(Model):
    code: Code
    name: LocalText
    kind: ItemKind = ItemKind.OPEN
    capacity: int | None = Field(default=None, ge=0, description="None: unlimited")
    validityDays: int | None = Field(default=None, ge=1)
    prices: TariffPrices
    schedule: ScheduleSpec | None = None
    timeslots: list[TimeslotSpec] = Field(default_factory=list)


class ComposedSpec(Model):
    performances: list[Code] = Field(min_length=1)
    prices: PriceGrid


def _media_url(value: Any) -> Any:
    """An http(s) URL, or a path on the shop's own host (``/...``)."""
    if isinstance(value, str) and re.match(r"^/[^/\s][^\s]*$", value):
        return value
    return _url(value)


class MediaSpec(Model):
    """An image of the product, shown on its page: where it is and what it shows (the
    alternative text read to visitors who cannot see it)."""

    url: Annotated[str, Field(max_length=1024), BeforeValidator(_media_url)]
    alt: LocalText


class ProductSpec(Model):
    code: Code
    family: ProductFamily
    subType: str | None = None
    season: Code
    state: ProductState = ProductState.RUNNING
    name: LocalText
    description: LocalText | None = None
    alertRatio: int = Field(default=10, ge=0, le=100)
    vatCode: Code
    theme: Code | None = None
    subTheme: Code | None = None
    contactRequired: bool = False
    externalUrl: str | None = None
    media: list[MediaSpec] = Field(default_factory=list, max_length=20)
    salesPeriods: list[SalesPeriodSpec] = Field(default_factory=list)
    event: EventSpec | None = None
    composed: ComposedSpec | None = None
    items: list[ItemSpec] | None = None


class SetupDocument(Model):
    institution: InstitutionSpec
    organization: OrganizationSpec
    paymentMethods: list[PaymentMethodSpec] = Field(default_factory=list)
    salesChannels: list[SalesChannelSpec] = Field(min_length=1)
    operators: list[OperatorSpec] = Field(default_factory=list)
    vatCodes: list[VatCodeSpec] = Field(min_length=1)
    seasons: list[SeasonSpec] = Field(min_length=1)
    audienceCategories: list[AudienceCategorySpec] = Field(min_length=1)
    priceLevels: list[PriceLevelSpec] = Field(default_factory=list)
    themes: list[ThemeSpec] = Field(default_factory=list)
    venues: list[SiteSpec] = Field(default_factory=list)
    contingents: list[ContingentSpec] = Field(default_factory=list)
    products: list[ProductSpec] = Field(default_factory=list)
    webhooks: list[WebhookSpec] = Field(default_factory=list)
    printingInterfaces: list[PrintingInterfaceSpec] = Field(default_factory=list)


# --- parsing -------------------------------------------------------------------------------

_MESSAGES = {
    "missing": "required",
    "extra_forbidden": "unknown field",
    "int_parsing": "not an integer",
    "int_type": "not an integer",
    "float_parsing": "not a number",
    "bool_parsing": "not a boolean",
    "bool_type": "not a boolean",
    "string_type": "not a string",
    "list_type": "not a list",
    "dict_type": "not a mapping",
    "model_type": "not a mapping",
    "model_attributes_type": "not a mapping",
}


def _format_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in {"function-before[_amount(), int]"} or part.startswith(
            ("function-", "int", "dict[")
        ):
            continue  # pydantic's names for union branches
        else:
            path += f".{part}" if path else str(part)
    return path or "(document)"


def _message(error: Any) -> str:
    kind = error["type"]
    if kind in _MESSAGES:
        return str(_MESSAGES[kind])
    if kind == "enum":
        return "must be one of " + str(error["ctx"]["expected"]).replace("'", "")
    if kind == "string_pattern_mismatch":
        return f"does not match {error['ctx']['pattern']}"
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "too_short"}:
        return str(error["msg"]).lower()
    return str(error["msg"])


def parse_document(data: Any) -> SetupDocument:
    """Validate a decoded YAML/JSON value; raise :class:`SetupFileError` with every problem."""
    if not isinstance(data, dict):
        raise SetupFileError([("(document)", "not a mapping")])
    try:
        document = SetupDocument.model_validate(data)
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for error in exc.errors():  # pydantic reports them in document order
            if error["type"] == "amount" and isinstance(error["input"], dict):
                continue  # a mapping of price levels: its own branch reports what is wrong inside
            path = _format_path(tuple(error["loc"]))
            problems.setdefault(path, _message(error))  # a union reports each branch; keep one
        raise SetupFileError(list(problems.items())) from None
    problems_list = check_references(document)
    if problems_list:
        raise SetupFileError(problems_list)
    return document


# --- compact seat descriptions ------------------------------------------------------------


def expand_labels(spec: str) -> list[str]:
    """``"1-20"`` -> ``["1", ..., "20"]``; ``"A-C"`` -> ``["A", "B", "C"]``; ``"1-3,7"``."""
    labels: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"empty range in {spec!r}")
        match = re.fullmatch(r"(\w+)\s*[-\u2013]\s*(\w+)", part)
        if not match:
            if not re.fullmatch(r"\w+", part):
                raise ValueError(f"not a range: {part!r}")
            labels.append(part)
            continue
        first, last = match[1], match[2]
        if first.isdigit() and last.isdigit():
            if int(first) > int(last):
                raise ValueError(f"range runs backwards: {part!r}")
            labels.extend(str(n) for n in range(int(first), int(last) + 1))
        elif len(first) == len(last) == 1 and first.isalpha() and last.isalpha():
            if first > last:
                raise ValueError(f"range runs backwards: {part!r}")
            labels.extend(chr(c) for c in range(ord(first), ord(last) + 1))
        else:
            raise ValueError(f"not a range: {part!r}")
    if len(labels) != len(set(labels)):
        raise ValueError(f"repeated labels in {spec!r}")
    return labels


def block_rows(block: BlockSpec) -> list[tuple[str, list[str]]]:
    """The rows of a block in order, each with its seat numbers."""
    if block.rowSeats is not None:
        rows: list[tuple[str, list[str]]] = []
        for row_spec, seat_spec in block.rowSeats.items():
            rows.extend((row, expand_labels(seat_spec)) for row in expand_labels(row_spec))
        return rows
    if block.rows is None or block.seats is None:
        raise ValueError("give rows and seats, or rowSeats")
    seats = expand_labels(block.seats)
    return [(row, seats) for row in expand_labels(block.rows)]


_SELECTOR = re.compile(r"^\s*([A-Z0-9_\-]+)\s*/\s*([A-Z0-9_\-]+)\s*(?:rows?\s+(.+?))?\s*$")


def parse_selector(text: str) -> tuple[str, str, list[str] | None]:
    """``"STALLS/A rows 1-8"`` -> ``("STALLS", "A", ["1", ..., "8"])``; rows None = all."""
    match = _SELECTOR.match(text)
    if not match:
        raise ValueError('not a seat selector ("AREA/BLOCK" or "AREA/BLOCK rows 1-8")')
    return match[1], match[2], expand_labels(match[3]) if match[3] else None


def schedule_slots(schedule: ScheduleSpec, zone: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """The timeslots a schedule describes, as aware datetimes in ``zone``.

    Slots follow the local clock; a slot that would start in the hour skipped when summer time
    begins does not exist (its start is the instant of a later slot's) and is left out.
    """
    from datetime import UTC, timedelta

    slots: list[tuple[datetime, datetime]] = []
    step = timedelta(minutes=schedule.everyMinutes)
    day = schedule.firstDay
    while day <= schedule.lastDay:
        if day.isoweekday() in schedule.weekdays:
            start = datetime.combine(day, schedule.opens, zone)
            closes = datetime.combine(day, schedule.closes, zone)
            while start + step <= closes:
                if start.astimezone(UTC).astimezone(zone).time() == start.time():
                    slots.append((start, start + step))
                start += step
        day += timedelta(days=1)
    return slots


# --- references ----------------------------------------------------------------------------


def _duplicates(codes: list[str]) -> set[str]:
    seen: set[str] = set()
    return {c for c in codes if c in seen or seen.add(c)}  # type: ignore[func-returns-value]


def check_references(doc: SetupDocument) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []

    def unique(path: str, codes: list[str]) -> set[str]:
        for code in sorted(_duplicates(codes)):
            problems.append((path, f"code {code} is used twice"))
        return set(codes)

    try:
        zone = ZoneInfo(doc.organization.timeZone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(("organization.timeZone", "not an IANA time zone"))
        zone = ZoneInfo("UTC")
    languages = set(doc.organization.languages)
    if doc.organization.mainLanguage not in languages:
        problems.append(("organization.mainLanguage", "not one of organization.languages"))

    def aware(value: datetime) -> datetime:
        return value.replace(tzinfo=zone) if value.tzinfo is None else value

    payment_codes = unique("paymentMethods", [p.code for p in doc.paymentMethods])
    channel_codes = unique("salesChannels", [c.code for c in doc.salesChannels])
    pos_codes = unique(
        "salesChannels.pointsOfSale",
        [p.code for c in doc.salesChannels for p in c.pointsOfSale],
    )
    for ci, channel in enumerate(doc.salesChannels):
        for pi, pos in enumerate(channel.pointsOfSale):
            base = f"salesChannels[{ci}].pointsOfSale[{pi}]"
            for mi, method in enumerate(pos.paymentMethods):
                if method not in payment_codes:
                    problems.append(
                        (f"{base}.paymentMethods[{mi}]", f"unknown payment method {method}")
                    )
            for li, language in enumerate(pos.languages or []):
                if language not in languages:
                    problems.append(
                        (f"{base}.languages[{li}]", "not one of organization.languages")
                    )
    unique(
        "salesChannels.pointsOfSale.number",
        [str(p.number) for c in doc.salesChannels for p in c.pointsOfSale],
    )
    unique("organization.contactCriteria", [c.code for c in doc.organization.contactCriteria])
    unique(
        "organization.contactAuthorizations",
        [c.code for c in doc.organization.contactAuthorizations],
    )
    for ci, channel in enumerate(doc.salesChannels):
        for pi, pos in enumerate(channel.pointsOfSale):
            base = f"salesChannels[{ci}].pointsOfSale[{pi}]"
            unique(f"{base}.samlServiceProviders", [p.entityId for p in pos.samlServiceProviders])
            unique(f"{base}.oidcClients", [c.clientId for c in pos.oidcClients])
    unique("operators", [o.login for o in doc.operators])
    for oi, operator in enumerate(doc.operators):
        if operator.pointOfSale not in pos_codes:
            problems.append(
                (f"operators[{oi}].pointOfSale", f"unknown point of sale {operator.pointOfSale}")
            )
        if not operator.login.startswith(doc.institution.code + "_"):
            problems.append((f"operators[{oi}].login", f"must start with {doc.institution.code}_"))

    vat_codes = unique("vatCodes", [v.code for v in doc.vatCodes])
    season_codes = unique("seasons", [s.code for s in doc.seasons])
    for si, season in enumerate(doc.seasons):
        if aware(season.end) <= aware(season.start):
            problems.append((f"seasons[{si}].end", "must be after start"))

    tariffs_by_season: dict[str, set[str]] = {s: set() for s in season_codes}
    for ai, category in enumerate(doc.audienceCategories):
        if category.season not in season_codes:
            problems.append(
                (f"audienceCategories[{ai}].season", f"unknown season {category.season}")
            )
            continue
        codes = [t.code for t in category.tariffs]
        unique(f"audienceCategories[{ai}].tariffs", codes)
        for code in dict.fromkeys(codes):  # a code twice in this category is reported above
            if code in tariffs_by_season[category.season]:
                problems.append(
                    (
                        f"audienceCategories[{ai}].tariffs",
                        f"tariff {code} is already in season {category.season}",
                    )
                )
            tariffs_by_season[category.season].add(code)
    unique("audienceCategories", [f"{a.season}/{a.code}" for a in doc.audienceCategories])
    for ai, category in enumerate(doc.audienceCategories):
        for ti, tariff in enumerate(category.tariffs):
            for ri, required in enumerate(tariff.requires):
                if required not in tariffs_by_season.get(category.season, set()):
                    problems.append(
                        (
                            f"audienceCategories[{ai}].tariffs[{ti}].requires[{ri}]",
                            f"unknown tariff {required}",
                        )
                    )
    levels_by_season: dict[str, set[str]] = {s: set() for s in season_codes}
    for li, level in enumerate(doc.priceLevels):
        if level.season not in season_codes:
            problems.append((f"priceLevels[{li}].season", f"unknown season {level.season}"))
        else:
            levels_by_season[level.season].add(level.code)
    unique("priceLevels", [f"{p.season}/{p.code}" for p in doc.priceLevels])

    theme_codes = unique(
        "themes", [t.code for t in doc.themes] + [s.code for t in doc.themes for s in t.subThemes]
    )
    sub_themes = {s.code: t.code for t in doc.themes for s in t.subThemes}

    # venues
    categories_by_configuration: dict[str, set[str]] = {}
    unique("venues", [s.code for s in doc.venues])
    configuration_codes: list[str] = []
    for vi, site in enumerate(doc.venues):
        unique(f"venues[{vi}].spaces", [s.code for s in site.spaces])
        for si, space in enumerate(site.spaces):
            unique(
                f"venues[{vi}].spaces[{si}].configurations", [c.code for c in space.configurations]
            )
            for pi, physical in enumerate(space.configurations):
                base = f"venues[{vi}].spaces[{si}].configurations[{pi}]"
                blocks: dict[tuple[str, str], set[str]] = {}
                broken: set[tuple[str, str]] = set()  # declared, but their rows are reported
                unique(f"{base}.areas", [a.code for a in physical.areas])
                for ai, area in enumerate(physical.areas):
                    unique(f"{base}.areas[{ai}].blocks", [b.code for b in area.blocks])
                    for bi, block in enumerate(area.blocks):
                        try:
                            rows = block_rows(block)
                        except ValueError as exc:
                            problems.append((f"{base}.areas[{ai}].blocks[{bi}]", str(exc)))
                            broken.add((area.code, block.code))
                            continue
                        blocks[(area.code, block.code)] = {r for r, _ in rows}
                for li, logical in enumerate(physical.logicalConfigurations):
                    lbase = f"{base}.logicalConfigurations[{li}]"
                    configuration_codes.append(logical.code)
                    cats = unique(
                        f"{lbase}.seatCategories", [c.code for c in logical.seatCategories]
                    )
                    categories_by_configuration[logical.code] = cats
                    claimed: dict[tuple[str, str, str | None], str] = {}
                    for ci, seat_category in enumerate(logical.seatCategories):
                        for xi, selector in enumerate(seat_category.seats):
                            path = f"{lbase}.seatCategories[{ci}].seats[{xi}]"
                            try:
                                area_code, block_code, rows_selected = parse_selector(selector)
                            except ValueError as exc:
                                problems.append((path, str(exc)))
                                continue
                            if (area_code, block_code) in broken:
                                continue
                            if (area_code, block_code) not in blocks:
                                problems.append((path, f"unknown block {area_code}/{block_code}"))
                                continue
                            known_rows = blocks[(area_code, block_code)]
                            for row in rows_selected or sorted(known_rows):
                                if row not in known_rows:
                                    problems.append(
                                        (path, f"block {area_code}/{block_code} has no row {row}")
                                    )
                                    break
                                key = (area_code, block_code, row)
                                if key in claimed and claimed[key] != seat_category.code:
                                    where = f"row {row} of {area_code}/{block_code}"
                                    problems.append((path, f"{where} is already in {claimed[key]}"))
                                    break
                                claimed[key] = seat_category.code
                    unique(f"{lbase}.zones", [z.code for z in logical.zones])
                    numbered = {c.code for c in logical.seatCategories if c.seats}
                    for zi, zone_spec in enumerate(logical.zones):
                        if zone_spec.seatCategory not in cats:
                            problems.append(
                                (
                                    f"{lbase}.zones[{zi}].seatCategory",
                                    f"unknown seat category {zone_spec.seatCategory}",
                                )
                            )
                        elif zone_spec.seatCategory in numbered:
                            problems.append(
                                (
                                    f"{lbase}.zones[{zi}].seatCategory",
                                    f"{zone_spec.seatCategory} has numbered seats; a zone needs "
                                    "a seat category of its own",
                                )
                            )
    configurations = unique("venues.logicalConfigurations", configuration_codes)

    contingent_codes = unique("contingents", [c.code for c in doc.contingents])
    for ci, contingent in enumerate(doc.contingents):
        for xi, channel_code in enumerate(contingent.salesChannels):
            if channel_code not in channel_codes:
                problems.append(
                    (
                        f"contingents[{ci}].salesChannels[{xi}]",
                        f"unknown sales channel {channel_code}",
                    )
                )

    # products
    unique("products", [p.code for p in doc.products])
    performance_codes: dict[str, str] = {}  # performance code -> its configuration
    for pi, product in enumerate(doc.products):
        if product.event:
            for fi, perf in enumerate(product.event.performances):
                if perf.code in performance_codes:
                    problems.append(
                        (
                            f"products[{pi}].event.performances[{fi}].code",
                            f"code {perf.code} is used twice",
                        )
                    )
                performance_codes[perf.code] = (
                    perf.configuration or product.event.configuration or ""
                )

    for pi, product in enumerate(doc.products):
        base = f"products[{pi}]"
        if product.season not in season_codes:
            problems.append((f"{base}.season", f"unknown season {product.season}"))
        if product.vatCode not in vat_codes:
            problems.append((f"{base}.vatCode", f"unknown VAT code {product.vatCode}"))
        if product.theme is not None and (
            product.theme not in theme_codes or product.theme in sub_themes
        ):
            problems.append((f"{base}.theme", f"unknown theme {product.theme}"))
        if product.subTheme is not None:
            if sub_themes.get(product.subTheme) is None:
                problems.append((f"{base}.subTheme", f"unknown sub-theme {product.subTheme}"))
            elif product.theme is not None and sub_themes[product.subTheme] != product.theme:
                problems.append(
                    (
                        f"{base}.subTheme",
                        f"{product.subTheme} is not a sub-theme of {product.theme}",
                    )
                )
        for si, period in enumerate(product.salesPeriods):
            if period.salesChannel not in channel_codes:
                problems.append(
                    (
                        f"{base}.salesPeriods[{si}].salesChannel",
                        f"unknown sales channel {period.salesChannel}",
                    )
                )
            if aware(period.end) <= aware(period.start):
                problems.append((f"{base}.salesPeriods[{si}].end", "must be after start"))
        unique(f"{base}.salesPeriods", [p.salesChannel for p in product.salesPeriods])
        tariffs = tariffs_by_season.get(product.season, set())
        levels = levels_by_season.get(product.season, set())

        def check_grid(
            path: str,
            grid: PriceGrid | TariffPrices,
            categories: set[str] | None,
            product: ProductSpec = product,
            tariffs: set[str] = tariffs,
            levels: set[str] = levels,
        ) -> None:
            rows: dict[str, Any] = {"": grid} if categories is None else dict(grid)
            for category, tariff_prices in rows.items():
                cpath = path if categories is None else f"{path}.{category}"
                if categories is not None and category not in categories:
                    problems.append((cpath, f"unknown seat category {category}"))
                    continue
                if not isinstance(tariff_prices, dict):
                    problems.append((cpath, "not a mapping of tariffs to amounts"))
                    continue
                for tariff, amount in tariff_prices.items():
                    if product.season not in season_codes:
                        continue  # reported once, on the product's season
                    if tariff not in tariffs:
                        problems.append(
                            (
                                f"{cpath}.{tariff}",
                                f"unknown tariff {tariff} in season {product.season}",
                            )
                        )
                    if isinstance(amount, dict):
                        for level in amount:
                            if level not in levels:
                                problems.append(
                                    (f"{cpath}.{tariff}.{level}", f"unknown price level {level}")
                                )

        expected = {
            ProductFamily.SINGLE_ENTRY: "event",
            ProductFamily.SEASONTICKET: "composed",
            ProductFamily.PACKAGE: "composed",
        }.get(product.family, "items")
        for section in ("event", "composed", "items"):
            present = getattr(product, section) is not None
            if section == expected and not present:
                problems.append((f"{base}.{section}", f"required for a {product.family} product"))
            elif section != expected and present:
                problems.append(
                    (f"{base}.{section}", f"not allowed for a {product.family} product")
                )

        if product.event is not None and expected == "event":
            event = product.event
            for fi, perf in enumerate(event.performances):
                fbase = f"{base}.event.performances[{fi}]"
                configuration = perf.configuration or event.configuration
                if configuration is None:
                    problems.append((f"{fbase}.configuration", "required (here or on the event)"))
                    continue
                if configuration not in configurations:
                    where = (
                        f"{fbase}.configuration"
                        if perf.configuration
                        else f"{base}.event.configuration"
                    )
                    problems.append((where, f"unknown configuration {configuration}"))
                    continue
                if (perf.duration or event.duration) is None:
                    problems.append((f"{fbase}.duration", "required (here or on the event)"))
                grid = perf.prices if perf.prices is not None else event.prices
                if grid is None:
                    problems.append((f"{fbase}.prices", "required (here or on the event)"))
                else:
                    where = f"{fbase}.prices" if perf.prices is not None else f"{base}.event.prices"
                    check_grid(where, grid, categories_by_configuration[configuration])
                allocations = (
                    perf.allocations if perf.allocations is not None else event.allocations
                )
                for ai, allocation in enumerate(allocations):
                    apath = (
                        f"{fbase}.allocations[{ai}]"
                        if perf.allocations is not None
                        else f"{base}.event.allocations[{ai}]"
                    )
                    if allocation.contingent not in contingent_codes:
                        problems.append(
                            (f"{apath}.contingent", f"unknown contingent {allocation.contingent}")
                        )
                    if allocation.seatCategory not in categories_by_configuration[configuration]:
                        problems.append(
                            (
                                f"{apath}.seatCategory",
                                f"unknown seat category {allocation.seatCategory}",
                            )
                        )
        if product.composed is not None and expected == "composed":
            composed_configurations: list[str] = []
            for ci, code in enumerate(product.composed.performances):
                if code not in performance_codes:
                    problems.append(
                        (f"{base}.composed.performances[{ci}]", f"unknown performance {code}")
                    )
                else:
                    composed_configurations.append(performance_codes[code])
            unique(f"{base}.composed.performances", product.composed.performances)
            # prices are stored against the seat categories of the first performance's plan
            categories = (
                categories_by_configuration.get(composed_configurations[0], set())
                if composed_configurations
                else set()
            )
            check_grid(f"{base}.composed.prices", product.composed.prices, categories)
        if product.items is not None and expected == "items":
            unique(f"{base}.items", [i.code for i in product.items])
            for ii, item in enumerate(product.items):
                ibase = f"{base}.items[{ii}]"
                check_grid(f"{ibase}.prices", item.prices, None)
                if item.kind == ItemKind.TIMESLOT and item.schedule is None and not item.timeslots:
                    problems.append((ibase, "a TIMESLOT item needs a schedule or timeslots"))
                if item.kind == ItemKind.OPEN and (item.schedule is not None or item.timeslots):
                    problems.append((ibase, "an OPEN item has no timeslots"))
                if item.schedule is not None:
                    if item.schedule.lastDay < item.schedule.firstDay:
                        problems.append(
                            (f"{ibase}.schedule.lastDay", "must not be before firstDay")
                        )
                    elif not schedule_slots(item.schedule, zone):
                        problems.append((f"{ibase}.schedule", "describes no timeslot"))
                for ti, slot in enumerate(item.timeslots):
                    if aware(slot.end) <= aware(slot.start):
                        problems.append((f"{ibase}.timeslots[{ti}].end", "must be after start"))
    problems.extend(_check_webhooks(doc, pos_codes, {p.code for p in doc.products}))
    problems.extend(_check_printing(doc, {p.code for p in doc.products}))
    # event-wide prices and allocations are checked once per performance: report each once
    return list(dict.fromkeys(problems))


def _check_webhooks(
    doc: SetupDocument, pos_codes: set[str], product_codes: set[str]
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for code in sorted(_duplicates([w.code for w in doc.webhooks])):
        problems.append(("webhooks", f"code {code} is used twice"))
    for wi, hook in enumerate(doc.webhooks):
        base = f"webhooks[{wi}]"
        if hook.pointOfSale not in pos_codes:
            problems.append((f"{base}.pointOfSale", f"unknown point of sale {hook.pointOfSale}"))
        subjects = {WEBHOOK_SUBJECTS[e] for e in hook.events}
        allowed = {"event", "deliveryId"} | (subjects if len(subjects) == 1 else set())
        for name in sorted(set(re.findall(r"\$\{([^}]*)\}", hook.url)) - allowed):
            problems.append(
                (f"{base}.url", f"placeholder ${{{name}}} is not available for these events")
            )
        if hook.payload == "full" and hook.method != "POST":
            problems.append((f"{base}.method", "payload: full is sent with POST"))
        if hook.filter is not None:
            if subjects != {"orderId"}:
                problems.append((f"{base}.filter", "filters apply to order events only"))
            for pi, product in enumerate(hook.filter.products):
                if product not in product_codes:
                    problems.append((f"{base}.filter.products[{pi}]", f"unknown product {product}"))
    return problems


def _check_printing(doc: SetupDocument, product_codes: set[str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for code in sorted(_duplicates([i.code for i in doc.printingInterfaces])):
        problems.append(("printingInterfaces", f"code {code} is used twice"))
    for ii, interface in enumerate(doc.printingInterfaces):
        for pi, product in enumerate(interface.products):
            if product not in product_codes:
                problems.append(
                    (f"printingInterfaces[{ii}].products[{pi}]", f"unknown product {product}")
                )
    return problems
