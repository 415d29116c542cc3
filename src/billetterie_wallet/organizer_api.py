"""The organizer API (``/api/v1/organizer/...``) and the scanner (``/api/v1/scanner/...``).

Authentication: ``Authorization: Bearer <API key>``, or HTTP Basic with the API key as the
password (the box office's external printing interface is configured with a login and an API
key; the login is not checked). Each endpoint needs one role of the key (see
:class:`billetterie_wallet.models.Role`). Errors are RFC 9457 problem+json with a stable code;
batch endpoints answer 200 with one result per item. Documented in docs/wallet/organizer-api.md.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer

from billetterie_wallet.errors import Forbidden, InvalidRequest, Unauthenticated
from billetterie_wallet.models import Role
from billetterie_wallet.runtime import Runtime, runtime
from billetterie_wallet.schemas import (
    BarcodeKeyChanges,
    BarcodeKeyList,
    BarcodeKeys,
    BatchResult,
    DeleteRequest,
    FeedbackPage,
    PrivilegeBatch,
    PrivilegeIds,
    ReportPage,
    ScanRequest,
    ScanResult,
    TicketBatch,
    TicketIds,
    When,
)
from billetterie_wallet.services import (
    barcode_keys,
    injection,
    organizer_ops,
    organizers,
    scanner,
)


class OrjsonRequest(Request):
    """A request whose JSON body is parsed by orjson (batches of 1000 tickets: the standard
    library's parser took a tenth of the wallet's time per batch). What orjson refuses is
    parsed again by the standard library, so that NaN and Infinity, which Python's parser
    takes, still reach the per-item validation and are refused item by item as before."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._json = json.loads(body)
        return self._json


class OrjsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return route


router = APIRouter(prefix="/api/v1", tags=["organizer"], route_class=OrjsonRoute)
Rt = Annotated[Runtime, Depends(runtime)]


def _key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("malformed Basic credentials") from None
        return decoded.partition(":")[2]
    raise Unauthenticated("send the API key as a Bearer token or as the Basic password")


# Declared for the OpenAPI document; the header is read by _key, which also takes Basic.
bearer = HTTPBearer(auto_error=False, description="The organizer's API key.")


async def organizer(
    request: Request, rt: Rt, _: Annotated[Any, Security(bearer)]
) -> organizers.Organizer:
    return await organizers.authenticate(rt.engine, _key(request))


Org = Annotated[organizers.Organizer, Depends(organizer)]


class Json(Response):
    """Answers rendered straight by orjson: the services build them in the documented shape
    (``response_model`` keeps documenting it; tests check the answers against those models)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _batch(results: list[dict[str, Any]]) -> Json:
    return Json({"results": results, "summary": dict(Counter(r["status"] for r in results))})


@router.get("/organizer/me")
async def me(org: Org) -> dict[str, Any]:
    """The organizer this key belongs to and the key's roles."""
    return {"organizer": org.code, "keyId": org.key_id, "roles": sorted(org.roles)}


@router.post("/organizer/tickets", response_model=BatchResult)
async def inject(body: TicketBatch, org: Org, rt: Rt) -> Json:
    """Inject up to 1000 tickets; idempotent by ticketId; one result per ticket."""
    org.require(Role.TICKETS)
    results = await injection.inject_tickets(
        rt.engine,
        organizer_id=org.id,
        items=body.tickets,
        default_max_transfers=rt.settings.default_max_transfers,
        now=rt.clock.now(),
        actor=f"organizer:{org.code}",
    )
    return _batch(results)


@router.post("/organizer/tickets/delete", response_model=BatchResult)
async def delete(body: DeleteRequest, org: Org, rt: Rt) -> Json:
    """Cancelled or invalidated tickets: DELETION_PENDING, then DELETED."""
    org.require(Role.TICKETS)
    results = await organizer_ops.delete_tickets(
        rt.engine,
        organizer_id=org.id,
        ticket_ids=body.ticket_ids,
        reason=body.reason,
        now=rt.clock.now(),
        actor=f"organizer:{org.code}",
    )
    return _batch(results)


@router.post("/organizer/tickets/controlled", response_model=BatchResult)
async def controlled(body: TicketIds, org: Org, rt: Rt) -> Json:
    """Tickets scanned at the gate: CONTROLLED, no longer transferable."""
    org.require(Role.TICKETS)
    results = await organizer_ops.control_tickets(
        rt.engine,
        organizer_id=org.id,
        ticket_ids=body.ticket_ids,
        now=rt.clock.now(),
        actor=f"organizer:{org.code}",
    )
    return _batch(results)


@router.get("/organizer/feedback", response_model=FeedbackPage)
async def feedback(
    org: Org,
    rt: Rt,
    key: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=organizer_ops.FEEDBACK_LIMIT)] = 500,
) -> Json:
    """Changed tickets after the key (or after this organizer's consumer's last key)."""
    org.require(Role.FEEDBACK)
    page = await organizer_ops.feedback(
        rt.engine, organizer_id=org.id, key=key, limit=limit, secret=rt.secret
    )
    return Json(page)


