"""SAML endpoints of a point of sale: ``/shop/<code>/saml/{metadata,sso,slo}`` (see saml.py).

A request arriving by HTTP-POST is bounced to the GET endpoint with the same message (and
``SAMLBinding=post``): the shop's cookies are SameSite=Lax, so only a top-level GET shows
whether the contact is signed in. Without a session the contact goes through the shop's own
login page and comes back to the same URL.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from billetterie.contacts import services as contacts
from billetterie.identity import accounts, saml
from billetterie.identity.keys import point_of_sale_key
from billetterie.identity.web import (
    REMEMBER_COOKIE,
    SESSION_COOKIE,
    Shop,
    clear_website_cookie,
    field_of,
    run_page,
    signed_in_contact,
)
from billetterie.shared.db import read

router = APIRouter(include_in_schema=False)


async def provider_of(shop: Shop) -> saml.IdentityProvider:
    if not shop.setup.saml_service_providers:
        raise saml.UnknownServiceProvider("this point of sale has no SAML service provider")
    key = await point_of_sale_key(
        shop.engine,
        institution_id=shop.point.institution_id,
        point_of_sale_id=shop.point.point_of_sale_id,
        purpose="saml",
        subject=f"{shop.point.code} SAML IdP",
        now=shop.now,
    )
    return saml.identity_provider(
        base_url=shop.point.base_url,
        name=shop.point.code,
        setup=shop.setup,
        key=key,
        work_dir=shop.runtime.settings.var_dir / "saml" / str(shop.point.point_of_sale_id),
        cache=shop.runtime.caches.setdefault("saml", {}),
    )


@router.get("/shop/{pos_code}/saml/metadata")
async def metadata(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        provider = await provider_of(shop)
        return Response(saml.metadata(provider), media_type="application/samlmetadata+xml")

    return await run_page(request, pos_code, handle)


@router.get("/shop/{pos_code}/saml/sso")
async def single_sign_on(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        q = request.query_params
        binding = saml.POST if q.get("SAMLBinding") == "post" else saml.REDIRECT
        provider = await provider_of(shop)
        parsed = saml.parse_authn_request(
            provider,
            q.get("SAMLRequest", ""),
            binding=binding,
            relay_state=q.get("RelayState"),
            raw_query=request.url.query,
        )
        number = await signed_in_contact(shop)
        if number is None:
            here = f"{shop.base}/saml/sso?{request.url.query}"
            return shop.redirect(f"{shop.base}/account/login?{urlencode({'next': here})}")
        await saml.claim_request_id(
            shop.engine,
            institution_id=shop.point.institution_id,
            point_of_sale_id=shop.point.point_of_sale_id,
            request_id=parsed.request_id,
            now=shop.now,
        )
        async with read(shop.engine) as conn:
            contact = await contacts.get_contact(
                conn, contacts.ContactScope(shop.point.institution_id), number
            )
        action, fields = saml.authn_response(
            provider,
            parsed,
            contact_number=number,
            first_name=contact.first_name,
            last_name=contact.last_name,
            email=contact.email,
        )
        return shop.page("autopost.html", title=shop.t("signing_in"), action=action, fields=fields)

    return await run_page(request, pos_code, handle)


@router.post("/shop/{pos_code}/saml/sso")
async def single_sign_on_post(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        form = await request.form()
        query = {"SAMLRequest": field_of(form, "SAMLRequest", 100_000), "SAMLBinding": "post"}
        relay_state = field_of(form, "RelayState", 1024)
        if relay_state:
            query["RelayState"] = relay_state
        # Check it now so that a bad request is refused where it arrived.
        saml.parse_authn_request(
            await provider_of(shop),
            query["SAMLRequest"],
            binding=saml.POST,
            relay_state=relay_state or None,
            raw_query=None,
        )
        return shop.redirect(f"{shop.base}/saml/sso?{urlencode(query)}")

    return await run_page(request, pos_code, handle)


async def _logout(shop: Shop, answer: saml.LogoutAnswer) -> Response:
    await accounts.logout(
        shop.engine,
        shop.point,
        session_token=shop.request.cookies.get(SESSION_COOKIE),
        remember=shop.request.cookies.get(REMEMBER_COOKIE),
        now=shop.now,
    )
    shop.clear_cookie(SESSION_COOKIE, path=shop.base)
    shop.clear_cookie(REMEMBER_COOKIE, path=shop.base)
    clear_website_cookie(shop)
    assert answer.location is not None
    return shop.redirect(answer.location)


@router.get("/shop/{pos_code}/saml/slo")
async def single_logout(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        q = request.query_params
        answer = saml.logout(
            await provider_of(shop),
            q.get("SAMLRequest", ""),
            binding=saml.REDIRECT,
            relay_state=q.get("RelayState"),
            raw_query=request.url.query,
        )
        return await _logout(shop, answer)

    return await run_page(request, pos_code, handle)


@router.post("/shop/{pos_code}/saml/slo")
async def single_logout_post(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        form = await request.form()
        answer = saml.logout(
            await provider_of(shop),
            field_of(form, "SAMLRequest", 100_000),
            binding=saml.POST,
            relay_state=field_of(form, "RelayState", 1024) or None,
            raw_query=None,
        )
        return await _logout(shop, answer)

    return await run_page(request, pos_code, handle)
