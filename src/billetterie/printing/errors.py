"""Refusals of the printing context."""

from __future__ import annotations

from billetterie.shared.errors import DomainError, InvalidRequest, NotFound


class InvalidInterface(InvalidRequest):
    code = "error.printing.invalid_interface"


class UnknownInterface(NotFound):
    code = "error.printing.unknown_interface"


class InvalidCursor(InvalidRequest):
    code = "error.printing.invalid_cursor"


class WalletError(DomainError):
    """A call to the wallet did not succeed as a whole."""

    code = "error.printing.wallet"
    http_status = 502

    def __init__(self, detail: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(detail)
        self.transient = transient  # network, 5xx, 429: the same call may be sent again
        self.status = status
