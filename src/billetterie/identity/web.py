"""Shop account pages under ``/shop/<point of sale code>/account/`` (server-rendered, Jinja2).

Every form carries a CSRF token: a random value in the ``bt_csrf`` cookie (HttpOnly,
SameSite=Lax, scoped to the shop's path) that the form must echo; a POST without the match is
refused (``error.account.csrf``, 403) before anything else happens. Session and remember-me
cookies are scoped to ``/shop/<code>`` too, so points of sale never see each other's.
Return URLs (``next``, ``callbackUrl``) are paths of this site or URLs on a host the point of
sale registers (``returnHosts``); anything else is ``error.account.bad_return_url``.
Refusals render the form again with the stable code in ``data-code``; no page answers 500.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import APIRouter, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from billetterie.catalog.services import (
    PointOfSaleContext,
    point_of_sale_by_code,
    point_of_sale_context,
)
from billetterie.config import Settings
from billetterie.contacts import services as contacts
from billetterie.contacts.models import (
    Address,
    AddressKind,
    Authorization,
    Contact,
    ContactInput,
    Detail,
)
from billetterie.identity import accounts, cookies
from billetterie.identity.errors import BadReturnUrl, CsrfRejected, PasswordLoginDisabled
from billetterie.identity.keys import point_of_sale_key
from billetterie.identity.mail import Mailer, MailSink, deliver_pending
from billetterie.identity.models import SignInSetup, host_allowed
from billetterie.identity.signin import sign_in_setup
from billetterie.shared.clock import Clock
from billetterie.shared.db import read
from billetterie.shared.errors import DomainError

router = APIRouter(include_in_schema=False)
templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)
CSRF_COOKIE = "bt_csrf"
SESSION_COOKIE = "bt_session"
REMEMBER_COOKIE = "bt_remember"
MAX_FIELD = 8192  # a return URL may carry a SAML request


class WebRuntime(Protocol):
    settings: Settings
    engine: AsyncEngine
    clock: Clock
    token_key: str
    caches: dict[str, Any]


@dataclass
class Shop:
    """One request on one point of sale's pages."""

    request: Request
    runtime: WebRuntime
    point: accounts.ShopPoint
    context: PointOfSaleContext
    setup: SignInSetup
    csrf: str
    cookies_to_set: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    cookies_to_clear: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"/shop/{self.point.code}"

    @property
    def now(self) -> Any:
        return self.runtime.clock.now()

    @property
    def engine(self) -> AsyncEngine:
        return self.runtime.engine

    @property
    def language(self) -> str:
        languages = self.context.point_of_sale.languages or self.context.organization.languages
        return str(languages[0]) if languages else "en"

    @property
    def address(self) -> str:
        return self.request.client.host if self.request.client else "unknown"

    @property
    def password_login(self) -> bool:
        provider = self.setup.identity_provider
        return provider is None or not provider.exclusive

    def secure(self) -> bool:
        return self.request.url.scheme == "https"

    def set_cookie(self, name: str, value: str, **options: Any) -> None:
        self.cookies_to_set.append((name, value, options))

    def clear_cookie(self, name: str, **options: Any) -> None:
        self.cookies_to_clear.append((name, options))

    def local_cookie(self, name: str, value: str, *, max_age: int | None = None) -> None:
        self.set_cookie(
            name,
            value,
            path=self.base,
            httponly=True,
            samesite="lax",
            secure=self.secure(),
            max_age=max_age,
        )

    def finish(self, response: Response) -> Response:
        if self.request.cookies.get(CSRF_COOKIE) != self.csrf:
            self.local_cookie(CSRF_COOKIE, self.csrf)
        for name, options in self.cookies_to_clear:
            response.delete_cookie(name, **options)
        for name, value, options in self.cookies_to_set:
            response.set_cookie(name, value, **options)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def page(self, template: str, *, status: int = 200, **values: Any) -> Response:
        html = templates.get_template(template).render(
            base=self.base,
            csrf=self.csrf,
            lang=self.language,
            shop_name=(self.context.point_of_sale.name or {}).get(self.language, self.point.code),
            **values,
        )
        return self.finish(HTMLResponse(html, status_code=status))

    def redirect(self, url: str) -> Response:
        return self.finish(RedirectResponse(url, status_code=303))

    def refuse(self, error: DomainError, template: str = "message.html", **values: Any) -> Response:
        values.setdefault("title", "Something is not right")
        return self.page(template, status=error.http_status, error=error, **values)

    def safe_return(self, url: str | None) -> str:
        """``url`` if it is a local path or on a registered host (see the module docstring)."""
        return safe_return(url, self.setup, default=f"{self.base}/account")


