"""``GET /api/v1/webhooks/deliveries``: the webhook delivery log of the operator's point of sale.

Newest attempt first, ``limit`` per page (at most 200); ``next`` is the cursor of the next
(older) page, passed back as ``before``. Filters: ``event``, ``status``, ``deliveryId``.
Errors are RFC 9457 problem+json; an operator only ever sees its own point of sale.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from billetterie.compat.rpc import Call, current_call
from billetterie.shared.db import read
from billetterie.webhooks.services import MAX_PAGE, list_attempts

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

EventName = Literal["order.closed", "order.cancelled", "contact.created", "contact.updated"]
StatusName = Literal["SUCCEEDED", "RETRYING", "FAILED"]


class DeliveryAttempt(BaseModel):
    id: int = Field(description="The attempt's id (the cursor of the listing).")
    deliveryId: str = Field(description="The Billetterie-Delivery header; same on every retry.")
    subscription: str = Field(description="The subscription's code in the setup file.")
    event: EventName
    subjectId: str = Field(description="The order id or contact number.")
    attempt: int = Field(description="1 for the first try.")
    status: StatusName
    method: Literal["GET", "POST"]
    url: str
    responseCode: int | None = Field(description="The receiver's HTTP status; null if none.")
    durationMs: int
    error: str | None
    at: datetime


class DeliveryPage(BaseModel):
    deliveries: list[DeliveryAttempt]
    next: int | None = Field(description="Pass as `before` to read older attempts.")


@router.get(
    "/deliveries",
    response_model=DeliveryPage,
    operation_id="webhooks_deliveries",
    responses={400: {"description": "bad filter (problem+json)"}, 401: {"description": "no token"}},
)
async def deliveries(
    call: Call = Depends(current_call),
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**53 - 1)] = None,
    event: EventName | None = None,
    status: StatusName | None = None,
    deliveryId: Annotated[str | None, Query(max_length=32)] = None,
) -> DeliveryPage:
    """Every webhook delivery attempt of this point of sale: status, duration, response code
    and error, newest first."""
    async with read(call.runtime.engine) as conn:
        page = await list_attempts(
            conn,
            call.operator.institution_id,
            point_of_sale_id=call.operator.point_of_sale_id,
            event=event,
            status=status,
            delivery_id=deliveryId,
            before=before,
            limit=limit,
        )
    return DeliveryPage(
        deliveries=[
            DeliveryAttempt(
                id=a.id,
                deliveryId=a.delivery_id,
                subscription=a.subscription_code,
                event=a.event,
                subjectId=a.subject_id,
                attempt=a.attempt,
                status=a.status.value,
                method=a.method,
                url=a.url,
                responseCode=a.response_code,
                durationMs=a.duration_ms,
                error=a.error,
                at=a.at,
            )
            for a in page.attempts
        ],
        next=page.next_cursor,
    )
