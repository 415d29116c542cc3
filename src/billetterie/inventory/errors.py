"""Inventory refusals."""

from __future__ import annotations

from billetterie.shared.errors import DomainError, InvalidRequest, NotFound


class NotAvailable(DomainError):
    """Not enough places (or the given seats are taken): S-360's availability error."""

    code = "error.order.availability"
    http_status = 409


class Busy(DomainError):
    """A lock could not be taken in time; retry after ``retry_after`` seconds."""

    code = "error.inventory.busy"
    http_status = 503

    def __init__(
        self, detail: str = "the inventory is busy; retry shortly", retry_after: int = 1
    ) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class UnknownInventory(NotFound):
    code = "error.inventory.unknown"


class InvalidQuantity(InvalidRequest):
    code = "error.inventory.invalid_quantity"


class UnknownHold(NotFound):
    code = "error.inventory.unknown_hold"


class HoldClosed(DomainError):
    code = "error.inventory.hold_closed"
    http_status = 409