def safe_return(url: str | None, setup: SignInSetup, *, default: str) -> str:
    if not url:
        return default
    if len(url) > MAX_FIELD or any(ord(ch) < 33 for ch in url) or "\\" in url:
        raise BadReturnUrl("this return address is not allowed")
    if url.startswith("/") and not url.startswith("//"):
        return url
    parts = urlsplit(url)
    if (
        parts.scheme in {"http", "https"}
        and parts.netloc
        and "@" not in parts.netloc
        and host_allowed(parts.netloc, setup.return_hosts)
    ):
        return url
    raise BadReturnUrl("this return address is not allowed")


def _runtime(request: Request) -> WebRuntime:
    runtime: WebRuntime = request.app.state.runtime
    return runtime


def _not_found(request: Request, detail: str) -> Response:
    html = templates.get_template("message.html").render(
        title="Not found", error={"code": "error.catalog.unknown_point_of_sale", "detail": detail}
    )
    return HTMLResponse(html, status_code=404)


async def load_shop(request: Request, pos_code: str) -> Shop | None:
    runtime = _runtime(request)
    if len(pos_code) > 16:
        return None
    async with read(runtime.engine) as conn:
        try:
            pos_id = await point_of_sale_by_code(conn, pos_code)
        except DomainError:
            return None
        context = await point_of_sale_context(conn, pos_id)
        setup = await sign_in_setup(conn, pos_id)
    public = runtime.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    point = accounts.ShopPoint(
        institution_id=context.institution_id,
        point_of_sale_id=pos_id,
        code=context.point_of_sale.code,
        organization_code=context.organization.code,
        sales_channel_id=context.sales_channel.id,
        sales_channel_code=context.sales_channel.code,
        cookie_domain=context.point_of_sale.cookie_domain,
        registration_allowed=bool(context.point_of_sale.contact_account_creation_allowed),
        base_url=f"{public}/shop/{context.point_of_sale.code}",
    )
    csrf = request.cookies.get(CSRF_COOKIE, "")
    if not (20 <= len(csrf) <= 64 and csrf.replace("-", "").replace("_", "").isalnum()):
        csrf = secrets.token_urlsafe(24)
    return Shop(request, runtime, point, context, setup, csrf)


async def form_of(shop: Shop) -> FormData:
    """The posted form, once its CSRF token matched the cookie's."""
    form = await shop.request.form()
    given = form.get("csrf_token")
    cookie = shop.request.cookies.get(CSRF_COOKIE, "")
    if not isinstance(given, str) or not cookie or not hmac.compare_digest(given, cookie):
        raise CsrfRejected("the form expired or did not come from this shop; try again")
    return form


def field_of(form: FormData, name: str, limit: int = 320) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


PageHandler = Callable[[Shop], Awaitable[Response]]


async def run_page(request: Request, pos_code: str, handler: PageHandler) -> Response:
    shop = await load_shop(request, pos_code)
    if shop is None:
        return _not_found(request, f"no shop {pos_code}")
    try:
        return await handler(shop)
    except DomainError as error:
        return shop.refuse(error)


# --- who is signed in ------------------------------------------------------------------------


async def signed_in_contact(shop: Shop) -> int | None:
    """The contact of the session cookie, or of a remember-me cookie (rotated on the way);
    ``None`` also when the contact has since been erased or lost its login."""
    contact = await current_contact(shop)
    return None if contact is None else contact.number


