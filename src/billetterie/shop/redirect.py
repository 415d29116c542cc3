"""The redirect API the institution's website links into (S-360's ``/api/1/redirect/...``).

Which shop: ``pos=<point of sale code>`` when given, else the ``shop_point_of_sale`` setting;
a cart link with ``orderSecretId`` lands on the shop of that order's point of sale. ``lang``
(ISO 639-1) is kept as the shop's language when the point of sale offers it.

- ``product?id=|code=``: the product page while the product is on sale here and available;
  otherwise a page saying why (``error.shop.unknown_product``, ``error.shop.not_on_sale``,
  ``error.shop.sold_out``).
- ``product/performance?id=``: the performance's seat choice, under the same conditions.
- ``cart[?orderSecretId=[&orderId=]]``: the session's cart, or the partner's order (seed 000):
  the secret makes it the buyer's cart, then checkout (sign in, register or guest) and payment.
- ``account``, ``account/edit``: the account and profile pages (sign-in first if needed).
- ``account/register?callbackUrl=&showAddress=&showCriteria=&showAuthorization=``: the
  registration page; the flags are ``true``/``false`` or ``1``/``0`` (default true), anything
  else is ``error.shop.bad_flag``; ``callbackUrl`` must be a path of this site or on a host the
  point of sale registers (``error.account.bad_return_url``).
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from billetterie.catalog.services import point_of_sale_context
from billetterie.identity.web import safe_return
from billetterie.inventory.models import Level
from billetterie.sales import queries
from billetterie.shared.db import read
from billetterie.shared.errors import DomainError
from billetterie.shop import offers, queue
from billetterie.shop.errors import (
    BadFlag,
    NoCart,
    NotOnSale,
    SoldOut,
    UnknownShopPerformance,
    UnknownShopProduct,
)
from billetterie.shop.web import SECRET, Page, PageHandler, run

router = APIRouter(include_in_schema=False)
FLAGS = {"true": "true", "false": "false", "1": "true", "0": "false"}


def _pos_code(request: Request) -> str:
    asked = request.query_params.get("pos")
    if asked:
        return asked[:16]
    return str(request.app.state.runtime.settings.shop_point_of_sale)


async def _in_shop(request: Request, handler: PageHandler, pos_code: str | None = None) -> Response:
    return await run(request, pos_code or _pos_code(request), handler)


def _id(value: str | None, error: DomainError) -> int:
    if not value or not value.isdigit() or len(value) > 15:
        raise error
    return int(value)


def _lang(page: Page) -> str:
    return f"lang={page.language}"


@router.get("/api/1/redirect/product")
async def product(request: Request) -> Response:
    async def handle(page: Page) -> Response:
        q = request.query_params
        document = await (await page.catalog()).document()
        unknown = UnknownShopProduct("this product is not sold in this shop")
        if q.get("id"):
            found = offers.find_product(document, _id(q.get("id"), unknown))
        elif q.get("code"):
            found = offers.find_product_code(document, q["code"][:32])
        else:
            raise unknown
        if found is None:
            raise unknown
        _, item = found
        if queue.room_open(page, item):  # a hot on-sale: the waiting room, opened or not yet
            return page.redirect(f"{page.base}/queue/{item['id']}?{_lang(page)}")
        if not offers.in_sales_period(item, page.context.sales_channel.id, page.now):
            raise NotOnSale("this product is not on sale at the moment")
        board = await page.board()
        if offers.product_level(board, item["id"], set(page.context.contingent_ids)) is Level.NONE:
            raise SoldOut("this product is sold out")
        return page.redirect(f"{page.base}/products/{item['id']}?{_lang(page)}")

    return await _in_shop(request, handle)


@router.get("/api/1/redirect/product/performance")
async def performance(request: Request) -> Response:
    async def handle(page: Page) -> Response:
        unknown = UnknownShopPerformance("this performance is not sold in this shop")
        document = await (await page.catalog()).document()
        found = offers.find_performance(document, _id(request.query_params.get("id"), unknown))
        if found is None:
            raise unknown
        _, item, perf = found
        if not offers.in_sales_period(
            item, page.context.sales_channel.id, page.now
        ) or not offers.performance_open(perf, page.now):
            raise NotOnSale("this performance is not on sale at the moment")
        board = await page.board()
        contingents = set(page.context.contingent_ids)
        if offers.performance_level(board, item["id"], perf["id"], contingents) is Level.NONE:
            raise SoldOut("this performance is sold out")
        return page.redirect(f"{page.base}/performances/{perf['id']}?{_lang(page)}")

    return await _in_shop(request, handle)


@router.get("/api/1/redirect/cart")
async def cart(request: Request) -> Response:
    q = request.query_params
    secret = q.get("orderSecretId")
    if not secret:

        async def session_cart(page: Page) -> Response:
            return page.redirect(f"{page.base}/cart?{_lang(page)}")

        return await _in_shop(request, session_cart)
    pos_code = None
    order = None
    if SECRET.match(secret):
        runtime = request.app.state.runtime
        async with read(runtime.engine) as conn:
            try:
                order = await queries.order_by_public_secret(conn, secret)
                pos_code = (
                    await point_of_sale_context(conn, order.point_of_sale_id)
                ).point_of_sale.code
            except DomainError:
                order = None

    async def partner_cart(page: Page) -> Response:
        if order is None or (q.get("orderId") and q.get("orderId") != str(order.id)):
            raise NoCart("no order matches this link")
        if order.state != "RUNNING" or (order.expires_at and order.expires_at <= page.now):
            if order.state == "CLOSED":
                return page.redirect(f"{page.base}/orders/{order.secret_id}?{_lang(page)}")
            raise NoCart("this order can no longer be paid: it expired or was cancelled")
        page.keep_cart(order.secret_id)
        page.write_summary(await page.order_document(order))
        return page.redirect(f"{page.base}/checkout?{_lang(page)}")

    return await _in_shop(request, partner_cart, pos_code)


@router.get("/api/1/redirect/account")
async def account(request: Request) -> Response:
    async def handle(page: Page) -> Response:
        return page.redirect(f"{page.base}/account?{_lang(page)}")

    return await _in_shop(request, handle)


@router.get("/api/1/redirect/account/edit")
async def account_edit(request: Request) -> Response:
    async def handle(page: Page) -> Response:
        return page.redirect(f"{page.base}/account/profile?{_lang(page)}")

    return await _in_shop(request, handle)


@router.get("/api/1/redirect/account/register")
async def account_register(request: Request) -> Response:
    async def handle(page: Page) -> Response:
        q = request.query_params
        flags = {}
        for name in ("showAddress", "showCriteria", "showAuthorization"):
            value = q.get(name)
            if value is None:
                flags[name] = "true"
            elif value.lower() in FLAGS:
                flags[name] = FLAGS[value.lower()]
            else:
                raise BadFlag(f"{name} is true, false, 1 or 0")
        callback = safe_return(
            q.get("callbackUrl"), page.shop.setup, default=f"{page.base}/account"
        )
        query = urlencode({"callbackUrl": callback, **flags, "lang": page.language})
        return page.redirect(f"{page.base}/account/register?{query}")

    return await _in_shop(request, handle)
