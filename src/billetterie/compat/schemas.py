"""Request and response models of the S-360 surface, as the OpenAPI document shows them.

Requests ignore unknown keys (an S-360 client may send parameters billetterie does not use) but
reject wrong types. Responses are what the handlers render; tests validate them against this.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from billetterie.catalog.models import (
    AudienceCategoryKind,
    CatalogScope,
    PaymentType,
    ProductFamily,
    ProductState,
)


def _iso_text(value: object) -> object:
    if value is not None and not isinstance(value, str):
        raise ValueError("an ISO-8601 date-time string with its offset is required")
    return value


IsoInstant = Annotated[AwareDatetime, BeforeValidator(_iso_text)]


def _storable(value: str) -> str:
    """Text a database keeps as given: no NUL character, no lone surrogate."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


StorableText = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$"), AfterValidator(_storable)]


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    requestId: str | None = Field(
        default=None, max_length=200, description="Echoed in the response."
    )


class Envelope(BaseModel):
    statusCode: str = Field(description="success, in_progress, or an error code (error.*)")
    statusDetail: str
    requestId: str | None = None


class Translation(BaseModel):
    locale: str
    value: str


class Text(BaseModel):
    translations: list[Translation]


# --- auth ----------------------------------------------------------------------------------


class AuthRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    operator: StorableText = Field(min_length=1, max_length=64, examples=["DEMO_B2C"])
    partner: StorableText = Field(min_length=1, max_length=64, examples=["demo-website"])
    secret: StorableText = Field(min_length=1, max_length=512)


class AuthResponse(BaseModel):
    token: str


# --- catalogService ------------------------------------------------------------------------


class EmptyRequest(Request):
    pass


class PaymentMethodData(BaseModel):
    id: int
    code: str
    externalName: Text | None
    paymentType: PaymentType
    forPayment: bool
    forReimbursement: bool
    rank: int


class ProductFamilyData(BaseModel):
    id: int
    externalName: Text | None
    productFamilyType: ProductFamily
    productFamilySubType: str | None
    contactRequired: bool


class PosConfigData(BaseModel):
    posId: int
    posCode: str
    posNumber: int
    posType: str
    posName: Text | None
    salesChannelId: int
    salesChannelCode: str
    salesChannelType: str
    institCode: str
    organizationId: int
    organizationCode: str
    organizationName: str
    organizationTimeZone: str
    currencyCode: str
    currencySymbol: str
    mainLanguage: str
    languageList: list[str]
    paymentMethods: list[PaymentMethodData]
    productFamilies: list[ProductFamilyData]
    seatSelectionMode: str
    splitSeatingAllowed: bool
    maxSeatsPerPerformance: int
    orderAbandonDelay: int = Field(description="Cart lifetime in minutes.")
    contactLoginMode: str
    guestLoginAvailable: bool
    contactAccountCreationAllowed: bool
    cookieDomain: str | None
    externalUrls: dict[str, str]
    posParameters: dict[str, str]


class PosConfigResponse(Envelope):
    posConfigData: PosConfigData | None = None


class CatalogRequest(Request):
    seasonCode: str | None = Field(default=None, max_length=16)
    productCode: str | None = Field(default=None, max_length=16)


class CatalogDetailedRequest(CatalogRequest):
    scope: CatalogScope | None = Field(
        default=None, description="EXTENDED also returns products no longer on sale."
    )


class SalesPeriod(BaseModel):
    salesChannelId: int
    start: str
    end: str


class Theme(BaseModel):
    id: int
    code: str
    externalName: Text | None


class Address(BaseModel):
    street: str | None = None
    zip: str
    city: str
    countryCode: str


class Venue(BaseModel):
    siteId: int
    siteCode: str
    siteName: Text | None
    address: Address
    spaceId: int
    spaceCode: str
    spaceName: Text | None


class SeatCategory(BaseModel):
    id: int
    code: str
    externalName: Text | None
    rank: int


class Price(BaseModel):
    seatCatId: int | None = None
    audSubCatId: int
    priceLevelId: int | None = None
    amount: int = Field(description="Thousandths of the currency unit.")


class Performance(BaseModel):
    id: int
    code: str
    state: str
    start: str
    end: str
    duration: int = Field(description="Seconds.")
    externalName: Text | None
    logicalConfigurationId: int
    venue: Venue
    seatCategories: list[SeatCategory]
    contingentIds: list[int]
    prices: list[Price]


class Event(BaseModel):
    id: int
    performances: list[Performance]


class Timeslot(BaseModel):
    id: int
    start: str
    end: str
    quota: int


class Item(BaseModel):
    itemId: int
    code: str
    externalName: Text | None
    itemType: Literal["OPEN", "TIMESLOT"]
    capacity: int | None
    validityDays: int | None
    itemPrices: list[Price]
    timeslots: list[Timeslot] | None = None


class Items(BaseModel):
    items: list[Item]


class ComposedPerformance(BaseModel):
    id: int
    code: str
    productId: int
    start: str


