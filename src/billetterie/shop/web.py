"""What every shop page shares: the point of sale (through the account pages' ``Shop``), the
language, the institution's branding, the catalog and board of this process, the cart cookie
and the website's cart-summary cookie.

- Language: ``?lang=`` (one of the point of sale's languages) is kept in ``bt_lang``; otherwise
  the previous choice, else the point of sale's first language.
- Branding: the point of sale's ``parameters`` in the setup file: ``shopLogoUrl`` and
  ``shopColor`` (``#rrggbb``); none: billetterie's defaults.
- Cart: ``bt_cart`` (HttpOnly, path ``/shop/<code>``) holds the running order's public secret;
  the order must be of this point of sale's sales channel.
- Cart summary: ``stx_cartSummary_<organization>_<channel>`` = ``qty|amount|currency|expiration|
  orderId`` on the point of sale's ``cookieDomain`` (path ``/``, not HttpOnly: the website reads
  it), written after every cart change and removed when the cart is paid or gone.
- Forms: CSRF as the account pages (``identity.web.form_of``); each client address may post
  ``FORM_POSTS_PER_MINUTE`` forms a minute per point of sale when rate limits are on.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from billetterie.catalog.models import CatalogScope
from billetterie.catalog.services import channel_state
from billetterie.compat.catalog_cache import CachedCatalog, CatalogCache
from billetterie.compat.sales_api import seller_from_context
from billetterie.contacts.models import Contact
from billetterie.identity import web as accounts_web
from billetterie.identity.web import Shop
from billetterie.inventory.board import Board
from billetterie.sales import queries
from billetterie.sales.barcode_keys import KeyVault
from billetterie.sales.models import Seller
from billetterie.sales.pdf import format_date, format_price
from billetterie.shared.db import read
from billetterie.shared.errors import DomainError
from billetterie.shared.i18n import explained
from billetterie.shared.ratelimit import RateLimiter
from billetterie.shop.errors import TooManyRequests
from billetterie.shop.i18n import localized, word

templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)
CART_COOKIE = "bt_cart"
FORM_POSTS_PER_MINUTE = 60
COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
SECRET = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
POS_CODE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
SHOP_OPERATOR = "shop"


@dataclass
class Page:
    """One request on one point of sale's shop pages."""

    shop: Shop
    language: str

    @property
    def base(self) -> str:
        return self.shop.base

    @property
    def now(self) -> datetime:
        now: datetime = self.shop.now
        return now

    @property
    def request(self) -> Request:
        return self.shop.request

    @property
    def engine(self) -> Any:
        return self.shop.engine

    @property
    def context(self) -> Any:
        return self.shop.context

    @property
    def seller(self) -> Seller:
        return seller_from_context(self.context, SHOP_OPERATOR)

    @property
    def time_zone(self) -> str:
        return str(self.context.organization.time_zone)

    @property
    def currency(self) -> str:
        return str(self.context.currency)

    @property
    def vault(self) -> KeyVault:
        vault: KeyVault = self.shop.runtime.caches["barcode_vault"]
        return vault

    def t(self, key: str) -> str:
        return word(key, self.language)

    def explain(self, error: Any) -> str:
        """A refusal as this page's language says it."""
        return explained(str(error.code), str(error.detail), self.language)

    def text(self, value: Any) -> str:
        return localized(value, self.language)

    def price(self, amount: int) -> str:
        return format_price(amount, self.currency, self.language)

    def date(self, value: str | datetime | None) -> str:
        if value is None:
            return ""
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return format_date(moment, self.time_zone, self.language)

    def external(self, name: str) -> str | None:
        """A configured external URL with ``{LANGUAGE}`` replaced."""
        url = (self.context.point_of_sale.external_urls or {}).get(name)
        return with_language(url, self.language)

    def branding(self) -> dict[str, str | None]:
        parameters = self.context.point_of_sale.parameters or {}
        color = parameters.get("shopColor", "")
        logo = parameters.get("shopLogoUrl", "")
        return {
            "color": color if COLOR.match(color) else "#3a2ee6",
            "logo": logo if logo.startswith(("https://", "http://", "/")) else None,
        }

    def render(self, template: str, *, status: int = 200, **values: Any) -> Response:
        pos = self.context.point_of_sale
        html = templates.get_template(template).render(
            page=self,
            base=self.base,
            csrf=self.shop.csrf,
            lang=self.language,
            languages=pos.languages or self.context.organization.languages,
            shop_name=localized(pos.name, self.language) or pos.code,
            organization_name=localized(self.context.organization.name, self.language),
            brand=self.branding(),
            links=[
                (key, self.external(key))
                for key in ("termsOfSale", "privacy", "help", "contact", "home")
                if self.external(key)
            ],
            t=self.t,
            explain=self.explain,
            text=self.text,
            price=self.price,
            date=self.date,
            path=self.request.url.path,
            now_iso=self.now.isoformat(),
            **values,
        )
        return self.shop.finish(HTMLResponse(html, status_code=status))

    def refuse(self, error: DomainError, **values: Any) -> Response:
        return self.render(
            "message.html", status=error.http_status, title=self.t("problem"), error=error, **values
        )

    def redirect(self, url: str) -> Response:
        return self.shop.finish(RedirectResponse(url, status_code=303))

    # --- catalog and availability ----------------------------------------------------------

    async def catalog(self, scope: CatalogScope = CatalogScope.STANDARD) -> CachedCatalog:
        runtime = self.shop.runtime
        cache = runtime.caches.get("catalog")
        if cache is None:
            cache = runtime.caches["catalog"] = CatalogCache(runtime.engine)
        assert isinstance(cache, CatalogCache)
        async with read(self.engine) as conn:
            state = await channel_state(
                conn, self.context.institution_id, self.context.sales_channel.id, scope
            )
        return await cache.get(self.context.sales_channel.id, scope, state.catalog.version)

    async def board(self) -> Board:
        runtime = self.shop.runtime
        board = runtime.caches.get("board")
        if board is None:
            board = runtime.caches["board"] = Board(runtime.engine, clock=runtime.clock)
        assert isinstance(board, Board)
        return await board.fresh()

    # --- the buyer -------------------------------------------------------------------------

    async def contact(self) -> Contact | None:
        return await accounts_web.current_contact(self.shop)

    async def form(self) -> FormData:
        """The posted form: CSRF-checked, and counted against the client's allowance."""
        limiter: RateLimiter | None = getattr(self.request.app.state, "rate_limiter", None)
        if limiter is not None:
            allowance = await limiter.hit(
                FORM_POSTS_PER_MINUTE, "shop-form", self.shop.point.code, self.shop.address
            )
            if allowance is not None and not allowance.allowed:
                raise TooManyRequests(
                    f"too many forms sent; retry in {allowance.retry_after} s",
                    retry_after=allowance.retry_after,
                )
        return await accounts_web.form_of(self.shop)

    # --- the cart --------------------------------------------------------------------------

    def cart_secret(self) -> str | None:
        secret = self.request.cookies.get(CART_COOKIE)
        return secret if secret and SECRET.match(secret) else None

    async def cart(self) -> Any | None:
        """The running order of the cart cookie, or None (an order of another channel, closed
        or gone counts as no cart)."""
        secret = self.cart_secret()
        if secret is None:
            return None
        return await self.order_of_secret(secret)

    async def order_of_secret(self, secret: str) -> Any | None:
        if not SECRET.match(secret):
            return None
        async with read(self.engine) as conn:
            try:
                order = await queries.order_by_secret(conn, self.context.institution_id, secret)
            except DomainError:
                return None
        if order.sales_channel_id != self.context.sales_channel.id:
            return None
        return order

    async def order_of_id(self, order_id: int) -> Any:
        async with read(self.engine) as conn:
            return await queries.order_row(conn, self.seller, order_id)

    async def order_document(self, order: Any) -> dict[str, Any]:
        async with read(self.engine) as conn:
            row = await queries.order_row(conn, self.seller, order.id)
            return await queries.order_document(conn, row)

    def keep_cart(self, secret: str) -> None:
        self.shop.local_cookie(CART_COOKIE, secret)

    def forget_cart(self) -> None:
        self.shop.clear_cookie(CART_COOKIE, path=self.base)

    def summary_cookie_name(self) -> str:
        point = self.shop.point
        return f"stx_cartSummary_{point.organization_code}_{point.sales_channel_code}"

    def write_summary(self, document: dict[str, Any] | None) -> None:
        """The website's cart-summary cookie for this cart (removed when there is none)."""
        domain = self.shop.point.cookie_domain
        name = self.summary_cookie_name()
        if document is None or document["orderState"] != "RUNNING":
            self.shop.clear_cookie(name, domain=domain, path="/")
            return
        self.shop.set_cookie(
            name,
            cart_summary(document),
            domain=domain,
            path="/",
            samesite="lax",
            secure=self.shop.secure(),
            httponly=False,
        )


