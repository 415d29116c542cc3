"""Identity refusals."""

from __future__ import annotations

from billetterie.shared.errors import DomainError, Unauthenticated


class BadCredentials(Unauthenticated):
    code = "error.auth.bad_credentials"


class InvalidToken(Unauthenticated):
    code = "error.auth.invalid_token"


class ExpiredToken(Unauthenticated):
    code = "error.auth.expired_token"


class MissingToken(Unauthenticated):
    code = "error.auth.missing_token"


# --- contact sign-in on a point of sale ------------------------------------------------------


class TooManyAttempts(DomainError):
    code = "error.account.throttled"
    http_status = 429


class InvalidAccountToken(DomainError):
    """A verification or reset link that is unknown, used, expired or for another shop."""

    code = "error.account.invalid_token"
    http_status = 400


class CsrfRejected(DomainError):
    code = "error.account.csrf"
    http_status = 403


class BadReturnUrl(DomainError):
    code = "error.account.bad_return_url"
    http_status = 400


class RegistrationClosed(DomainError):
    code = "error.account.registration_closed"
    http_status = 403


class PasswordLoginDisabled(DomainError):
    code = "error.account.password_login_disabled"
    http_status = 403


class RememberTokenReused(DomainError):
    """A remember-me token already exchanged came back: it was copied. The series is revoked."""

    code = "error.account.remember_reused"
    http_status = 401
