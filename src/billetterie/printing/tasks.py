"""Running the functions: on demand (the CLI) and on schedule (the background loops).

:func:`run_function` is one run of one function of one interface: an execution-log row is
written at the start and finished with the counts and the error, whatever happens. The loops
call :func:`run_due` for each function every ``TICK_SECONDS``; it runs the interfaces whose
schedule is due (claimed once across processes, see ``services.claim_due``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.printing.errors import WalletError
from billetterie.printing.feedback import fetch_feedback
from billetterie.printing.functions import (
    inject_privileges,
    inject_tickets,
    push_cancelled,
    push_controlled,
)
from billetterie.printing.models import Counts, ExecutionStatus, Function, Interface, Progress
from billetterie.printing.services import claim_due, finish_execution, start_execution
from billetterie.printing.wallet import DEFAULT_DELAYS, DEFAULT_TIMEOUT, WalletClient
from billetterie.shared.clock import Clock, FixedClock
from billetterie.shared.periodic import Round

log = logging.getLogger("billetterie.printing")
TICK_SECONDS = 10.0

FunctionRun = Callable[
    [AsyncEngine, Interface, WalletClient, Clock, Counts, Progress | None], Awaitable[None]
]
FUNCTIONS: dict[Function, FunctionRun] = {
    Function.INJECTION: inject_tickets,
    Function.FEEDBACK: fetch_feedback,
    Function.PUSH_CANCELLED: push_cancelled,
    Function.PUSH_CONTROLLED: push_controlled,
    Function.PRIVILEGES: inject_privileges,
}


@dataclass(frozen=True)
class RunResult:
    execution_id: int
    status: ExecutionStatus
    counts: Counts
    error: str | None


async def run_function(
    engine: AsyncEngine,
    item: Interface,
    function: Function,
    *,
    http: httpx.AsyncClient,
    clock: Clock,
    trigger: str = "cli",
    progress: Progress | None = None,
    delays: Sequence[float] = DEFAULT_DELAYS,
) -> RunResult:
    """One run, logged. A :class:`WalletError` (the wallet unreachable after the retries, or a
    whole call refused) ends the run as FAILED; what earlier batches did is kept."""
    execution_id = await start_execution(engine, item, function, trigger=trigger, now=clock.now())
    counts = Counts()
    wallet = WalletClient(item.url, item.login, item.api_key, http, delays)
    error: str | None = None
    try:
        await FUNCTIONS[function](engine, item, wallet, clock, counts, progress)
    except WalletError as exc:
        error = f"{exc.code}: {exc.detail}"
    except Exception as exc:  # logged, and the run still gets its row
        log.exception("printing %s of %s failed", function.value, item.code)
        error = f"error.internal: {type(exc).__name__}"
        await finish_execution(engine, execution_id, counts, error=error, now=clock.now())
        raise
    status = await finish_execution(engine, execution_id, counts, error=error, now=clock.now())
    return RunResult(execution_id, status, counts, error)


def periodic_round(function: Function) -> Round:
    """The background loops' round for ``function``: every due interface, one after another."""

    async def round_(engine: AsyncEngine, now: datetime) -> int:
        due = await claim_due(engine, function, now)
        if not due:
            return 0
        async with httpx.AsyncClient(timeout=DEFAULT_TIMEOUT, follow_redirects=False) as http:
            for item in due:
                await run_function(
                    engine, item, function, http=http, clock=FixedClock(now), trigger="schedule"
                )
        return len(due)

    return round_
