"""The wallet's refusals, each with a stable dotted code.

The organizer API and the scanner render them as RFC 9457 ``application/problem+json``; per-item
refusals inside a batch carry the same codes in the item's result; the spectator pages show them
as form messages.
"""

from __future__ import annotations

from typing import Any


class WalletError(Exception):
    code = "error.internal"
    http_status = 400

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra


class InvalidRequest(WalletError):
    code = "error.request.invalid"


class BatchTooLarge(WalletError):
    code = "error.request.batch_too_large"
    http_status = 413


class Unauthenticated(WalletError):
    code = "error.auth.unauthenticated"
    http_status = 401


class Forbidden(WalletError):
    code = "error.auth.forbidden"
    http_status = 403


class CsrfRejected(WalletError):
    code = "error.auth.csrf"
    http_status = 403


class NotFound(WalletError):
    code = "error.not_found"
    http_status = 404


class Conflict(WalletError):
    code = "error.conflict"
    http_status = 409


class InvalidFeedbackKey(WalletError):
    code = "error.feedback.invalid_key"


class UnknownTicket(NotFound):
    code = "error.ticket.unknown"


class TicketDeleted(Conflict):
    code = "error.ticket.deleted"


class NotTransferable(Conflict):
    code = "error.transfer.not_allowed"


class TransferLimit(Conflict):
    code = "error.transfer.limit_reached"


class UnknownTransfer(NotFound):
    code = "error.transfer.unknown"


class TransferClosed(Conflict):
    code = "error.transfer.closed"


class ResaleRefused(Conflict):
    code = "error.resale.not_allowed"


class NotActivated(Conflict):
    code = "error.ticket.not_activated"


class UnknownPrivilege(NotFound):
    code = "error.privilege.unknown"


class PrivilegeUsed(Conflict):
    code = "error.privilege.already_used"


class PrivilegeDeleted(Conflict):
    code = "error.privilege.deleted"


class BadCredentials(Unauthenticated):
    code = "error.spectator.bad_credentials"


class EmailTaken(Conflict):
    code = "error.spectator.email_taken"


class TooManyLinks(WalletError):
    code = "error.spectator.too_many_links"
    http_status = 429


class InvalidLink(WalletError):
    code = "error.spectator.invalid_link"


class UnknownOrganizer(NotFound):
    code = "error.organizer.unknown"