@router.post("/organizer/privileges", response_model=BatchResult)
async def privileges(body: PrivilegeBatch, org: Org, rt: Rt) -> Json:
    """Inject up to 1000 digital privileges (membership and season cards)."""
    org.require(Role.PRIVILEGES)
    results = await injection.inject_privileges(
        rt.engine,
        organizer_id=org.id,
        items=body.privileges,
        now=rt.clock.now(),
        actor=f"organizer:{org.code}",
    )
    return _batch(results)


@router.post("/organizer/privileges/delete", response_model=BatchResult)
async def delete_privileges(body: PrivilegeIds, org: Org, rt: Rt) -> Json:
    """Cancelled or invalidated membership and season cards: DELETED, no longer usable."""
    org.require(Role.PRIVILEGES)
    results = await organizer_ops.delete_privileges(
        rt.engine,
        organizer_id=org.id,
        privilege_ids=body.privilege_ids,
        reason=body.reason,
        now=rt.clock.now(),
        actor=f"organizer:{org.code}",
    )
    return _batch(results)


@router.post("/organizer/privileges/{privilege_id}/use")
async def use_privilege(privilege_id: str, org: Org, rt: Rt) -> dict[str, Any]:
    """Use a privilege (once)."""
    org.require(Role.PRIVILEGES)
    return await organizer_ops.use_privilege(
        rt.engine,
        organizer_id=org.id,
        privilege_id=privilege_id,
        now=rt.clock.now(),
        actor=f"organizer:{org.code}",
    )


@router.get("/organizer/reports/ticket-status-log", response_model=ReportPage)
async def ticket_status_log(
    org: Org,
    rt: Rt,
    ticket_id: Annotated[str | None, Query(alias="ticketId", max_length=100)] = None,
    event_id: Annotated[str | None, Query(alias="eventId", max_length=100)] = None,
    since: Annotated[When | None, Query(alias="from")] = None,
    until: Annotated[When | None, Query(alias="to")] = None,
    cursor: Annotated[str | None, Query(max_length=18)] = None,
    limit: Annotated[int, Query(ge=1, le=organizer_ops.FEEDBACK_LIMIT)] = 500,
) -> dict[str, Any]:
    """Every logged action on the organizer's tickets, oldest first."""
    org.require(Role.REPORTS)
    if cursor is not None and not cursor.isdigit():
        raise InvalidRequest(
            "cursor must be a nextCursor this report returned", code="error.report.invalid_cursor"
        )
    return await organizer_ops.ticket_status_log(
        rt.engine,
        organizer_id=org.id,
        ticket_id=ticket_id,
        event_id=event_id,
        since=since,
        until=until,
        after=int(cursor or 0),
        limit=limit,
    )


@router.get("/organizer/activation-groups/{group_id}")
async def activation_group(group_id: str, org: Org, rt: Rt) -> dict[str, Any]:
    """The group secret an offline scanner needs."""
    org.require(Role.ACCESS_CONTROL)
    return await organizer_ops.group_secret(rt.engine, organizer_id=org.id, group_id=group_id)


@router.put("/organizer/barcode-keys", response_model=BarcodeKeyChanges)
async def register_barcode_keys(body: BarcodeKeys, org: Org, rt: Rt) -> dict[str, Any]:
    """The box office's barcode public keys still verifiable, all of them: keys not named any
    more are retired (for good); the scanner admits only barcodes signed by the others."""
    org.require(Role.TICKETS)
    return await barcode_keys.register(
        rt.engine,
        organizer_id=org.id,
        keys=[(k.key_id, k.public_key) for k in body.keys],
        now=rt.clock.now(),
        actor=f"organizer:{org.code}",
    )


@router.get("/organizer/barcode-keys", response_model=BarcodeKeyList)
async def list_barcode_keys(org: Org, rt: Rt) -> dict[str, Any]:
    """The barcode keys the wallet holds for this organizer, retired ones included."""
    if Role.TICKETS not in org.roles and Role.ACCESS_CONTROL not in org.roles:
        raise Forbidden(
            "this API key lacks the role 'tickets' or 'access_control'", role="access_control"
        )
    return await barcode_keys.list_keys(rt.engine, organizer_id=org.id)


@router.post("/scanner/validate", response_model=ScanResult, response_model_exclude_none=True)
async def validate(body: ScanRequest, org: Org, rt: Rt) -> dict[str, Any]:
    """Validate a scanned rotating code (VALID, DUPLICATE, EXPIRED, UNKNOWN_GROUP, MALFORMED)."""
    org.require(Role.ACCESS_CONTROL)
    return await scanner.validate(
        rt.engine, organizer_id=org.id, code=body.code, scanner=body.scanner, now=rt.clock.now()
    )