async def _session_number(shop: Shop) -> int | None:
    async with read(shop.engine) as conn:
        number = await accounts.session_contact(
            conn, shop.point, shop.request.cookies.get(SESSION_COOKIE), shop.now
        )
    if number is not None:
        return number
    remember = shop.request.cookies.get(REMEMBER_COOKIE)
    if not remember:
        return None
    try:
        resumed = await accounts.resume(shop.engine, shop.point, remember, now=shop.now)
    except DomainError:
        shop.clear_cookie(REMEMBER_COOKIE, path=shop.base)
        return None
    if resumed is None:
        shop.clear_cookie(REMEMBER_COOKIE, path=shop.base)
        return None
    await start_session(shop, resumed)
    return resumed.contact_number


async def start_session(shop: Shop, signed: accounts.SignedIn) -> None:
    """Session cookie, remember-me cookie and the website cookie of a new sign-in."""
    shop.local_cookie(SESSION_COOKIE, signed.session_token)
    if signed.remember:
        shop.local_cookie(
            REMEMBER_COOKIE,
            signed.remember,
            max_age=int(accounts.REMEMBER_LIFETIME.total_seconds()),
        )
    await write_website_cookie(shop, signed.contact_number)


async def write_website_cookie(shop: Shop, number: int) -> None:
    domain = shop.point.cookie_domain
    async with read(shop.engine) as conn:
        contact = await contacts.get_contact(
            conn, contacts.ContactScope(shop.point.institution_id), number
        )
    name = cookies.cookie_name(shop.point.organization_code, shop.point.sales_channel_code)
    additional = None
    if shop.setup.website_public_key:
        key = await point_of_sale_key(
            shop.engine,
            institution_id=shop.point.institution_id,
            point_of_sale_id=shop.point.point_of_sale_id,
            purpose="cookie",
            subject=shop.point.code,
            now=shop.now,
        )
        signing = key.private_key()
        assert isinstance(signing, ed25519.Ed25519PrivateKey)
        additional = cookies.seal(
            contact_number=number,
            email=contact.email,
            issued_at=shop.now,
            name=name,
            website_public_key_pem=shop.setup.website_public_key,
            signing_key=signing,
        )
    value = cookies.cookie_value(
        title=contact.title,
        first_name=contact.first_name,
        last_name=contact.last_name,
        nickname=contact.nickname,
        language=contact.language or shop.language,
        logged_in_at=shop.now,
        additional_data=additional,
    )
    # Readable by the institution's website (same parent domain): not HttpOnly, by design.
    shop.set_cookie(
        name, value, domain=domain, path="/", samesite="lax", secure=shop.secure(), httponly=False
    )


def clear_website_cookie(shop: Shop) -> None:
    name = cookies.cookie_name(shop.point.organization_code, shop.point.sales_channel_code)
    shop.clear_cookie(name, domain=shop.point.cookie_domain, path="/")


async def deliver_mail(shop: Shop) -> None:
    """Send what the use case just queued (best effort; the worker retries the rest)."""
    mailer: Mailer | None = getattr(shop.request.app.state, "mailer", None)
    if mailer is not None:
        await deliver_pending(shop.engine, mailer, now=shop.now)


async def current_contact(shop: Shop) -> Contact | None:
    number = await _session_number(shop)
    if number is None:
        return None
    async with read(shop.engine) as conn:
        contact = await contacts.get_contact(
            conn, contacts.ContactScope(shop.point.institution_id), number, [Detail.GENERAL]
        )
    return None if contact.login is None else contact


# --- pages -----------------------------------------------------------------------------------


def login_page(shop: Shop, *, next_url: str, status: int = 200, **values: Any) -> Response:
    provider = shop.setup.identity_provider
    return shop.page(
        "login.html",
        status=status,
        title="Sign in",
        next=next_url,
        password_login=shop.password_login,
        registration=shop.point.registration_allowed and shop.password_login,
        provider_name=provider.name if provider else None,
        **values,
    )


