"""Barcode keys and the revocation list, for scanners and access-control partners.

``GET /api/v1/barcodes/keys`` publishes the institution's verifiable public keys (ACTIVE and
PREVIOUS) by id, raw (base64) and PEM; ``GET /api/v1/barcodes/revocations?since=`` is the
revocation feed with a cursor. Both take the operator's Bearer token, answer ``ETag`` and 304 on
``If-None-Match``, and render errors as RFC 9457 problem+json.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from billetterie.compat.mirror_api import not_modified
from billetterie.compat.rpc import Call, current_call
from billetterie.sales.barcode_keys import (
    public_keys,
    revocation_sequence,
    revocations_since,
)
from billetterie.shared.db import read
from billetterie.shared.errors import InvalidRequest

router = APIRouter(prefix="/api/v1/barcodes", tags=["barcodes"])
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {"description": "not modified"}}


class PublicKey(BaseModel):
    keyId: int = Field(description="The id carried in bytes 1-4 of every barcode it signed.")
    organizationId: int
    algorithm: str = Field(description="Always Ed25519.")
    state: str = Field(description="ACTIVE (signs new barcodes) or PREVIOUS (verify only).")
    publicKey: str = Field(description="The raw 32-byte public key, base64.")
    pem: str = Field(description="The same key as a SubjectPublicKeyInfo PEM.")
    createdAt: str
    rotatedAt: str | None = None


class PublicKeys(BaseModel):
    keys: list[PublicKey]


class RevocationItem(BaseModel):
    sequence: int
    ticketId: int
    reason: str = Field(description="CANCELLED, INVALIDATED or REISSUED.")
    revokedAt: str


class Revocations(BaseModel):
    cursor: str = Field(description="Pass it as `since` to read what follows.")
    complete: bool = Field(description="False when more revocations follow the cursor.")
    revocations: list[RevocationItem]


@router.get("/keys", response_model=PublicKeys, responses=NOT_MODIFIED, operation_id="barcode_keys")
async def keys(request: Request, call: Call = Depends(current_call)) -> Response:
    """The public keys that verify this institution's barcodes (retired keys are left out)."""
    async with read(call.runtime.engine) as conn:
        found = await public_keys(conn, institution_id=call.operator.institution_id)
    body = {
        "keys": [
            {
                "keyId": key.key_id,
                "organizationId": key.organization_id,
                "algorithm": "Ed25519",
                "state": key.state,
                "publicKey": base64.b64encode(key.public_key).decode("ascii"),
                "pem": key.pem,
                "createdAt": key.created_at.isoformat(),
                "rotatedAt": None if key.rotated_at is None else key.rotated_at.isoformat(),
            }
            for key in found
        ]
    }
    content = orjson.dumps(body)
    etag = f'W/"k{call.operator.institution_id}-{hashlib.sha256(content).hexdigest()[:16]}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=60", "Vary": "Authorization"}
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type="application/json", headers=headers)


@router.get(
    "/revocations",
    response_model=Revocations,
    responses=NOT_MODIFIED,
    operation_id="barcode_revocations",
)
async def revocations(
    request: Request,
    call: Call = Depends(current_call),
    since: Annotated[
        str,
        Query(
            pattern=r"^r?[0-9]{0,18}$",
            description="A cursor from a previous answer; '0' or nothing for the whole list.",
        ),
    ] = "0",
) -> Response:
    """Tickets whose barcodes no longer open a door, after a cursor, in the order they were
    revoked (at most 1000; resume with the cursor while ``complete`` is false). The ETag names
    the cursor and the list's current sequence."""
    try:
        after = int(since.removeprefix("r") or "0")
    except ValueError:
        raise InvalidRequest("since: not a cursor from this feed") from None
    institution_id = call.operator.institution_id
    async with read(call.runtime.engine) as conn:
        current = await revocation_sequence(conn, institution_id=institution_id)
        etag = f'W/"r{institution_id}-{after}-{current}"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=0", "Vary": "Authorization"}
        if not_modified(request, etag):
            return Response(status_code=304, headers=headers)
        page = await revocations_since(conn, institution_id=institution_id, since=after)
    body = {
        "cursor": f"r{page.cursor}",
        "complete": page.complete,
        "revocations": [
            {
                "sequence": item.sequence,
                "ticketId": item.ticket_id,
                "reason": item.reason,
                "revokedAt": item.revoked_at.isoformat(),
            }
            for item in page.revocations
        ],
    }
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)
