"""External printing interfaces (domain, no framework): their functions, settings and the
execution log. See docs/printing.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class InterfaceType(StrEnum):
    WALLET = "WALLET"


class Function(StrEnum):
    """The five functions of an interface of type WALLET (seed 004)."""

    INJECTION = "injection"
    FEEDBACK = "feedback"
    PUSH_CANCELLED = "push-cancelled"
    PUSH_CONTROLLED = "push-controlled"
    PRIVILEGES = "privileges"


DEFAULT_SCHEDULE: dict[Function, int] = {
    Function.INJECTION: 300,
    Function.FEEDBACK: 300,
    Function.PUSH_CANCELLED: 300,
    Function.PUSH_CONTROLLED: 60,
    Function.PRIVILEGES: 300,
}
MAX_BATCH = 1000
PRIVILEGE_FAMILIES = frozenset({"MEMBERSHIP", "SEASONTICKET"})


class ExecutionStatus(StrEnum):
    RUNNING = "RUNNING"  # not finished yet (or the process running it died)
    SUCCEEDED = "SUCCEEDED"  # every item sent was accepted (or there was nothing to send)
    PARTIAL = "PARTIAL"  # some items were refused; they stay for the next run
    FAILED = "FAILED"  # the run stopped: the wallet was unreachable, or refused a whole call


@dataclass(frozen=True)
class Interface:
    id: int
    institution_id: int
    organization_id: int
    code: str
    type: InterfaceType
    url: str
    login: str
    api_key: str
    products: tuple[str, ...]
    schedule: dict[Function, int]
    batch_size: int
    enabled: bool

    def every(self, function: Function) -> int:
        return self.schedule.get(function, DEFAULT_SCHEDULE[function])


@dataclass
class Counts:
    """What one run did: items sent to the wallet, accepted, refused."""

    sent: int = 0
    accepted: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def refuse(self, detail: str) -> None:
        self.failed += 1
        if len(self.errors) < 20:  # the log keeps the first few reasons
            self.errors.append(detail)


@dataclass(frozen=True)
class Execution:
    id: int
    interface_id: int
    interface_code: str
    function: Function
    trigger: str
    status: ExecutionStatus
    started_at: datetime
    finished_at: datetime | None
    sent: int
    accepted: int
    failed: int
    error: str | None


Progress = Callable[[Counts], None]  # told the counts after each batch (the CLI's progress bar)
