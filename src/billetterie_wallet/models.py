"""The wallet's vocabulary: ticket states and the rules that move a ticket between them.

Nothing here imports a framework or the database; services apply these rules inside their
transactions.

A ticket's wire status is its ``state`` plus ``_ACTIVATED`` once its rotating-code secret was
released to a device after the activation time (DOWNLOADED_ACTIVATED, ASSIGNED_ACTIVATED,
TRANSFERRED_ACTIVATED). Terminal and organizer-imposed states never carry the suffix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class State(StrEnum):
    INJECTED = "INJECTED"
    DOWNLOADED = "DOWNLOADED"
    ASSIGNED = "ASSIGNED"
    PENDING_TRANSFER = "PENDING_TRANSFER"
    TRANSFERRED = "TRANSFERRED"
    FAILURE_TRANSFER = "FAILURE_TRANSFER"
    RETURNED_FOR_RESALE = "RETURNED_FOR_RESALE"
    CONTROLLED = "CONTROLLED"
    DELETION_PENDING = "DELETION_PENDING"
    DELETED = "DELETED"


class TransferState(StrEnum):
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


class Role(StrEnum):
    """What an organizer API key may do."""

    TICKETS = "tickets"  # inject, delete, controlled
    PRIVILEGES = "privileges"  # inject and use digital privileges
    FEEDBACK = "feedback"  # read the feedback feed
    REPORTS = "reports"  # ticket-status-log report
    ACCESS_CONTROL = "access_control"  # scanner validation, group secrets


ALL_ROLES = tuple(Role)

ACTIVATABLE = frozenset({State.DOWNLOADED, State.ASSIGNED, State.TRANSFERRED})
# States in which the spectator holds a usable ticket.
HELD = frozenset(
    {
        State.INJECTED,
        State.DOWNLOADED,
        State.ASSIGNED,
        State.TRANSFERRED,
        State.FAILURE_TRANSFER,
        State.PENDING_TRANSFER,
    }
)
GONE = frozenset({State.DELETION_PENDING, State.DELETED})


def wire_status(state: str, activated: bool) -> str:
    return f"{state}_ACTIVATED" if activated and state in ACTIVATABLE else state


@dataclass(frozen=True)
class TransferRules:
    transferable: bool
    max_transfers: int
    transfer_deadline: datetime | None
    resale_allowed: bool


@dataclass(frozen=True)
class TicketView:
    """What a spectator sees of one ticket (and what the rules are checked against)."""

    id: int
    organizer_id: int
    ticket_id: str
    state: State
    activated: bool
    owner_email: str
    holder_first_name: str | None
    holder_last_name: str | None
    rules: TransferRules
    transfer_count: int
    activation_time: datetime | None

    @property
    def status(self) -> str:
        return wire_status(self.state, self.activated)


def transfer_refusal(ticket: TicketView, *, to_email: str, now: datetime) -> tuple[str, str] | None:
    """Why ``ticket`` may not be offered to ``to_email`` now, as (code, detail); None if it may."""
    if ticket.state in GONE:
        return "error.ticket.deleted", "the ticket was cancelled by the organizer"
    if ticket.state == State.CONTROLLED:
        return "error.transfer.not_allowed", "a controlled ticket can no longer be transferred"
    if ticket.state == State.PENDING_TRANSFER:
        return "error.transfer.not_allowed", "the ticket is already offered to someone"
    if ticket.state == State.RETURNED_FOR_RESALE:
        return "error.transfer.not_allowed", "the ticket was returned for resale"
    if not ticket.rules.transferable:
        return "error.transfer.not_allowed", "the organizer does not allow transfers of it"
    if ticket.rules.transfer_deadline is not None and now >= ticket.rules.transfer_deadline:
        return "error.transfer.not_allowed", "the transfer deadline has passed"
    if ticket.transfer_count >= ticket.rules.max_transfers:
        return (
            "error.transfer.limit_reached",
            f"the ticket was already transferred {ticket.transfer_count} time(s), the maximum",
        )
    if to_email == ticket.owner_email:
        return "error.transfer.not_allowed", "the ticket is already yours"
    return None


def resale_refusal(ticket: TicketView) -> tuple[str, str] | None:
    if ticket.state in GONE:
        return "error.ticket.deleted", "the ticket was cancelled by the organizer"
    if ticket.state not in HELD or ticket.state == State.PENDING_TRANSFER:
        return "error.resale.not_allowed", f"a ticket in state {ticket.state} cannot be returned"
    if not ticket.rules.resale_allowed:
        return "error.resale.not_allowed", "the organizer does not take this ticket back"
    return None


def normalize_email(value: str) -> str:
    return value.strip().lower()
