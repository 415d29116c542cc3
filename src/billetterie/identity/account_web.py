"""The shop's account pages: ``/shop/<code>/account/`` login, register, verify, forgot, reset,
logout, the account and its edit page; and ``/dev/mail`` (development). The request plumbing
(CSRF, cookies, return URLs, sessions) is in :mod:`billetterie.identity.web`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from billetterie.contacts import services as contacts
from billetterie.contacts.models import (
    Address,
    AddressKind,
    Authorization,
    Contact,
    ContactInput,
    Detail,
)
from billetterie.identity import accounts
from billetterie.identity.errors import PasswordLoginDisabled
from billetterie.identity.keys import point_of_sale_key
from billetterie.identity.mail import MailSink
from billetterie.identity.web import (
    MAX_FIELD,
    REMEMBER_COOKIE,
    SESSION_COOKIE,
    Shop,
    clear_website_cookie,
    current_contact,
    deliver_mail,
    field_of,
    form_of,
    run_page,
    start_session,
    templates,
    write_website_cookie,
)
from billetterie.shared.db import read
from billetterie.shared.errors import DomainError

router = APIRouter(include_in_schema=False)
dev_router = APIRouter(include_in_schema=False)


# --- pages -----------------------------------------------------------------------------------


def login_page(shop: Shop, *, next_url: str, status: int = 200, **values: Any) -> Response:
    provider = shop.setup.identity_provider
    return shop.page(
        "login.html",
        status=status,
        title=shop.t("sign_in"),
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
        title=shop.t("create_account"),
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
            title=shop.t("email_confirmed"),
            notice=shop.t("email_confirmed_notice"),
            link=f"{shop.base}/account",
            link_text=shop.t("my_account"),
        )

    return await run_page(request, pos_code, handle)


@router.get("/shop/{pos_code}/account/forgot")
async def forgot_form(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        return shop.page("forgot.html", title=shop.t("forgot_password"))

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
            return shop.refuse(error, "forgot.html", title=shop.t("forgot_password"))
        await deliver_mail(shop)
        return shop.page(
            "message.html",
            title=shop.t("check_mail"),
            notice=shop.t("check_mail_notice"),
        )

    return await run_page(request, pos_code, handle)


@router.get("/shop/{pos_code}/account/reset")
async def reset_form(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        token = request.query_params.get("token", "")[:200]
        return shop.page("reset.html", title=shop.t("choose_password"), token=token)

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
            return shop.refuse(error, "reset.html", title=shop.t("choose_password"), token=token)
        shop.clear_cookie(SESSION_COOKIE, path=shop.base)
        shop.clear_cookie(REMEMBER_COOKIE, path=shop.base)
        return shop.page(
            "message.html",
            title=shop.t("password_changed"),
            notice=shop.t("password_changed_notice"),
            link=f"{shop.base}/account/login",
            link_text=shop.t("sign_in"),
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
        return shop.page("account.html", title=shop.t("my_account"), contact=contact)

    return await run_page(request, pos_code, handle)


async def edit_page(
    shop: Shop, contact: Contact, *, next_url: str, error: DomainError | None = None, **values: Any
) -> Response:
    async with read(shop.engine) as conn:
        definitions = await contacts.list_definitions(conn, shop.point.institution_id)
        full = await contacts.get_contact(
            conn,
            contacts.ContactScope(shop.point.institution_id),
            contact.number,
            [Detail.GENERAL, Detail.ADDRESSES, Detail.CRITERIA, Detail.AUTHORIZATIONS],
        )
    allowed = {a.code for a in full.authorizations if a.allowed}
    main = next((a for a in full.addresses if a.kind is AddressKind.MAIN), None)
    return shop.page(
        "edit.html",
        status=error.http_status if error else 200,
        title=shop.t("my_profile"),
        contact=full,
        address=main or Address(AddressKind.MAIN),
        next=next_url,
        has_password=full.has_password,
        criteria=[
            {
                "code": c.code,
                "label": c.name.get(shop.language, c.code),
                "chosen": c.code in full.criteria,
            }
            for c in definitions.criteria
        ],
        authorizations=[
            {
                "code": a.code,
                "label": a.name.get(shop.language, a.code),
                "chosen": a.code in allowed,
            }
            for a in definitions.authorizations
        ],
        error=error,
        notice=values.get("notice"),
    )


@router.get("/shop/{pos_code}/account/edit")
async def edit_form(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        next_url = shop.safe_return(request.query_params.get("callbackUrl"))
        contact = await current_contact(shop)
        if contact is None:
            here = f"{shop.base}/account/edit?{request.url.query}".rstrip("?")
            return shop.redirect(f"{shop.base}/account/login?{urlencode({'next': here})}")
        return await edit_page(shop, contact, next_url=next_url)

    return await run_page(request, pos_code, handle)


@router.post("/shop/{pos_code}/account/edit")
async def edit_submit(request: Request, pos_code: str) -> Response:
    """Profile, main address, interests and consents; a new password with the current one."""

    async def handle(shop: Shop) -> Response:
        form = await form_of(shop)
        next_url = shop.safe_return(field_of(form, "callbackUrl", MAX_FIELD))
        contact = await current_contact(shop)
        if contact is None:
            return shop.redirect(f"{shop.base}/account/login")
        values = {
            name: field_of(form, name, 255) or None
            for name in ("title", "firstName", "lastName", "phone", "street", "zip", "city")
        }
        country = field_of(form, "country", 2).upper() or None
        async with read(shop.engine) as conn:
            definitions = await contacts.list_definitions(conn, shop.point.institution_id)
        chosen = set(form.getlist("authorizations"))
        actor = f"contact:{contact.number}"
        try:
            new_password = field_of(form, "newPassword", 256)
            if new_password:
                assert contact.login is not None
                await contacts.change_password(
                    shop.engine,
                    shop.point.institution_id,
                    login=contact.login,
                    old_password=field_of(form, "oldPassword", 256),
                    new_password=new_password,
                    actor=actor,
                    now=shop.now,
                )
            await contacts.update_contact(
                shop.engine,
                contacts.ContactScope(shop.point.institution_id),
                contact.number,
                contacts.ContactChanges(
                    general=ContactInput(
                        type=contact.type,
                        title=values["title"],
                        first_name=values["firstName"],
                        last_name=values["lastName"],
                        structure_name=contact.structure_name,
                        nickname=contact.nickname,
                        email=contact.email,
                        phone=values["phone"],
                        birth_date=contact.birth_date,
                        language=contact.language,
                    ),
                    addresses=[
                        Address(
                            AddressKind.MAIN,
                            values["street"],
                            None,
                            values["zip"],
                            values["city"],
                            country,
                        )
                    ]
                    if values["street"] or values["city"]
                    else [],
                    criteria=[c for c in form.getlist("criteria") if isinstance(c, str)][:200],
                    authorizations=[
                        Authorization(a.code, a.code in chosen) for a in definitions.authorizations
                    ],
                ),
                point_of_sale_id=shop.point.point_of_sale_id,
                actor=actor,
                now=shop.now,
            )
        except DomainError as error:
            return await edit_page(shop, contact, next_url=next_url, error=error)
        await write_website_cookie(shop, contact.number)
        if next_url != f"{shop.base}/account":
            return shop.redirect(next_url)
        return await edit_page(shop, contact, next_url=next_url, notice=shop.t("saved"))

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


@dev_router.get("/dev/mail")
async def dev_mail(request: Request) -> Response:
    """What the development mail sink received (newest first); only with ``dev_mail`` on."""
    mailer = getattr(request.app.state, "mailer", None)
    messages = list(mailer.messages) if isinstance(mailer, MailSink) else []
    html = templates.get_template("mail.html").render(title="Development mail", messages=messages)
    return HTMLResponse(html)
