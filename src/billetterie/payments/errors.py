"""Payment refusals, with stable codes."""

from __future__ import annotations

from billetterie.shared.errors import Conflict, DomainError, InvalidRequest, NotFound


class InvalidPayment(InvalidRequest):
    code = "error.payment.invalid"


class InvalidReturnUrl(InvalidRequest):
    code = "error.payment.invalid_return_url"


class UnknownProvider(NotFound):
    code = "error.payment.unknown_provider"


class UnknownPayment(NotFound):
    code = "error.payment.unknown_reference"


class InvalidSignature(DomainError):
    """The webhook's signature is missing or does not match its body."""

    code = "error.payment.invalid_signature"
    http_status = 400


class StaleEvent(DomainError):
    """The webhook's signed timestamp is outside the tolerance (a replay)."""

    code = "error.payment.stale_event"
    http_status = 400


class MalformedEvent(DomainError):
    code = "error.payment.malformed_event"
    http_status = 400


class AmountMismatch(Conflict):
    """The provider confirmed a different amount or currency than the intent's."""

    code = "error.payment.amount_mismatch"


class PaymentClosed(Conflict):
    code = "error.payment.closed"


class RefundRefused(Conflict):
    """More than is left to refund, or the payment did not succeed."""

    code = "error.payment.refund_refused"


class ProviderUnavailable(DomainError):
    """The provider could not be reached or failed; retry later."""

    code = "error.payment.provider_unavailable"
    http_status = 503
