"""The spectator web app (``/app``): mobile-first pages, a PWA manifest, CSRF on every form.

Pages render with Jinja2; the ticket page polls ``/app/tickets/{id}/qr`` for the QR of the
current 15 s step (SVG inline, drawn by segno). ``/app/api/...`` is the same wallet as JSON for
installed devices: the wallet with the deletions the device must drop, acknowledgements, and
the code secret of an ``offline`` ticket from its activation time on.

A refused form action redirects back with ``?error=<code>``; the page shows the message known
for that code (never text taken from the URL).
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import segno
from fastapi import APIRouter, Depends, Form, Request
from fastapi import Path as PathParameter
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field

from billetterie_wallet import security
from billetterie_wallet.errors import (
    CsrfRejected,
    NotFound,
    Unauthenticated,
    WalletError,
)
from billetterie_wallet.runtime import Runtime, runtime
from billetterie_wallet.services import accounts, wallet

HERE = Path(__file__).parent
templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"])
)
router = APIRouter(include_in_schema=False)
Rt = Annotated[Runtime, Depends(runtime)]
Id = Annotated[
    int, PathParameter(ge=1, le=2**62)
]  # larger ids exist in no table (and overflow BIGINT)

MESSAGES = {
    "error.spectator.bad_credentials": "Wrong email or password.",
    "error.spectator.unverified": "Confirm your address first with the link we sent you.",
    "error.spectator.email_taken": "An account with this address exists. Sign in instead.",
    "error.spectator.invalid_email": "Enter a valid email address.",
    "error.spectator.weak_password": "Choose a password of at least 8 characters.",
    "error.spectator.invalid_link": "This link has expired or was already used.",
    "error.spectator.too_many_links": "We already sent several links. Use the last one, or "
    "try again in a few minutes.",
    "error.auth.csrf": "The form expired. Please try again.",
    "error.ticket.unknown": "This ticket is not in your wallet.",
    "error.ticket.deleted": "The organizer cancelled this ticket.",
    "error.ticket.not_activated": "The code of this ticket is not available yet.",
    "error.transfer.not_allowed": "This ticket cannot be transferred.",
    "error.transfer.limit_reached": "This ticket has reached its maximum number of transfers.",
    "error.transfer.unknown": "There is no such transfer offer.",
    "error.transfer.closed": "This offer is no longer open.",
    "error.resale.not_allowed": "This ticket cannot be returned for resale.",
    "error.holder.invalid": "Give the holder's first and last name.",
    "error.holder.not_allowed": "The holder cannot be changed now.",
    "error.request.invalid": "Please check the form.",
}
DONE = {
    "link_sent": "We sent you a sign-in link. Check your mail.",
    "registered": "Account created. Open the link we mailed you to confirm your address.",
    "holder": "Holder saved.",
    "offered": "Transfer offered. The recipient has been notified.",
    "cancelled": "Transfer cancelled.",
    "accepted": "Ticket accepted. It is now in your wallet.",
    "rejected": "Offer declined.",
    "returned": "Ticket returned to the organizer for resale.",
}


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    error = request.query_params.get("error")
    done = request.query_params.get("done")
    html = templates.get_template(name).render(
        request=request,
        csrf=request.state.csrf,
        error=(MESSAGES.get(error, "Something went wrong.") if error else None),
        done=DONE.get(done or ""),
        **context,
    )
    return HTMLResponse(html, status_code=status)


def back(path: str, **query: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?{urlencode(query)}" if query else path, status_code=303)


class Visitor:
    """Who is on the page: the device (always) and the spectator (when signed in)."""

    def __init__(self, device: wallet.Device, spectator_id: int | None, email: str | None):
        self.device = device
        self.spectator_id = spectator_id
        self.email = email


async def visitor(request: Request, rt: Rt) -> Visitor:
    now = rt.clock.now()
    spectator_id = security.read_session(
        rt.secret,
        request.cookies.get(security.SESSION_COOKIE),
        now,
        rt.settings.session_lifetime_seconds,
    )
    email = await accounts.spectator_email(rt.engine, spectator_id) if spectator_id else None
    if email is None:
        spectator_id = None
    device = await wallet.register_device(
        rt.engine,
        uid=request.state.device_uid,
        spectator_id=spectator_id,
        user_agent=request.headers.get("user-agent", ""),
        now=now,
    )
    return Visitor(device, spectator_id, email)


Who = Annotated[Visitor, Depends(visitor)]


class SignInRequired(Unauthenticated):
    code = "error.auth.sign_in"


def signed_in(who: Visitor) -> str:
    if who.email is None:
        raise SignInRequired("sign in first")
    return who.email


async def check_csrf(request: Request) -> None:
    submitted = request.headers.get("x-csrf-token")
    if submitted is None:
        form = await request.form()
        value = form.get("csrf_token")
        submitted = value if isinstance(value, str) else None
    if not security.same_token(request.cookies.get(security.CSRF_COOKIE), submitted):
        raise CsrfRejected("missing or wrong CSRF token")


Csrf = Depends(check_csrf)


def _sign_in(rt: Runtime, spectator_id: int, target: str = "/app/tickets") -> RedirectResponse:
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        security.SESSION_COOKIE,
        security.session_value(rt.secret, spectator_id, rt.clock.now()),
        max_age=rt.settings.session_lifetime_seconds,
        httponly=True,
        samesite="lax",
        secure=rt.settings.secure_cookies,
        path="/",
    )
    return response


# --- accounts ------------------------------------------------------------------------------


@router.get("/app")
async def home(who: Who) -> RedirectResponse:
    return back("/app/tickets" if who.email else "/app/login")


@router.get("/app/login")
async def login_page(request: Request, who: Who) -> HTMLResponse:
    return render(request, "login.html", email=who.email)


@router.post("/app/login", dependencies=[Csrf])
async def login(
    rt: Rt,
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=200)],
) -> RedirectResponse:
    try:
        spectator_id = await accounts.login_with_password(rt.engine, email=email, password=password)
    except WalletError as exc:
        return back("/app/login", error=exc.code)
    return _sign_in(rt, spectator_id)


@router.post("/app/login/link", dependencies=[Csrf])
async def ask_link(
    request: Request, rt: Rt, email: Annotated[str, Form(max_length=254)]
) -> RedirectResponse:
    try:
        await accounts.request_login_link(
            rt.engine,
            email=email,
            base_url=rt.base_url(request),
            lifetime=timedelta(seconds=rt.settings.login_link_lifetime_seconds),
            now=rt.clock.now(),
        )
    except WalletError as exc:
        return back("/app/login", error=exc.code)
    return back("/app/login", done="link_sent")


@router.get("/app/login/link/{token}")
async def link_page(request: Request, token: str, who: Who) -> HTMLResponse:
    # Following the link only shows a button: mail scanners that prefetch links open nothing.
    return render(request, "link.html", token=token)


@router.post("/app/login/link/{token}", dependencies=[Csrf])
async def use_link(token: str, rt: Rt) -> RedirectResponse:
    try:
        spectator_id = await accounts.consume_login_link(rt.engine, token=token, now=rt.clock.now())
    except WalletError as exc:
        return back("/app/login", error=exc.code)
    return _sign_in(rt, spectator_id)


@router.get("/app/register")
async def register_page(request: Request, who: Who) -> HTMLResponse:
    return render(request, "register.html")


@router.post("/app/register", dependencies=[Csrf])
async def register(
    request: Request,
    rt: Rt,
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=200)],
) -> RedirectResponse:
    try:
        await accounts.register(
            rt.engine,
            email=email,
            password=password,
            base_url=rt.base_url(request),
            lifetime=timedelta(seconds=rt.settings.login_link_lifetime_seconds),
            now=rt.clock.now(),
        )
    except WalletError as exc:
        return back("/app/register", error=exc.code)
    return back("/app/login", done="registered")


@router.post("/app/logout", dependencies=[Csrf])
async def logout() -> RedirectResponse:
    response = back("/app/login")
    response.delete_cookie(security.SESSION_COOKIE, path="/")
    return response


# --- wallet --------------------------------------------------------------------------------


@router.get("/app/tickets", response_model=None)
async def tickets(request: Request, rt: Rt, who: Who) -> Response:
    if who.email is None:
        return back("/app/login")
    data = await wallet.wallet(
        rt.engine, email=who.email, device=who.device, now=rt.clock.now(), drop_deleted=True
    )
    return render(request, "wallet.html", email=who.email, **data)


@router.get("/app/tickets/{pk}", response_model=None)
async def ticket_page(request: Request, pk: Id, rt: Rt, who: Who) -> Response:
    if who.email is None:
        return back("/app/login")
    try:
        ticket = await wallet.open_ticket(
            rt.engine, email=who.email, pk=pk, device=who.device, now=rt.clock.now()
        )
    except WalletError as exc:
        return back("/app/tickets", error=exc.code)
    return render(request, "ticket.html", email=who.email, ticket=ticket, qr=await _qr(rt, who, pk))


async def _qr(rt: Runtime, who: Visitor, pk: int) -> dict[str, Any]:
    assert who.email is not None
    try:
        code = await wallet.current_code(
            rt.engine, email=who.email, pk=pk, device=who.device, now=rt.clock.now()
        )
    except WalletError as exc:
        return {"svg": None, "step": None, "message": exc.detail}
    svg = segno.make(code["payload"], error="m").svg_inline(scale=4, border=2)
    return {"svg": svg, "step": code["step"], "message": None}


@router.get("/app/tickets/{pk}/qr")
async def qr_fragment(request: Request, pk: Id, rt: Rt, who: Who) -> HTMLResponse:
    signed_in(who)
    return render(request, "qr.html", qr=await _qr(rt, who, pk))


@router.post("/app/tickets/{pk}/holder", dependencies=[Csrf])
async def holder(
    pk: Id,
    rt: Rt,
    who: Who,
    first_name: Annotated[str, Form(max_length=200)],
    last_name: Annotated[str, Form(max_length=200)],
) -> RedirectResponse:
    return await _act(
        f"/app/tickets/{pk}",
        "holder",
        wallet.assign_holder(
            rt.engine,
            email=signed_in(who),
            pk=pk,
            first_name=first_name,
            last_name=last_name,
            device=who.device,
            now=rt.clock.now(),
        ),
    )


@router.post("/app/tickets/{pk}/transfer", dependencies=[Csrf])
async def transfer(
    request: Request, pk: Id, rt: Rt, who: Who, email: Annotated[str, Form(max_length=254)]
) -> RedirectResponse:
    return await _act(
        f"/app/tickets/{pk}",
        "offered",
        wallet.offer_transfer(
            rt.engine,
            email=signed_in(who),
            pk=pk,
            to_email=email,
            device=who.device,
            now=rt.clock.now(),
            offer_lifetime=timedelta(seconds=rt.settings.transfer_timeout_seconds),
            base_url=rt.base_url(request),
        ),
    )


@router.post("/app/tickets/{pk}/transfer/cancel", dependencies=[Csrf])
async def cancel(pk: Id, rt: Rt, who: Who) -> RedirectResponse:
    return await _act(
        f"/app/tickets/{pk}",
        "cancelled",
        wallet.cancel_transfer(
            rt.engine, email=signed_in(who), pk=pk, device=who.device, now=rt.clock.now()
        ),
    )


@router.post("/app/tickets/{pk}/resale", dependencies=[Csrf])
async def resale(pk: Id, rt: Rt, who: Who) -> RedirectResponse:
    try:
        await wallet.return_for_resale(
            rt.engine, email=signed_in(who), pk=pk, device=who.device, now=rt.clock.now()
        )
    except WalletError as exc:
        return back(f"/app/tickets/{pk}", error=exc.code)
    return back("/app/tickets", done="returned")


@router.post("/app/transfers/{offer_id}/{answer}", dependencies=[Csrf])
async def answer(offer_id: Id, answer: str, rt: Rt, who: Who) -> RedirectResponse:
    if answer not in ("accept", "reject"):
        raise NotFound("no such action")
    try:
        pk = await wallet.answer_transfer(
            rt.engine,
            email=signed_in(who),
            offer_id=offer_id,
            accept=answer == "accept",
            device=who.device,
            now=rt.clock.now(),
        )
    except WalletError as exc:
        return back("/app/tickets", error=exc.code)
    if answer == "accept":
        return back(f"/app/tickets/{pk}", done="accepted")
    return back("/app/tickets", done="rejected")


async def _act(path: str, done: str, action: Any) -> RedirectResponse:
    try:
        await action
    except WalletError as exc:
        return back(path, error=exc.code)
    return back(path, done=done)


# --- the same wallet as JSON, for installed devices ------------------------------------------


@router.get("/app/api/wallet")
async def api_wallet(rt: Rt, who: Who) -> JSONResponse:
    email = signed_in(who)
    deletions = await wallet.pending_deletions(rt.engine, who.device)
    data = await wallet.wallet(
        rt.engine, email=email, device=who.device, now=rt.clock.now(), drop_deleted=False
    )
    return JSONResponse(
        {
            "device": who.device.uid,
            "events": [{**e, "start": e["start"].isoformat()} for e in data["events"]],
            "privileges": [
                {**p, "validUntil": p["validUntil"].isoformat() if p["validUntil"] else None}
                for p in data["privileges"]
            ],
            "deletions": deletions,
        }
    )


class Acknowledgement(BaseModel):
    ticket_ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(alias="ids", max_length=1000)


@router.post("/app/api/devices/acknowledge", dependencies=[Csrf])
async def api_acknowledge(body: Acknowledgement, rt: Rt, who: Who) -> dict[str, Any]:
    """The device dropped these deleted tickets (ids from ``deletions``)."""
    signed_in(who)
    done = await wallet.acknowledge_deletions(
        rt.engine, device=who.device, ticket_pks=body.ticket_ids, now=rt.clock.now()
    )
    return {"deleted": sorted(done)}


@router.get("/app/api/tickets/{pk}/secret")
async def api_secret(pk: Id, rt: Rt, who: Who) -> dict[str, Any]:
    return await wallet.release_secret(
        rt.engine, email=signed_in(who), pk=pk, device=who.device, now=rt.clock.now()
    )


# --- PWA -----------------------------------------------------------------------------------


@router.get("/app/manifest.webmanifest")
async def manifest() -> JSONResponse:
    return JSONResponse(
        {
            "name": "billetterie wallet",
            "short_name": "Wallet",
            "start_url": "/app/tickets",
            "scope": "/app/",
            "display": "standalone",
            "background_color": "#ffffff",
            "theme_color": "#1d3557",
            "icons": [{"src": "/static/icon.svg", "sizes": "any", "type": "image/svg+xml"}],
        },
        media_type="application/manifest+json",
    )


@router.get("/app/sw.js")
async def service_worker() -> Response:
    return Response(
        (HERE / "static" / "sw.js").read_text(),
        media_type="text/javascript",
        headers={"Service-Worker-Allowed": "/app/"},
    )


@router.get("/dev/mail")
async def dev_mail(request: Request, rt: Rt) -> HTMLResponse:
    if not rt.settings.dev_mail:
        raise NotFound("not found")
    return render(request, "mail.html", mails=await accounts.mails(rt.engine))


def new_device_uid() -> str:
    return secrets.token_urlsafe(18)