@router.get("/shop/{pos_code}/account/login")
async def login_form(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        next_url = shop.safe_return(request.query_params.get("next"))
        return login_page(shop, next_url=next_url, email="")

    return await run_page(request, pos_code, handle)


@router.post("/shop/{pos_code}/account/login")
async def login_submit(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        form = await form_of(shop)
        next_url = shop.safe_return(field_of(form, "next", MAX_FIELD))
        email = field_of(form, "email")
        if not shop.password_login:
            raise PasswordLoginDisabled("this shop signs you in with its identity provider")
        try:
            signed = await accounts.login(
                shop.engine,
                shop.point,
                email=email,
                password=field_of(form, "password", 256),
                address=shop.address,
                remember=field_of(form, "remember") == "1",
                now=shop.now,
            )
        except DomainError as error:
            return login_page(
                shop, next_url=next_url, email=email, error=error, status=error.http_status
            )
        await start_session(shop, signed)
        return shop.redirect(next_url)

    return await run_page(request, pos_code, handle)


def _flag(value: str | None) -> bool:
    return value not in {"false", "0"}


@router.get("/shop/{pos_code}/account/register")
async def register_form(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        q = request.query_params
        if not shop.password_login:
            raise PasswordLoginDisabled("this shop creates accounts with its identity provider")
        return await register_page(
            shop,
            next_url=shop.safe_return(q.get("callbackUrl")),
            show=(
                _flag(q.get("showAddress")),
                _flag(q.get("showCriteria")),
                _flag(q.get("showAuthorization")),
            ),
            form={},
        )

    return await run_page(request, pos_code, handle)


async def register_page(
    shop: Shop,
    *,
    next_url: str,
    show: tuple[bool, bool, bool],
    form: dict[str, str],
    error: DomainError | None = None,
) -> Response:
    async with read(shop.engine) as conn:
        definitions = await contacts.list_definitions(conn, shop.point.institution_id)

    def labelled(items: list[Any]) -> list[dict[str, str]]:
        return [{"code": c.code, "label": c.name.get(shop.language, c.code)} for c in items]

    return shop.page(
        "register.html",
        status=error.http_status if error else 200,
        title="Create an account",
        next=next_url,
        show_address=show[0],
        show_criteria=show[1],
        show_authorization=show[2],
        criteria=labelled(definitions.criteria),
        authorizations=labelled(definitions.authorizations),
        form=form,
        error=error,
    )


@router.post("/shop/{pos_code}/account/register")
async def register_submit(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        form = await form_of(shop)
        next_url = shop.safe_return(field_of(form, "callbackUrl", MAX_FIELD))
        show = (
            _flag(field_of(form, "showAddress")),
            _flag(field_of(form, "showCriteria")),
            _flag(field_of(form, "showAuthorization")),
        )
        values = {
            name: field_of(form, name, 255)
            for name in ("email", "title", "firstName", "lastName", "street", "zip", "city")
        }
        values["country"] = field_of(form, "country", 2).upper()
        if not shop.password_login:
            raise PasswordLoginDisabled("this shop creates accounts with its identity provider")
        async with read(shop.engine) as conn:
            definitions = await contacts.list_definitions(conn, shop.point.institution_id)
        chosen = set(form.getlist("authorizations"))
        try:
            signed = await accounts.register(
                shop.engine,
                shop.point,
                ContactInput(
                    title=values["title"] or None,
                    first_name=values["firstName"] or None,
                    last_name=values["lastName"] or None,
                    email=values["email"],
                    language=shop.language,
                ),
                password=field_of(form, "password", 256),
                criteria=[c for c in form.getlist("criteria") if isinstance(c, str)][:200],
                authorizations=[
                    Authorization(a.code, a.code in chosen) for a in definitions.authorizations
                ]
                if show[2]
                else [],
                now=shop.now,
            )
        except DomainError as error:
            values.pop("password", None)
            return await register_page(shop, next_url=next_url, show=show, form=values, error=error)
        if show[0] and (values["city"] or values["street"]):
            await contacts.update_contact(
                shop.engine,
                contacts.ContactScope(shop.point.institution_id),
                signed.contact_number,
                contacts.ContactChanges(
                    addresses=[
                        Address(
                            AddressKind.MAIN,
                            values["street"] or None,
                            None,
                            values["zip"] or None,
                            values["city"] or None,
                            values["country"] or None,
                        )
                    ]
                ),
                point_of_sale_id=shop.point.point_of_sale_id,
                actor=f"contact:{signed.contact_number}",
                now=shop.now,
            )
        await deliver_mail(shop)
        await start_session(shop, signed)
        return shop.redirect(next_url)

    return await run_page(request, pos_code, handle)


@router.get("/shop/{pos_code}/account/verify")
async def verify(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        token = request.query_params.get("token", "")
        await accounts.verify_email(shop.engine, shop.point, token, now=shop.now)
        return shop.page(
            "message.html",
            title="Email confirmed",
            notice="Thank you: your email address is confirmed.",
            link=f"{shop.base}/account",
            link_text="My account",
        )

    return await run_page(request, pos_code, handle)


@router.get("/shop/{pos_code}/account/forgot")
async def forgot_form(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        return shop.page("forgot.html", title="Forgot your password?")

    return await run_page(request, pos_code, handle)


@router.post("/shop/{pos_code}/account/forgot")
async def forgot_submit(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        form = await form_of(shop)
        try:
            await accounts.request_reset(
                shop.engine,
                shop.point,
                email=field_of(form, "email"),
                address=shop.address,
                now=shop.now,
            )
        except DomainError as error:
            return shop.refuse(error, "forgot.html", title="Forgot your password?")
        await deliver_mail(shop)
        return shop.page(
            "message.html",
            title="Check your mail",
            notice="If this address has an account, a link to choose a new password is on its way.",
        )

    return await run_page(request, pos_code, handle)


@router.get("/shop/{pos_code}/account/reset")
async def reset_form(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        token = request.query_params.get("token", "")[:200]
        return shop.page("reset.html", title="Choose a new password", token=token)

    return await run_page(request, pos_code, handle)


@router.post("/shop/{pos_code}/account/reset")
async def reset_submit(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        form = await form_of(shop)
        token = field_of(form, "token", 200)
        try:
            await accounts.reset_password(
                shop.engine, shop.point, token, field_of(form, "password", 256), now=shop.now
            )
        except DomainError as error:
            return shop.refuse(error, "reset.html", title="Choose a new password", token=token)
        shop.clear_cookie(SESSION_COOKIE, path=shop.base)
        shop.clear_cookie(REMEMBER_COOKIE, path=shop.base)
        return shop.page(
            "message.html",
            title="Password changed",
            notice="Your new password is set; sign in with it.",
            link=f"{shop.base}/account/login",
            link_text="Sign in",
        )

    return await run_page(request, pos_code, handle)


@router.post("/shop/{pos_code}/account/logout")
async def logout(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        form = await form_of(shop)
        await accounts.logout(
            shop.engine,
            shop.point,
            session_token=request.cookies.get(SESSION_COOKIE),
            remember=request.cookies.get(REMEMBER_COOKIE),
            now=shop.now,
        )
        shop.clear_cookie(SESSION_COOKIE, path=shop.base)
        shop.clear_cookie(REMEMBER_COOKIE, path=shop.base)
        clear_website_cookie(shop)
        next_url = shop.safe_return(field_of(form, "next", MAX_FIELD) or None)
        if next_url == f"{shop.base}/account":
            next_url = f"{shop.base}/account/login"
        return shop.redirect(next_url)

    return await run_page(request, pos_code, handle)


@router.get("/shop/{pos_code}/account")
async def account(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        contact = await current_contact(shop)
        if contact is None:
            return shop.redirect(f"{shop.base}/account/login")
        return shop.page("account.html", title="My account", contact=contact)

    return await run_page(request, pos_code, handle)


@router.get("/shop/{pos_code}/.well-known/contact-cookie-key.pem")
async def cookie_key(request: Request, pos_code: str) -> Response:
    """The Ed25519 public key that signs the contact cookie's additionalData."""

    async def handle(shop: Shop) -> Response:
        key = await point_of_sale_key(
            shop.engine,
            institution_id=shop.point.institution_id,
            point_of_sale_id=shop.point.point_of_sale_id,
            purpose="cookie",
            subject=shop.point.code,
            now=shop.now,
        )
        return Response(key.public_pem(), media_type="application/x-pem-file")

    return await run_page(request, pos_code, handle)


dev_router = APIRouter(include_in_schema=False)


@dev_router.get("/dev/mail")
async def dev_mail(request: Request) -> Response:
    """What the development mail sink received (newest first); only with ``dev_mail`` on."""
    mailer = getattr(request.app.state, "mailer", None)
    messages = list(mailer.messages) if isinstance(mailer, MailSink) else []
    html = templates.get_template("mail.html").render(title="Development mail", messages=messages)
    return HTMLResponse(html)
