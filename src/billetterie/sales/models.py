"""Sales vocabulary: states and kinds, as S-360 names them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class OrderState(StrEnum):
    RUNNING = "RUNNING"  # a cart: places held until it expires
    CLOSED = "CLOSED"  # paid (or on a pending account), tickets issued
    CANCELED = "CANCELED"  # every movement cancelled
    ABANDONNED = "ABANDONNED"  # a cart that expired or was given up (S-360's spelling)


class OrderType(StrEnum):
    SALE = "SALE"
    RESERVATION = "RESERVATION"
    OPTION = "OPTION"


class OperationKind(StrEnum):
    SINGLE_ENTRY = "SINGLE_ENTRY"
    SIMPLE_PRODUCT = "SIMPLE_PRODUCT"
    COMPOSED_PRODUCT = "COMPOSED_PRODUCT"


class MovementState(StrEnum):
    RESERVED = "RESERVED"  # in a cart
    SOLD = "SOLD"
    ABANDONED = "ABANDONED"  # removed from a cart, or the cart expired
    CANCELED = "CANCELED"  # cancelled after the sale: refunded, places returned


class TicketState(StrEnum):
    NOT_PRINTED = "NOT_PRINTED"
    PRINTED = "PRINTED"
    CONTROLLED = "CONTROLLED"
    CANCELLED = "CANCELLED"
    INVALIDATED = "INVALIDATED"

    @property
    def listed_as(self) -> str:
        """The state ``listTicketsByCriteria`` shows: a printed or controlled ticket is VALID."""
        if self in (TicketState.PRINTED, TicketState.CONTROLLED):
            return "VALID"
        return self.value


class AccountKind(StrEnum):
    VOUCHER = "VOUCHER"
    CREDIT = "CREDIT"
    PENDING_ACCOUNT = "PENDING_ACCOUNT"


ACCOUNT_OF_PAYMENT = {
    "VOUCHER": AccountKind.VOUCHER,
    "CREDIT": AccountKind.CREDIT,
    "PENDING_ACCOUNT": AccountKind.PENDING_ACCOUNT,
}


# --- who sells, and what a cart asks for (plain values, parsed from the wire by compat) -------


@dataclass(frozen=True)
class PaymentMethod:
    id: int
    code: str
    payment_type: str
    for_payment: bool
    for_reimbursement: bool


@dataclass(frozen=True)
class Seller:
    """The point of sale an operator sells from, and what it allows."""

    institution_id: int
    organization_id: int
    point_of_sale_id: int
    point_of_sale_code: str
    sales_channel_id: int
    contingent_ids: frozenset[int]
    currency: str
    operator: str
    language: str
    split_allowed: bool
    max_seats_per_performance: int
    abandon_delay_minutes: int
    payment_methods: tuple[PaymentMethod, ...]
    pending_credit_limit: int = 0
    # the institution's setup version this was read at; a sale checks it in its transaction
    # (0: not checked)
    setup_version: int = 0

    @property
    def actor(self) -> str:
        return f"operator:{self.operator}"

    def method(self, method_id: int) -> PaymentMethod | None:
        return next((m for m in self.payment_methods if m.id == method_id), None)


@dataclass(frozen=True)
class Attribution:
    """Places of one performance in one seat category for one tariff (best available unless
    ``seat_ids``, performance seat ids from getSeatsAvailability, are given)."""

    performance_id: int
    seat_category_id: int
    audience_sub_category_id: int
    quantity: int
    price_level_id: int | None = None
    seat_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class SingleEntryLine:
    """Attributions held together: the same performance and category share seats side by side."""

    attributions: tuple[Attribution, ...]
    # areas (``preferedAreas``) to look for best-available seats in first
    preferred_area_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class SimpleProductLine:
    item_id: int
    audience_sub_category_id: int
    quantity: int
    timeslot_id: int | None = None
    price_level_id: int | None = None


@dataclass(frozen=True)
class ComposedLine:
    product_id: int
    seat_category_id: int
    audience_sub_category_id: int
    quantity: int
    price_level_id: int | None = None


CartLine = SingleEntryLine | SimpleProductLine | ComposedLine


@dataclass(frozen=True)
class CartRequest:
    order_id: int | None = None
    order_type: OrderType = OrderType.SALE
    lines: tuple[CartLine, ...] = ()
    contact_number: str | None = None
    external_reference: str | None = None
    purchaser: dict[str, str] = field(default_factory=dict)
    language: str | None = None


@dataclass(frozen=True)
class PaymentRequest:
    payment_method_id: int
    amount: int
    reference: str | None = None  # a voucher's code
    # set when the amount was already debited from this account (held during a card payment)
    account_id: int | None = None