class ComposedProduct(BaseModel):
    performanceIds: list[int]
    performances: list[ComposedPerformance]
    prices: list[Price]


class Media(BaseModel):
    """An image of the product: its URL (absolute, or a path on the box office's host) and the
    alternative text of what it shows."""

    url: str
    altText: Text | None


class Product(BaseModel):
    id: int
    code: str
    productFamilyType: ProductFamily
    productFamilySubType: str | None
    state: ProductState
    vatCodeId: int
    externalName: Text | None
    externalDescription: Text | None
    alertRatio: int
    contactRequired: bool
    externalUrl: str | None
    media: list[Media] = []
    theme: Theme | None
    subTheme: Theme | None
    salesPeriods: list[SalesPeriod]
    event: Event | None = None
    composedProduct: ComposedProduct | None = None
    pass_: Items | None = Field(default=None, alias="pass")
    membership: Items | None = None
    simpleProduct: Items | None = None


class AudienceSubCategory(BaseModel):
    id: int
    code: str
    externalName: Text | None
    audienceCategoryKind: AudienceCategoryKind
    requiredAudienceSubCategoryIds: list[int]
    crossSeatCategory: bool


class AudienceCategory(BaseModel):
    id: int
    code: str
    mainCategory: str
    secondaryCategory: str
    externalName: Text | None
    audienceSubCategories: list[AudienceSubCategory]


class PriceLevel(BaseModel):
    id: int
    code: str
    externalName: Text | None
    rank: int


class Season(BaseModel):
    id: int
    code: str
    state: str
    start: str
    end: str
    externalName: Text | None


class DetailedSeason(Season):
    audienceCategories: list[AudienceCategory]
    priceLevels: list[PriceLevel]
    products: list[Product]


class CatalogData(BaseModel):
    seasons: list[DetailedSeason]


class CatalogDetailedResponse(Envelope):
    catalogData: CatalogData | None = None


class ProductSummary(BaseModel):
    id: int
    code: str
    productFamilyType: ProductFamily
    productFamilySubType: str | None
    state: ProductState
    seasonId: int
    seasonCode: str
    externalName: Text | None
    theme: Theme | None
    subTheme: Theme | None
    salesPeriods: list[SalesPeriod]
    firstPerformanceStart: str | None
    lastPerformanceStart: str | None
    performanceCount: int


class SummarySeason(Season):
    products: list[ProductSummary]


class CatalogSummaryData(BaseModel):
    seasons: list[SummarySeason]


class CatalogResponse(Envelope):
    catalogData: CatalogSummaryData | None = None


class LastSetupUpdateRequest(Request):
    scope: CatalogScope | None = None


class LastSetupUpdateResponse(Envelope):
    lastSetupUpdate: str | None = Field(
        default=None, description="When the catalog this channel sees last changed (ISO-8601)."
    )
    setupVersion: int | None = Field(
        default=None, description="Version of that catalog; equal versions mean equal catalogs."
    )


# --- setupService --------------------------------------------------------------------------


class SeasonsResponse(Envelope):
    seasons: list[Season] | None = None


class SeasonRequest(Request):
    seasonId: int = Field(ge=1, le=2**53 - 1)


class AudienceSubCategoryRow(AudienceSubCategory):
    audienceCategoryId: int
    audienceCategoryCode: str
    mainCategory: str
    secondaryCategory: str
    seasonId: int


class AudienceSubCategoriesResponse(Envelope):
    audienceSubCategories: list[AudienceSubCategoryRow] | None = None


class PriceLevelRow(PriceLevel):
    seasonId: int


class PriceLevelsResponse(Envelope):
    priceLevels: list[PriceLevelRow] | None = None


class VatCode(BaseModel):
    id: int
    code: str
    currentRate: int = Field(description="Thousandths of a percent: 2100 = 2.1 %.")
    country: str
    externalName: Text | None


class VatCodesResponse(Envelope):
    vatCodes: list[VatCode] | None = None


class SearchProductsRequest(Request):
    seasonCode: str | None = Field(default=None, max_length=16)
    productFamilyType: ProductFamily | None = None
    productFamilySubType: str | None = Field(default=None, max_length=32)
    productCodes: list[str] | None = Field(default=None, max_length=1000)
    themeCode: str | None = Field(default=None, max_length=16)
    states: list[ProductState] | None = None
    text: str | None = Field(
        default=None, max_length=200, description="Matches names in any language."
    )
    startDate: IsoInstant | None = Field(
        default=None,
        description="Products with a performance from this instant (ISO-8601 with offset).",
    )
    endDate: IsoInstant | None = Field(
        default=None,
        description="Products with a performance until this instant (ISO-8601 with offset).",
    )


class SearchProductsResponse(Envelope):
    products: list[ProductSummary] | None = None


class Problem(BaseModel):
    """RFC 9457 problem details, with the stable error code."""

    type: str
    title: str
    status: int
    detail: str
    code: str
