"""``POST /tnai/backend-apis/v1/auth``: an operator's secret for a short-lived Bearer token."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request

from billetterie.catalog.services import point_of_sale_context
from billetterie.compat.envelope import JsonResponse
from billetterie.compat.rpc import runtime_of
from billetterie.compat.schemas import AuthRequest, AuthResponse
from billetterie.identity.errors import BadCredentials
from billetterie.identity.services import authenticate, operator_login_point_of_sale
from billetterie.shared.db import read

router = APIRouter(tags=["auth"])


@router.post(
    "/tnai/backend-apis/v1/auth",
    response_model=AuthResponse,
    operation_id="auth",
)
async def auth(body: AuthRequest, request: Request) -> JsonResponse:
    """Authenticate an operator. The token names the institution (``sub``), the operator
    (``aud``) and the partner (``iss``); send it as ``Authorization: Bearer`` on every call."""
    runtime = runtime_of(request)
    async with read(runtime.engine) as conn:
        point_of_sale_id = await operator_login_point_of_sale(conn, body.operator)
        if point_of_sale_id is None:
            institution_code = ""
        else:
            institution_code = (
                await point_of_sale_context(conn, point_of_sale_id)
            ).institution_code
        token = await authenticate(
            conn,
            login=body.operator,
            partner=body.partner,
            secret=body.secret,
            institution_code=institution_code,
            key=runtime.token_key,
            lifetime=timedelta(seconds=runtime.settings.token_lifetime_seconds),
            now=runtime.clock.now(),
        )
    if not institution_code:
        raise BadCredentials("unknown operator or wrong secret")
    return JsonResponse({"token": token})
