"""The catalog's vocabulary: the enumerations of the S-360 wire, and nothing that knows storage."""

from __future__ import annotations

from enum import StrEnum


class ChannelType(StrEnum):
    INTERNET_B2C = "INTERNET_B2C"
    INTERNET_B2B = "INTERNET_B2B"
    RESELLER = "RESELLER"
    BOX_OFFICE = "BOX_OFFICE"
    CALL_CENTER = "CALL_CENTER"
    KIOSK = "KIOSK"


class PaymentType(StrEnum):
    CARD = "CARD"
    VOUCHER = "VOUCHER"
    CREDIT = "CREDIT"
    PENDING_ACCOUNT = "PENDING_ACCOUNT"
    CASH = "CASH"


class SeatSelectionMode(StrEnum):
    BEST_AVAILABLE = "BEST_AVAILABLE"
    SEAT_MAP = "SEAT_MAP"
    BEST_AVAILABLE_AND_SEAT_MAP = "BEST_AVAILABLE_AND_SEAT_MAP"


class ContactLoginMode(StrEnum):
    EMAIL_PASSWORD = "EMAIL_PASSWORD"
    SSO = "SSO"
    NONE = "NONE"


class SeasonState(StrEnum):
    PREPARING = "PREPARING"
    OPEN = "OPEN"
    CLOSED = "CLOSED"


class ProductFamily(StrEnum):
    SINGLE_ENTRY = "SINGLE_ENTRY"
    SEASONTICKET = "SEASONTICKET"
    PASS = "PASS"
    PACKAGE = "PACKAGE"
    MEMBERSHIP = "MEMBERSHIP"
    SERVICE = "SERVICE"
    GOODS = "GOODS"
    TRANSPORT = "TRANSPORT"
    HOSPITALITY = "HOSPITALITY"


class ProductState(StrEnum):
    PREPARING = "PREPARING"
    VALIDATED = "VALIDATED"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    CANCELED = "CANCELED"
    CLOSED = "CLOSED"
    CANCELED_CLOSED = "CANCELED_CLOSED"


# What getCatalogDetailed returns by default; scope EXTENDED adds the rest (except PREPARING).
SELLABLE_STATES = frozenset({ProductState.RUNNING, ProductState.SUSPENDED})
EXTENDED_STATES = frozenset(ProductState) - {ProductState.PREPARING, ProductState.VALIDATED}


class PerformanceState(StrEnum):
    PREPARING = "PREPARING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    CANCELED = "CANCELED"
    CLOSED = "CLOSED"


class ItemKind(StrEnum):
    OPEN = "OPEN"
    TIMESLOT = "TIMESLOT"


class MainAudienceCategory(StrEnum):
    OCCASIONAL = "OCCASIONAL"
    SUBSCRIBER = "SUBSCRIBER"
    INSIDE_SEASONTICKET = "INSIDE_SEASONTICKET"
    MEMBER = "MEMBER"
    INVITED = "INVITED"


class SecondaryAudienceCategory(StrEnum):
    INDIVIDUAL = "INDIVIDUAL"
    COMMUNITY = "COMMUNITY"
    GROUP = "GROUP"
    TAXED = "TAXED"
    FREE = "FREE"
    PROMOTIONAL = "PROMOTIONAL"


class AudienceCategoryKind(StrEnum):
    FULL = "FULL"
    REDUCED = "REDUCED"
    FREE = "FREE"


class CatalogScope(StrEnum):
    STANDARD = "STANDARD"
    EXTENDED = "EXTENDED"
