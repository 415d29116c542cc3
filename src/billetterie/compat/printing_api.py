"""External printing and access control on the partner surface.

``GET /api/v1/printing/executions``: the execution log of the operator's institution's printing
interfaces, newest first (``limit`` per page, at most 200; ``next`` is passed back as
``before``; filters ``function`` and ``interface``). Errors are RFC 9457 problem+json.

``accessControlService.controlTicket`` (module ``tnci``): a gate admits a barcode; the ticket
becomes CONTROLLED (see ``sales.tickets.control_ticket``), which push controlled then tells the
wallet.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from billetterie.compat import schemas as s
from billetterie.compat.rpc import Call, RpcService, current_call
from billetterie.printing.models import Function
from billetterie.printing.services import MAX_PAGE, list_executions
from billetterie.sales.tickets import control_ticket
from billetterie.shared.db import read

router = APIRouter(prefix="/api/v1/printing", tags=["printing"])
access_control = RpcService("tnci", "accessControlService", ("v1_33",), "Access control")

FunctionName = Literal["injection", "feedback", "push-cancelled", "push-controlled", "privileges"]


class ExecutionItem(BaseModel):
    id: int = Field(description="The run's id (the cursor of the listing).")
    interface: str = Field(description="The interface's code.")
    function: FunctionName
    trigger: Literal["schedule", "cli"]
    status: Literal["RUNNING", "SUCCEEDED", "PARTIAL", "FAILED"]
    startedAt: datetime
    finishedAt: datetime | None
    sent: int = Field(description="Items sent to (or, for feedback, read from) the wallet.")
    accepted: int
    failed: int = Field(description="Items refused; they stay for the next run.")
    error: str | None = Field(description="Why the run stopped, then the first refusals.")


class ExecutionPage(BaseModel):
    executions: list[ExecutionItem]
    next: int | None = Field(description="Pass as `before` to read older runs.")


@router.get(
    "/executions",
    response_model=ExecutionPage,
    operation_id="printing_executions",
    responses={400: {"description": "bad filter (problem+json)"}, 401: {"description": "no token"}},
)
async def executions(
    call: Call = Depends(current_call),
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**53 - 1)] = None,
    function: FunctionName | None = None,
    interface: Annotated[str | None, Query(pattern=r"^[A-Z0-9][A-Z0-9_\-]{0,15}$")] = None,
) -> ExecutionPage:
    """Every run of the institution's printing interfaces: counts sent, accepted, failed."""
    async with read(call.runtime.engine) as conn:
        page = await list_executions(
            conn,
            call.operator.institution_id,
            function=Function(function) if function else None,
            interface_code=interface,
            before=before,
            limit=limit,
        )
    return ExecutionPage(
        executions=[
            ExecutionItem(
                id=e.id,
                interface=e.interface_code,
                function=e.function.value,
                trigger=e.trigger,
                status=e.status.value,
                startedAt=e.started_at,
                finishedAt=e.finished_at,
                sent=e.sent,
                accepted=e.accepted,
                failed=e.failed,
                error=e.error,
            )
            for e in page.executions
        ],
        next=page.next_cursor,
    )


class ControlTicketRequest(s.Request):
    barcode: s.StorableText = Field(min_length=1, max_length=512)
    scanner: s.StorableText | None = Field(default=None, max_length=64)


class ControlTicketResponse(s.Envelope):
    ticketId: int | None = None
    orderId: int | None = None
    performanceId: int | None = None
    controlledAt: str | None = None
    firstControl: bool | None = Field(
        default=None, description="False when the ticket had already been controlled."
    )


@access_control.method(
    "controlTicket", request=ControlTicketRequest, response=ControlTicketResponse
)
async def control(payload: ControlTicketRequest, call: Call) -> dict[str, Any]:
    """Admit a scanned barcode: it must verify under the institution's keys and not be revoked;
    its ticket becomes CONTROLLED. Refusals: error.barcode.*, error.ticket.revoked,
    error.ticket.unknown."""
    result = await control_ticket(
        call.runtime.engine,
        call.operator.institution_id,
        payload.barcode,
        call.runtime.clock.now(),
        actor=f"{call.operator.login}:{payload.scanner or 'gate'}",
    )
    return {
        "ticketId": result.ticket_id,
        "orderId": result.order_id,
        "performanceId": result.performance_id,
        "controlledAt": result.controlled_at.isoformat(),
        "firstControl": result.first_control,
    }
