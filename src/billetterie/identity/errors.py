"""Identity refusals."""

from __future__ import annotations

from billetterie.shared.errors import Unauthenticated


class BadCredentials(Unauthenticated):
    code = "error.auth.bad_credentials"


class InvalidToken(Unauthenticated):
    code = "error.auth.invalid_token"


class ExpiredToken(Unauthenticated):
    code = "error.auth.expired_token"


class MissingToken(Unauthenticated):
    code = "error.auth.missing_token"
