"""Sales refusals. Availability itself is inventory's ``error.order.availability``."""

from __future__ import annotations

from billetterie.shared.errors import DomainError, NotFound


class UnknownOrder(NotFound):
    """No such order for this caller (other institutions' and channels' orders included)."""

    code = "error.order.unknown"


class OrderClosed(DomainError):
    """The order is not a running cart (closed, cancelled or abandoned)."""

    code = "error.order.not_running"
    http_status = 409


class OrderExpired(DomainError):
    code = "error.order.expired"
    http_status = 409


class EmptyOrder(DomainError):
    code = "error.order.empty"
    http_status = 409


class TooManySeats(DomainError):
    code = "error.order.too_many_seats"
    http_status = 409


class ContactRequired(DomainError):
    code = "error.order.contact_required"
    http_status = 409


class InvalidOperation(DomainError):
    """A well-formed request that asks for something impossible (no operation, seats that do
    not match the quantity): a business refusal, in the envelope with HTTP 200."""

    code = "error.order.invalid_operation"
    http_status = 409


class WrongTotal(DomainError):
    """The payments do not add up to what the order costs."""

    code = "error.payment.wrong_total"
    http_status = 409


class PaymentMethodNotAllowed(DomainError):
    code = "error.payment.method_not_allowed"
    http_status = 409


class InsufficientFunds(DomainError):
    """A voucher or credit balance lacks the amount, or a pending account its credit limit."""

    code = "error.payment.insufficient_funds"
    http_status = 409


class UnknownAccount(NotFound):
    code = "error.payment.unknown_account"


class CardPaymentRequired(DomainError):
    """Card payments go through the provider's hosted page (createPaymentsAndCloseOrder)."""

    code = "error.payment.card_redirect_required"
    http_status = 409


class NotCancellable(DomainError):
    code = "error.order.not_cancellable"
    http_status = 409


class UnknownMovement(NotFound):
    code = "error.order.unknown_movement"


class UnknownTicket(NotFound):
    code = "error.ticket.unknown"


class RevokedTicket(DomainError):
    """A cancelled, invalidated or replaced ticket presented at the gate."""

    code = "error.ticket.revoked"
    http_status = 409


class SetupChanged(DomainError):
    """The institution's setup changed since the point of sale was read: read it again and
    retry (the wire layer does, once)."""

    code = "error.setup.changed"
    http_status = 409
