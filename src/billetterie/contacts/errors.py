"""Contact refusals; each code is stable."""

from __future__ import annotations

from billetterie.shared.errors import Conflict, DomainError, Forbidden, NotFound


class UnknownContact(NotFound):
    code = "error.contact.unknown"


class ErasedContact(DomainError):
    code = "error.contact.erased"
    http_status = 410


class DuplicateLogin(Conflict):
    code = "error.contact.duplicate_login"


class ContactRefused(DomainError):
    """Well-formed but not acceptable: a business answer (HTTP 200 in the S-360 envelope)."""

    http_status = 400


class InvalidContact(ContactRefused):
    code = "error.contact.invalid"


class UnknownCriterion(ContactRefused):
    code = "error.contact.unknown_criterion"


class UnknownAuthorization(ContactRefused):
    code = "error.contact.unknown_authorization"


class BadContactCredentials(DomainError):
    """Wrong login or password (the same answer for both, so logins cannot be probed)."""

    code = "error.contact.bad_credentials"
    http_status = 401


class WeakPassword(ContactRefused):
    code = "error.contact.weak_password"


class ContactAccessDenied(Forbidden):
    code = "error.contact.forbidden"
