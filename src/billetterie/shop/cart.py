"""The cart and the sale: add places (chosen seats, best available, passes and timeslots,
season tickets), remove them, check out (signed-in contact or guest), pay (test card page,
gift voucher, credit balance, nothing for a free order), confirmation with the PDF link.

Gift vouchers and the credit balance (a signed-in contact's) are *applied* one after the other
while together they cover less than the total (in a shop that takes cards, which pay the rest;
elsewhere a voucher short of the total is refused): the payment page shows each applied part
(voucher code or balance, what it pays, a button to remove it) and what is left, and offers the
card for the rest beside another voucher and the balance not yet applied. Each part pays what
its account has, at most what is left; when the parts cover the total, the last one applied
pays only what was left and the order closes without a card. Otherwise the buyer pays the rest
on the card page (the card's mixed payment, :func:`billetterie.sales.card.start_card_payment`,
holds every part while the card is paid). Applying or removing a part changes nothing: the
applied parts travel in the page's forms (``part_method``, ``part_amount``, ``part_voucher``
repeated in order, with the ``total`` shown) and are checked again against what each account
can spend at every step; a changed total, a part the account no longer covers, parts adding up
to the total or more, a method other than voucher and balance, the balance without signing in
or one account applied twice are refused on the payment page, with nothing taken. Only what a
buyer can pay with online is offered and taken (``ONLINE``): cash and a reseller's pending
account, if configured on the shop's point of sale, are refused like an unknown method.

Every change goes through the sales services (``sales.carts``, ``sales.closing``,
``sales.card``), which re-check availability in the database; each one rewrites the website's
cart-summary cookie. The cart cookie holds the order's public secret only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from billetterie.identity.web import field_of
from billetterie.inventory.queries import seat_categories
from billetterie.sales import card, carts, closing
from billetterie.sales.accounts import find_account, spendable
from billetterie.sales.errors import InsufficientFunds, WrongTotal
from billetterie.sales.models import (
    ACCOUNT_OF_PAYMENT,
    AccountKind,
    Attribution,
    CartRequest,
    ComposedLine,
    PaymentMethod,
    PaymentRequest,
    SimpleProductLine,
    SingleEntryLine,
)
from billetterie.shared.db import read
from billetterie.shared.errors import DomainError
from billetterie.shop import offers, queue
from billetterie.shop.errors import (
    AppliedTwice,
    BadChoice,
    NoCart,
    SignInRequired,
    UnknownShopProduct,
)
from billetterie.shop.web import Page, run

router = APIRouter(include_in_schema=False)
MAX_QUANTITY = 50


def _int(value: str, *, what: str, upper: int = 2**53 - 1) -> int:
    if not value.isdigit() or len(value) > 16 or int(value) > upper:
        raise BadChoice(f"{what} must be a whole number")
    return int(value)


def _quantities(form: FormData, prefix: str) -> dict[tuple[int, ...], int]:
    """``q_<a>_<b>=n`` fields (n > 0) keyed by their numbers."""
    chosen: dict[tuple[int, ...], int] = {}
    for name, value in form.multi_items():
        if not name.startswith(prefix) or not isinstance(value, str) or not value.strip():
            continue
        parts = name[len(prefix) :].split("_")
        key = tuple(_int(p, what="a choice") for p in parts)
        quantity = _int(value.strip(), what="a quantity", upper=MAX_QUANTITY)
        if quantity:
            chosen[key] = chosen.get(key, 0) + quantity
    return chosen


async def _lines(page: Page, form: FormData) -> tuple[Any, ...]:
    """The cart lines a product or performance form asks for (nothing is held yet)."""
    kind = field_of(form, "kind", 16)
    document = await (await page.catalog()).document()
    if kind in {"seats", "best"}:
        performance_id = _int(field_of(form, "performance", 20), what="the performance")
        found = offers.find_performance(document, performance_id)
        if found is None:
            raise UnknownShopProduct("this performance is not sold in this shop")
        queue.require_admission(page, found[1])
        if kind == "seats":
            return (await _chosen_seats(page, form, performance_id),)
        attributions = tuple(
            Attribution(performance_id, cat, tariff, quantity)
            for (cat, tariff), quantity in _pairs(_quantities(form, "q_")).items()
        )
        if not attributions:
            raise BadChoice("choose at least one place")
        return (SingleEntryLine(attributions),)
    product_id = _int(field_of(form, "product", 20), what="the product")
    chosen_product = offers.find_product(document, product_id)
    if chosen_product is None:
        raise UnknownShopProduct("this product is not sold in this shop")
    queue.require_admission(page, chosen_product[1])
    if kind == "items":
        item_id = _int(field_of(form, "item", 20), what="the item")
        slot = field_of(form, "timeslot", 20)
        timeslot = _int(slot, what="the time slot") if slot else None
        chosen = _quantities(form, "q_")
        if any(len(key) != 1 for key in chosen):
            raise BadChoice("a quantity names a tariff")
        lines: tuple[Any, ...] = tuple(
            SimpleProductLine(item_id, key[0], quantity, timeslot)
            for key, quantity in chosen.items()
        )
    elif kind == "composed":
        lines = tuple(
            ComposedLine(product_id, cat, tariff, quantity)
            for (cat, tariff), quantity in _pairs(_quantities(form, "q_")).items()
        )
    else:
        raise BadChoice("this form asks for nothing the shop sells")
    if not lines:
        raise BadChoice("choose at least one place")
    return lines


def _pairs(chosen: dict[tuple[int, ...], int]) -> dict[tuple[int, int], int]:
    if any(len(key) != 2 for key in chosen):
        raise BadChoice("a quantity names a seat category and a tariff")
    return {(key[0], key[1]): quantity for key, quantity in chosen.items()}


async def _chosen_seats(page: Page, form: FormData, performance_id: int) -> SingleEntryLine:
    seat_ids = [_int(v, what="a seat") for v in form.getlist("seat") if isinstance(v, str) and v][
        :MAX_QUANTITY
    ]
    if not seat_ids or len(set(seat_ids)) != len(seat_ids):
        raise BadChoice("choose at least one seat on the map")
    tariff = _int(field_of(form, "tariff", 20), what="the tariff")
    async with read(page.engine) as conn:
        category_of = await seat_categories(
            conn,
            institution_id=page.context.institution_id,
            performance_id=performance_id,
            seat_ids=seat_ids,
        )
    by_category: dict[int, list[int]] = {}
    for seat in seat_ids:
        category = category_of.get(seat)
        if category is None:
            raise BadChoice("this seat is not on this performance's map")
        by_category.setdefault(category, []).append(seat)
    return SingleEntryLine(
        tuple(
            Attribution(performance_id, category, tariff, len(ids), None, tuple(ids))
            for category, ids in sorted(by_category.items())
        )
    )


async def _running_cart(page: Page) -> Any | None:
    """The cart when it can still change: running and not past its expiry."""
    order = await page.cart()
    if order is None or order.state != "RUNNING":
        return None
    if order.expires_at is not None and order.expires_at <= page.now:
        return None
    return order


@router.post("/shop/{pos_code}/cart/add")
async def add_to_cart(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        form = await page.form()
        lines = await _lines(page, form)
        order = await _running_cart(page)
        contact = await page.contact()
        order_id, _, _ = await carts.create_or_update_order(
            page.engine,
            page.seller,
            CartRequest(
                order_id=None if order is None else order.id,
                lines=lines,
                contact_number=str(contact.number) if contact else None,
                language=page.language,
            ),
            now=page.now,
        )
        document = await _document_of(page, order_id)
        page.keep_cart(document["orderSecretId"])
        page.write_summary(document)
        return page.redirect(f"{page.base}/cart")

    return await run(request, pos_code, handle)


async def _document_of(page: Page, order_id: int) -> dict[str, Any]:
    order = await page.order_of_id(order_id)
    return await page.order_document(order)


@router.get("/shop/{pos_code}/cart")
async def cart_page(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        order = await page.cart()
        expired = False
        document = None
        if order is not None:
            document = await page.order_document(order)
            if (
                order.state == "RUNNING" and order.expires_at and order.expires_at <= page.now
            ) or order.state == "ABANDONNED":
                expired = True
            if expired or order.state != "RUNNING":
                page.forget_cart()
                page.write_summary(None)
                document = None if order.state != "RUNNING" or expired else document
            else:
                page.write_summary(document)
        card_page = None
        if order is not None and document is not None and document["cardPaymentPending"]:
            async with read(page.engine) as conn:
                card_page = await card.pending_card_page(conn, page.seller, order.id)
        return page.render(
            "cart.html",
            title=page.t("your_cart"),
            order=document,
            lines=await _cart_lines(page, document) if document else [],
            expired=expired,
            card_page=card_page,
        )

    return await run(request, pos_code, handle)


async def _cart_lines(page: Page, document: dict[str, Any]) -> list[dict[str, Any]]:
    """Each reserved place with the names a buyer reads."""
    catalog = await (await page.catalog()).document()
    lines = []
    for operation in document["operations"]:
        found = offers.find_product(catalog, operation["productId"])
        season, product = found if found else (None, None)
        tariffs = offers.tariffs(season) if season else {}
        for movement in operation["movements"]:
            if movement["state"] != "RESERVED" and document["orderState"] == "RUNNING":
                continue
            performance = (
                offers.find_performance(catalog, movement["performanceId"])
                if movement["performanceId"]
                else None
            )
            tariff = tariffs.get(movement["audienceSubCategoryId"])
            lines.append(
                {
                    "movement": movement,
                    "product": page.text(product["externalName"]) if product else "",
                    "when": page.date(performance[2]["start"]) if performance else "",
                    "tariff": page.text(tariff["externalName"]) if tariff else "",
                    "seat": movement["seat"],
                }
            )
    return lines


@router.post("/shop/{pos_code}/cart/remove")
async def remove_from_cart(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        form = await page.form()
        movement = _int(field_of(form, "movement", 20), what="the place")
        order = await _running_cart(page)
        if order is None:
            raise NoCart("your cart has expired or is empty")
        await carts.abandon_movements(page.engine, page.seller, order.id, [movement], now=page.now)
        page.write_summary(await page.order_document(order))
        return page.redirect(f"{page.base}/cart")

    return await run(request, pos_code, handle)


# --- checkout and payment --------------------------------------------------------------------


@router.get("/shop/{pos_code}/checkout")
async def checkout(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        order = await _running_cart(page)
        if order is None:
            return page.redirect(f"{page.base}/cart")
        contact = await page.contact()
        if contact is not None:
            if order.contact_number != str(contact.number):
                await _attach(page, order, contact_number=str(contact.number))
            return page.redirect(f"{page.base}/pay")
        point = page.context.point_of_sale
        return page.render(
            "checkout.html",
            title=page.t("checkout"),
            next=f"{page.base}/checkout",
            guest=bool(point.guest_login_available),
            registration=bool(point.contact_account_creation_allowed),
            form={},
        )

    return await run(request, pos_code, handle)


async def _attach(page: Page, order: Any, **values: Any) -> None:
    """Name the cart's buyer (a contact, or a guest's name and email)."""
    await carts.create_or_update_order(
        page.engine, page.seller, CartRequest(order_id=order.id, **values), now=page.now
    )


@router.post("/shop/{pos_code}/checkout/guest")
async def checkout_guest(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        form = await page.form()
        order = await _running_cart(page)
        if order is None:
            return page.redirect(f"{page.base}/cart")
        if not page.context.point_of_sale.guest_login_available:
            raise SignInRequired("this shop sells to signed-in contacts only")
        values = {
            "firstName": field_of(form, "firstName", 80).strip(),
            "lastName": field_of(form, "lastName", 80).strip(),
            "email": field_of(form, "email", 254).strip(),
        }
        if (
            not all(values.values())
            or "@" not in values["email"]
            or any(ord(ch) < 32 for v in values.values() for ch in v)
        ):
            return page.render(
                "checkout.html",
                status=400,
                title=page.t("checkout"),
                next=f"{page.base}/checkout",
                guest=True,
                registration=bool(page.context.point_of_sale.contact_account_creation_allowed),
                form=values,
                error=BadChoice("give your first name, last name and email address"),
            )
        await _attach(page, order, purchaser=values)
        return page.redirect(f"{page.base}/pay")

    return await run(request, pos_code, handle)


async def _buyer(page: Page, order: Any) -> tuple[Any | None, bool]:
    """The signed-in contact, and whether the cart may be paid (a contact or a guest)."""
    contact = await page.contact()
    if contact is not None:
        return contact, True
    guest = bool(page.context.point_of_sale.guest_login_available and order.purchaser.get("email"))
    return None, guest


@router.get("/shop/{pos_code}/pay")
async def pay_page(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        order = await _running_cart(page)
        if order is None:
            return page.redirect(f"{page.base}/cart")
        contact, allowed = await _buyer(page, order)
        if not allowed:
            return page.redirect(f"{page.base}/checkout")
        return await _pay_form(page, order, contact)

    return await run(request, pos_code, handle)


@dataclass(frozen=True)
class Applied:
    """A voucher or the credit balance applied to a cart it does not cover (alone or with the
    other parts applied before it): what it pays, shown with the rest."""

    method: PaymentMethod
    reference: str | None  # the voucher's code
    amount: int

    def payment(self) -> PaymentRequest:
        return PaymentRequest(self.method.id, self.amount, self.reference)


MAX_PARTS = 8
PARTIAL = {"VOUCHER", "CREDIT"}
# what a buyer on the web can pay with; cash is the box office's, a pending account a
# reseller's: configured on a shop's point of sale, they are neither offered nor taken
ONLINE = {"CARD", *PARTIAL}


async def _pay_form(
    page: Page,
    order: Any,
    contact: Any,
    error: Any = None,
    parts: Sequence[Applied] = (),
) -> Response:
    document = await page.order_document(order)
    methods = _shop_methods(page)
    balance = None
    async with read(page.engine) as conn:
        card_page = await card.pending_card_page(conn, page.seller, order.id)
        if contact is not None and any(m.payment_type == "CREDIT" for m in methods):
            account = await find_account(
                conn, page.context.institution_id, AccountKind.CREDIT, str(contact.number)
            )
            balance = account.balance if account is not None else 0
    return page.render(
        "pay.html",
        status=error.http_status if error else 200,
        title=page.t("payment"),
        order=document,
        lines=await _cart_lines(page, document),
        methods=methods,
        card_method=_card_method(page),
        contact=contact,
        purchaser=order.purchaser,
        credit_balance=balance,
        card_page=card_page,
        parts=list(parts),
        rest=order.total - sum(p.amount for p in parts),
        credit_applied=any(p.method.payment_type == "CREDIT" for p in parts),
        error=error,
    )


def _shop_methods(page: Page) -> list[PaymentMethod]:
    return [m for m in page.seller.payment_methods if m.for_payment and m.payment_type in ONLINE]


def _method(page: Page, value: str) -> PaymentMethod:
    method = page.seller.method(_int(value, what="the payment method"))
    if method is None or not method.for_payment or method.payment_type not in ONLINE:
        raise BadChoice("choose one of this shop's payment methods")
    return method


def _card_method(page: Page) -> PaymentMethod | None:
    return next((m for m in _shop_methods(page) if m.payment_type == "CARD"), None)


async def _available(page: Page, method: PaymentMethod, reference: str | None, contact: Any) -> int:
    """What the voucher or credit balance can pay now (refused when unknown, expired, empty)."""
    code = str(contact.number) if method.payment_type == "CREDIT" else reference or ""
    async with read(page.engine) as conn:
        account = await spendable(
            conn,
            page.context.institution_id,
            ACCOUNT_OF_PAYMENT[method.payment_type],
            code,
            now=page.now,
        )
    return account.balance + account.credit_limit


def _partial(
    method: PaymentMethod, voucher: str, contact: Any, applied: Sequence[Applied]
) -> str | None:
    """The voucher's code for a voucher or credit-balance part (None for the balance), checked:
    the balance needs a signed-in contact, and neither it nor a voucher is applied twice."""
    if method.payment_type not in PARTIAL:
        raise BadChoice("only vouchers and the credit balance pay part beside the card")
    if method.payment_type == "CREDIT":
        if contact is None:
            raise SignInRequired("sign in to pay with your credit balance")
        if any(p.method.payment_type == "CREDIT" for p in applied):
            raise AppliedTwice("your credit balance is applied already")
        return None
    code = voucher.strip()
    if not code:
        raise BadChoice("give the voucher's code")
    if any(p.method.payment_type == "VOUCHER" and p.reference == code for p in applied):
        raise AppliedTwice(f"voucher {code} is applied already")
    return code


async def _applied_parts(page: Page, form: FormData, order: Any, contact: Any) -> list[Applied]:
    """The vouchers and credit balance the payment page's form carries as applied (none at
    first), checked again: the cart's total must be the one the page showed, every part a
    positive amount its account can still spend, and together less than the total (parts
    covering it have closed the order)."""
    methods, amounts, vouchers = (
        [v for v in form.getlist(name) if isinstance(v, str)]
        for name in ("part_method", "part_amount", "part_voucher")
    )
    if not methods and not amounts and not vouchers:
        return []
    if len({len(methods), len(amounts), len(vouchers)}) != 1 or len(methods) > MAX_PARTS:
        raise BadChoice("the applied vouchers and balance are not as the payment page showed")
    if _card_method(page) is None:
        raise BadChoice("this shop takes no card to pay the rest")
    if _int(field_of(form, "total", 20), what="the total") != order.total:
        raise WrongTotal(
            "the cart changed since the vouchers or balance were applied: apply them again"
        )
    parts: list[Applied] = []
    for raw, amount, voucher in zip(methods, amounts, vouchers, strict=True):
        method = _method(page, raw[:20])
        reference = _partial(method, voucher[:64], contact, parts)
        parts.append(Applied(method, reference, _int(amount[:20], what="the amount")))
    if any(p.amount <= 0 for p in parts) or sum(p.amount for p in parts) >= order.total:
        raise BadChoice("the vouchers and balance pay part of the total, the card the rest")
    for part in parts:
        available = await _available(page, part.method, part.reference, contact)
        if part.amount > available:
            what = "your credit balance" if part.reference is None else f"voucher {part.reference}"
            raise InsufficientFunds(f"{what} has {page.price(available)} left now: apply it again")
    return parts


@router.post("/shop/{pos_code}/pay/reopen")
async def reopen(request: Request, pos_code: str) -> Response:
    """Give up the cart's pending card payment (``reopenOrder``): the buyer who left the card
    page pays another way or changes the cart. Without a pending payment nothing changes."""

    async def handle(page: Page) -> Response:
        await page.form()
        order = await _running_cart(page)
        if order is None:
            raise NoCart("your cart has expired or is empty")
        await card.reopen_order(page.engine, page.seller, order.id, now=page.now)
        return page.redirect(f"{page.base}/pay")

    return await run(request, pos_code, handle)


@router.post("/shop/{pos_code}/pay")
async def pay(request: Request, pos_code: str) -> Response:
    """Pay the cart (see the module); a refusal is shown on the payment page, with the parts
    applied so far when they themselves passed."""

    async def handle(page: Page) -> Response:
        form = await page.form()
        order = await _running_cart(page)
        if order is None:
            raise NoCart("your cart has expired or is empty")
        contact, allowed = await _buyer(page, order)
        if not allowed:
            return page.redirect(f"{page.base}/checkout")
        try:
            parts = await _applied_parts(page, form, order, contact) if order.total else []
        except DomainError as error:
            return await _pay_form(page, order, contact, error)
        try:
            return await _settle(page, form, order, contact, parts)
        except DomainError as error:
            return await _pay_form(page, order, contact, error, parts)

    return await run(request, pos_code, handle)


async def _settle(
    page: Page, form: FormData, order: Any, contact: Any, parts: list[Applied]
) -> Response:
    """The step the form asks for beside the parts applied: one removed (``remove``, its
    index), the card for the rest, another voucher or the balance applied (closing the order
    when the parts cover the total), or a free order confirmed."""
    contact_number = str(contact.number) if contact else None
    # back on the host the buyer is on, where the shop's cookies are
    origin = str(page.request.base_url).rstrip("/")
    done = f"{origin}{page.base}/orders/{order.secret_id}"
    payments = [p.payment() for p in parts]
    if order.total:
        removed = field_of(form, "remove", 20)
        if removed:
            index = _int(removed, what="the part to remove")
            kept = [p for i, p in enumerate(parts) if i != index]
            return await _pay_form(page, order, contact, parts=kept)
        method = _method(page, field_of(form, "method", 20))
        rest = order.total - sum(p.amount for p in parts)
        if method.payment_type == "CARD":
            url = await card.start_card_payment(
                page.engine,
                page.request.app.state.payments,
                page.seller,
                order.id,
                [*payments, PaymentRequest(method.id, rest)],
                return_url=done,
                contact_number=contact_number,
                with_barcodes=True,
                now=page.now,
            )
            return page.redirect(url)
        reference = None
        if method.payment_type in PARTIAL:
            reference = _partial(method, field_of(form, "voucher", 64), contact, parts)
            available = await _available(page, method, reference, contact)
            if available < rest and _card_method(page) is not None:
                part = Applied(method, reference, available)
                return await _pay_form(page, order, contact, parts=[*parts, part])
        # the last part pays what is left (a voucher short of it is refused by the close)
        payments.append(PaymentRequest(method.id, rest, reference))
    await closing.close_order(
        page.engine,
        page.seller,
        order.id,
        payments,
        contact_number=contact_number,
        vault=page.vault,
        now=page.now,
    )
    page.forget_cart()
    page.write_summary(None)
    return page.redirect(done)


@router.get("/shop/{pos_code}/orders/{secret}")
async def confirmation(request: Request, pos_code: str, secret: str) -> Response:
    """The order after payment: its state and tickets, with the PDF link (the secret is the
    proof of possession, as for the PDF itself)."""

    async def handle(page: Page) -> Response:
        order = await page.order_of_secret(secret)
        if order is None:
            raise NoCart("no such order in this shop")
        document = await page.order_document(order)
        if order.state != "RUNNING":
            if page.cart_secret() == order.secret_id:
                page.forget_cart()
            page.write_summary(None)
        return page.render(
            "confirmation.html",
            title=page.t("confirmation") if order.state == "CLOSED" else page.t("order_state"),
            order=document,
            lines=await _cart_lines(page, document),
            pdf=f"/api/v1/orders/{order.secret_id}/tickets.pdf?lang={page.language}",
        )

    return await run(request, pos_code, handle)
