"""Webhook refusals."""

from __future__ import annotations

from billetterie.shared.errors import DomainError, InvalidRequest, NotFound


class UnknownEvent(InvalidRequest):
    code = "error.webhooks.unknown_event"


class InvalidCursor(InvalidRequest):
    code = "error.webhooks.invalid_cursor"


class NoPayloadRenderer(DomainError):
    """Nothing can render the full document of an event (a wiring error, final)."""

    code = "error.webhooks.no_payload_renderer"
    http_status = 500


class UnknownSubscription(NotFound):
    code = "error.webhooks.unknown_subscription"
