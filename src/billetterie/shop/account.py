"""Account pages beyond sign-in (which ``identity.web`` serves): the contact's orders and
tickets, profile and password. Each page needs a signed-in contact; without one it sends the
buyer to the sign-in page and back."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from billetterie.contacts import services as contacts
from billetterie.contacts.models import ContactInput
from billetterie.identity.web import field_of
from billetterie.sales import queries
from billetterie.shared.db import read
from billetterie.shared.errors import DomainError
from billetterie.shop.web import Page, run

router = APIRouter(include_in_schema=False)
MAX_ORDERS = 50


def _sign_in(page: Page) -> Response:
    return page.redirect(f"{page.base}/account/login?next={quote(page.request.url.path)}")


async def _orders(page: Page, number: int) -> list[dict[str, Any]]:
    async with read(page.engine) as conn:
        found, _ = await queries.search_orders(
            conn,
            page.seller,
            queries.OrderFilter(contact_number=str(number), states=("CLOSED", "CANCELED")),
            start_position=0,
            max_results=MAX_ORDERS,
        )
        documents = []
        for summary in found:
            row = await queries.order_row(conn, page.seller, summary["orderId"])
            documents.append(await queries.order_document(conn, row))
    return documents


@router.get("/shop/{pos_code}/account/orders")
async def orders(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        contact = await page.contact()
        if contact is None:
            return _sign_in(page)
        return page.render(
            "orders.html", title=page.t("my_orders"), orders=await _orders(page, contact.number)
        )

    return await run(request, pos_code, handle)


@router.get("/shop/{pos_code}/account/tickets")
async def tickets(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        contact = await page.contact()
        if contact is None:
            return _sign_in(page)
        found = [
            {"order": order, "movement": movement}
            for order in await _orders(page, contact.number)
            for operation in order["operations"]
            for movement in operation["movements"]
            if movement["ticket"] and movement["ticket"]["ticketState"] != "CANCELLED"
        ]
        return page.render("tickets.html", title=page.t("my_tickets"), tickets=found)

    return await run(request, pos_code, handle)


@router.get("/shop/{pos_code}/account/profile")
async def profile(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        contact = await page.contact()
        if contact is None:
            return _sign_in(page)
        return page.render("profile.html", title=page.t("profile"), contact=contact)

    return await run(request, pos_code, handle)


@router.post("/shop/{pos_code}/account/profile")
async def profile_submit(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        form = await page.form()
        contact = await page.contact()
        if contact is None:
            return _sign_in(page)
        general = ContactInput(
            title=field_of(form, "title", 32).strip() or None,
            first_name=field_of(form, "firstName", 80).strip() or None,
            last_name=field_of(form, "lastName", 80).strip() or None,
            nickname=contact.nickname,
            email=contact.email,
            phone=field_of(form, "phone", 32).strip() or None,
            birth_date=contact.birth_date,
            language=page.language,
        )
        try:
            contact = await contacts.update_contact(
                page.engine,
                contacts.ContactScope(page.context.institution_id),
                contact.number,
                contacts.ContactChanges(general=general),
                point_of_sale_id=page.context.point_of_sale.id,
                actor=f"contact:{contact.number}",
                now=page.now,
            )
        except DomainError as error:
            return page.render(
                "profile.html",
                status=error.http_status,
                title=page.t("profile"),
                contact=contact,
                error=error,
            )
        return page.render(
            "profile.html", title=page.t("profile"), contact=contact, notice=page.t("saved")
        )

    return await run(request, pos_code, handle)


@router.get("/shop/{pos_code}/account/password")
async def password(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        contact = await page.contact()
        if contact is None:
            return _sign_in(page)
        return page.render("password.html", title=page.t("password"))

    return await run(request, pos_code, handle)


@router.post("/shop/{pos_code}/account/password")
async def password_submit(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        form = await page.form()
        contact = await page.contact()
        if contact is None or contact.login is None:
            return _sign_in(page)
        try:
            await contacts.change_password(
                page.engine,
                page.context.institution_id,
                login=contact.login,
                old_password=field_of(form, "current", 256),
                new_password=field_of(form, "new", 256),
                actor=f"contact:{contact.number}",
                now=page.now,
            )
        except DomainError as error:
            return page.render(
                "password.html", status=error.http_status, title=page.t("password"), error=error
            )
        return page.render("password.html", title=page.t("password"), notice=page.t("saved"))

    return await run(request, pos_code, handle)
