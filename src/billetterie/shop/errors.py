"""Shop refusals (rendered as pages with the stable code in ``data-code``)."""

from __future__ import annotations

from billetterie.shared.errors import DomainError, NotFound


class UnknownShopProduct(NotFound):
    code = "error.shop.unknown_product"


class UnknownShopPerformance(NotFound):
    code = "error.shop.unknown_performance"


class UnknownBlock(NotFound):
    code = "error.shop.unknown_block"


class NotOnSale(DomainError):
    """The product exists but is not sold here now (state, sales period, past)."""

    code = "error.shop.not_on_sale"
    http_status = 409


class SoldOut(DomainError):
    code = "error.shop.sold_out"
    http_status = 409


class NoCart(DomainError):
    code = "error.shop.no_cart"
    http_status = 404


class BadChoice(DomainError):
    """A form asked for something the page did not offer (no seat, no quantity, bad number)."""

    code = "error.shop.bad_choice"
    http_status = 400


class AppliedTwice(DomainError):
    """A voucher, or the credit balance, applied to the cart a second time."""

    code = "error.shop.applied_twice"
    http_status = 409


class BadFlag(DomainError):
    code = "error.shop.bad_flag"
    http_status = 400


class UnknownShop(NotFound):
    code = "error.shop.unknown_point_of_sale"


class SignInRequired(DomainError):
    code = "error.shop.sign_in_required"
    http_status = 401


class TooManyRequests(DomainError):
    code = "error.shop.rate_limited"
    http_status = 429


class QueueRequired(DomainError):
    """A form for a product whose waiting room is open, sent without an admission."""

    code = "error.shop.queue"
    http_status = 403
