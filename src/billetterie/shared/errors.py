"""Domain errors with stable codes.

Every error a caller can provoke is a :class:`DomainError` carrying a dotted ``code`` that never
changes (``error.catalog.unknown_product``). One handler per surface renders it: the S-360
envelope on the RPC surface, RFC 9457 problem+json on the GET mirrors.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal the caller can act on. ``http_status`` applies outside the S-360 envelope."""

    code = "error.internal"
    http_status = 400

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra


class InvalidRequest(DomainError):
    code = "error.request.invalid"
    http_status = 400


class NotFound(DomainError):
    code = "error.not_found"
    http_status = 404


class Unauthenticated(DomainError):
    code = "error.auth.unauthenticated"
    http_status = 401


class Forbidden(DomainError):
    code = "error.auth.forbidden"
    http_status = 403


class Conflict(DomainError):
    code = "error.conflict"
    http_status = 409


class InUse(Conflict):
    """A row a setup no longer lists is still referenced by records (orders, holds): removing
    it would delete them or leave them pointing at nothing."""

    code = "error.setup.in_use"
