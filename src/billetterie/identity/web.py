"""What every shop page shares (``/shop/<point of sale code>/...``, server-rendered, Jinja2).

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
from fastapi import Request
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
    Contact,
    Detail,
)
from billetterie.identity import accounts, cookies
from billetterie.identity.errors import BadReturnUrl, CsrfRejected
from billetterie.identity.i18n import WORDS
from billetterie.identity.keys import point_of_sale_key
from billetterie.identity.mail import Mailer, deliver_pending
from billetterie.identity.models import SignInSetup, host_allowed
from billetterie.identity.signin import sign_in_setup
from billetterie.shared.clock import Clock
from billetterie.shared.db import read
from billetterie.shared.errors import DomainError
from billetterie.shared.i18n import LANG_COOKIE, explained, localized, lookup
from billetterie.shared.i18n import choose_language as pick_language

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
    language: str = "en"  # see ``choose_language``
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

    def t(self, key: str) -> str:
        return lookup(WORDS, key, self.language)

    def explain(self, error: Any) -> str:
        """A refusal as this page's language says it."""
        return explained(str(error.code), str(error.detail), self.language)

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
            language_links=self.language_links(),
            shop_name=localized(self.context.point_of_sale.name, self.language) or self.point.code,
            t=self.t,
            explain=self.explain,
            **values,
        )
        return self.finish(HTMLResponse(html, status_code=status))

    def redirect(self, url: str) -> Response:
        return self.finish(RedirectResponse(url, status_code=303))

    def languages(self) -> list[str]:
        pos, organization = self.context.point_of_sale, self.context.organization
        return [str(code) for code in (pos.languages or organization.languages or ["en"])]

    def language_links(self) -> list[tuple[str, str]]:
        """This page in each other language, its other query parameters kept."""
        url = self.request.url
        return [
            (code, f"{url.path}?{url.include_query_params(lang=code).query}")
            for code in self.languages()
            if code != self.language
        ]

    def refuse(self, error: DomainError, template: str = "message.html", **values: Any) -> Response:
        values.setdefault("title", self.t("problem"))
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
    shop = Shop(request, runtime, point, context, setup, csrf)
    choose_language(shop)
    return shop


def choose_language(shop: Shop) -> str:
    """The page's language: ``?lang=`` when the point of sale offers it (kept in the
    ``bt_lang`` cookie for the next pages), else the cookie's, else the first offered."""
    asked = shop.request.query_params.get("lang")
    kept = shop.request.cookies.get(LANG_COOKIE)
    shop.language = pick_language(shop.languages(), asked, kept)
    if asked is not None and asked == shop.language and kept != asked:
        shop.local_cookie(LANG_COOKIE, asked)
    return shop.language


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