def cart_summary(document: dict[str, Any]) -> str:
    """``qty|amount|currency|expiration|orderId``: places in the cart, the total with a point
    and two decimals (three when needed), ISO-4217, the expiry in ISO-8601 UTC."""
    quantity = sum(
        1 for op in document["operations"] for mv in op["movements"] if mv["state"] == "RESERVED"
    )
    amount = int(document["totalAmount"])
    text = f"{amount // 1000}.{amount % 1000:03d}"
    if text.endswith("0"):
        text = text[:-1]
    expiration = datetime.fromisoformat(document["expirationDate"]).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{quantity}|{text}|{document['currencyCode']}|{expiration}|{document['orderId']}"


def with_language(url: str | None, language: str) -> str | None:
    if not url:
        return None
    return url.replace("{LANGUAGE}", quote(language))


PageHandler = Callable[[Page], Awaitable[Response]]


async def run(request: Request, pos_code: str, handler: PageHandler) -> Response:
    """Load the point of sale, run the handler; a refusal renders as a page (no 500)."""

    async def handle(shop: Shop) -> Response:
        page = Page(shop, shop.language)
        try:
            return await handler(page)
        except DomainError as error:
            return page.refuse(error)

    if not POS_CODE.match(pos_code):  # before any query: a NUL byte fails on PostgreSQL
        return unknown_shop()
    return await accounts_web.run_page(request, pos_code, handle)


def unknown_shop() -> Response:
    html = templates.get_template("bare.html").render(
        title="Not found",
        code="error.shop.unknown_point_of_sale",
        detail="no such shop; name it with pos=<point of sale code>",
    )
    return HTMLResponse(html, status_code=404)
