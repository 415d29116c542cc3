"""OpenID Connect endpoints of a point of sale (see oidc.py).

Provider: ``/shop/<code>/.well-known/openid-configuration``, ``/oidc/jwks``,
``/oidc/authorize``, ``/oidc/token``, ``/oidc/userinfo``; the issuer is
``<public URL>/shop/<code>``. Token and userinfo errors are RFC 9457 problem+json documents
that also carry OAuth's ``error`` and ``error_description`` members.

Relying party: ``/oidc/client/start`` → the provider → ``/oidc/client/callback`` → signed in,
or ``/oidc/client/link`` to link an existing account (its password, once) or create one. The
state, nonce and PKCE verifier travel in a short-lived signed cookie (``bt_oidc``), the
provider's claims awaiting a link in another (``bt_oidc_link``), both scoped to the shop.
"""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlencode

import httpx
import jwt
import orjson
from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from billetterie.contacts import services as contacts
from billetterie.contacts.models import ContactInput
from billetterie.identity import accounts, oidc
from billetterie.identity.errors import PasswordLoginDisabled
from billetterie.identity.keys import StoredKey, point_of_sale_key
from billetterie.identity.web import (
    Shop,
    field_of,
    form_of,
    load_shop,
    run_page,
    signed_in_contact,
    start_session,
)
from billetterie.shared.db import read
from billetterie.shared.errors import DomainError

router = APIRouter(include_in_schema=False)
FLOW_COOKIE = "bt_oidc"
LINK_COOKIE = "bt_oidc_link"
FLOW_LIFETIME = timedelta(minutes=10)


def _json(body: dict[str, Any], status: int = 200, **headers: str) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **headers},
    )


def _oauth_problem(error: DomainError) -> Response:
    oauth_error = getattr(error, "oauth_error", "invalid_request")
    body = {
        "type": f"https://billetterie.dev/errors/{error.code}",
        "title": error.code,
        "status": error.http_status,
        "detail": error.detail,
        "code": error.code,
        "error": oauth_error,
        "error_description": error.detail,
    }
    headers = {"Cache-Control": "no-store"}
    if error.http_status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="{oauth_error}"'
    return Response(
        orjson.dumps(body),
        status_code=error.http_status,
        media_type="application/problem+json",
        headers=headers,
    )


async def signing_key(shop: Shop) -> StoredKey:
    return await point_of_sale_key(
        shop.engine,
        institution_id=shop.point.institution_id,
        point_of_sale_id=shop.point.point_of_sale_id,
        purpose="oidc",
        subject=shop.point.code,
        now=shop.now,
    )


async def api_shop(request: Request, pos_code: str) -> Shop:
    shop = await load_shop(request, pos_code)
    if shop is None:
        raise oidc.UnknownClient("no such issuer")
    return shop


# --- provider --------------------------------------------------------------------------------


@router.get("/shop/{pos_code}/.well-known/openid-configuration")
async def configuration(request: Request, pos_code: str) -> Response:
    shop = await load_shop(request, pos_code)
    if shop is None or not shop.setup.oidc_clients:
        return _oauth_problem(oidc.UnknownClient("this point of sale is no OpenID provider"))
    return _json(oidc.discovery(shop.point.base_url))


@router.get("/shop/{pos_code}/oidc/jwks")
async def jwks(request: Request, pos_code: str) -> Response:
    try:
        shop = await api_shop(request, pos_code)
    except DomainError as error:
        return _oauth_problem(error)
    return _json(oidc.jwks(await signing_key(shop)))


@router.get("/shop/{pos_code}/oidc/authorize")
async def authorize(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        params = {k: v[:2048] for k, v in request.query_params.items()}
        try:
            parsed = oidc.check_authorize(shop.setup, params)
        except oidc.InvalidAuthorizeRequest as error:
            query = {"error": error.oauth_error, "error_description": error.detail}
            if error.extra.get("state"):
                query["state"] = error.extra["state"]
            return RedirectResponse(f"{error.extra['redirect_uri']}?{urlencode(query)}", 303)
        number = await signed_in_contact(shop)
        if number is None:
            here = f"{shop.base}/oidc/authorize?{request.url.query}"
            return shop.redirect(f"{shop.base}/account/login?{urlencode({'next': here})}")
        code = await oidc.issue_code(
            shop.engine,
            parsed,
            institution_id=shop.point.institution_id,
            point_of_sale_id=shop.point.point_of_sale_id,
            contact_number=number,
            now=shop.now,
        )
        query = {"code": code, "iss": shop.point.base_url}
        if parsed.state:
            query["state"] = parsed.state
        separator = "&" if "?" in parsed.redirect_uri else "?"
        return shop.redirect(f"{parsed.redirect_uri}{separator}{urlencode(query)}")

    return await run_page(request, pos_code, handle)


def _client_credentials(request: Request, form: Any) -> tuple[str, str | None]:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:]).decode()
        except (ValueError, UnicodeDecodeError):
            raise oidc.UnknownClient("malformed client authentication") from None
        client_id, _, secret = decoded.partition(":")
        return unquote(client_id), unquote(secret)
    secret = form.get("client_secret")
    return str(form.get("client_id") or ""), secret if isinstance(secret, str) else None


@router.post("/shop/{pos_code}/oidc/token")
async def token(request: Request, pos_code: str) -> Response:
    try:
        shop = await api_shop(request, pos_code)
        form = await request.form()
        if form.get("grant_type") != "authorization_code":
            raise oidc.InvalidGrant("grant_type must be authorization_code")
        client_id, secret = _client_credentials(request, form)
        client = oidc.authenticate_client(shop.setup, client_id[:128], secret)
        grant = await oidc.redeem_code(
            shop.engine,
            point_of_sale_id=shop.point.point_of_sale_id,
            client=client,
            code=field_of(form, "code", 200),
            redirect_uri=field_of(form, "redirect_uri", 2048),
            code_verifier=field_of(form, "code_verifier", 200),
            now=shop.now,
        )
        async with read(shop.engine) as conn:
            contact = await contacts.get_contact(
                conn, contacts.ContactScope(shop.point.institution_id), grant.contact_number
            )
        body = oidc.tokens(
            await signing_key(shop),
            issuer=shop.point.base_url,
            grant=grant,
            claims=_claims(contact),
            now=shop.now,
        )
    except DomainError as error:
        return _oauth_problem(error)
    return _json(body)


def _claims(contact: Any) -> dict[str, Any]:
    return {
        "contact_number": contact.number,
        "email": contact.email,
        "email_verified": contact.email_verified,
        "given_name": contact.first_name,
        "family_name": contact.last_name,
    }


@router.api_route("/shop/{pos_code}/oidc/userinfo", methods=["GET", "POST"])
async def userinfo(request: Request, pos_code: str) -> Response:
    try:
        shop = await api_shop(request, pos_code)
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise oidc.InvalidAccessToken("send Authorization: Bearer <access token>")
        claims = oidc.read_access_token(
            await signing_key(shop), value.strip(), issuer=shop.point.base_url, now=shop.now
        )
        async with read(shop.engine) as conn:
            contact = await contacts.get_contact(
                conn, contacts.ContactScope(shop.point.institution_id), int(claims["sub"])
            )
        if contact.login is None:
            raise oidc.InvalidAccessToken("this account no longer exists")
    except DomainError as error:
        return _oauth_problem(error)
    return _json({"sub": claims["sub"], **oidc.user_claims(_claims(contact), claims["scope"])})


# --- relying party ---------------------------------------------------------------------------


def _seal(shop: Shop, data: dict[str, Any]) -> str:
    claims = {**data, "pos": shop.point.point_of_sale_id}
    claims["exp"] = int((shop.now + FLOW_LIFETIME).timestamp())
    return jwt.encode(claims, shop.runtime.token_key, algorithm="HS256")


def _unseal(shop: Shop, value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        data: dict[str, Any] = jwt.decode(
            value, shop.runtime.token_key, algorithms=["HS256"], options={"verify_exp": False}
        )
    except jwt.PyJWTError:
        return None
    if data.get("pos") != shop.point.point_of_sale_id or data.get("exp", 0) <= shop.now.timestamp():
        return None
    return data


def _provider(shop: Shop) -> Any:
    provider = shop.setup.identity_provider
    if provider is None:
        raise oidc.ProviderRefused("this point of sale has no identity provider")
    return provider


@router.get("/shop/{pos_code}/oidc/client/start")
async def start(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        provider = _provider(shop)
        next_url = shop.safe_return(request.query_params.get("next"))
        async with httpx.AsyncClient(timeout=10.0) as client:
            metadata = await oidc.provider_metadata(provider, client)
        verifier, challenge = oidc.pkce_pair()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        shop.local_cookie(
            FLOW_COOKIE,
            _seal(shop, {"state": state, "nonce": nonce, "verifier": verifier, "next": next_url}),
            max_age=int(FLOW_LIFETIME.total_seconds()),
        )
        query = {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": f"{shop.point.base_url}/oidc/client/callback",
            "scope": " ".join(provider.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return shop.redirect(f"{metadata.authorization_endpoint}?{urlencode(query)}")

    return await run_page(request, pos_code, handle)


@router.get("/shop/{pos_code}/oidc/client/callback")
async def callback(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        provider = _provider(shop)
        flow = _unseal(shop, request.cookies.get(FLOW_COOKIE))
        state = request.query_params.get("state", "")
        if flow is None or not secrets.compare_digest(str(flow.get("state", "")), state):
            raise oidc.StateMismatch("this sign-in did not start here, or it took too long")
        shop.clear_cookie(FLOW_COOKIE, path=shop.base)
        if request.query_params.get("error"):
            raise oidc.ProviderRefused(
                f"the identity provider said: {request.query_params['error'][:100]}"
            )
        async with httpx.AsyncClient(timeout=10.0) as client:
            metadata = await oidc.provider_metadata(provider, client)
            claims = await oidc.exchange_code(
                provider,
                metadata,
                client,
                code=request.query_params.get("code", "")[:2048],
                redirect_uri=f"{shop.point.base_url}/oidc/client/callback",
                code_verifier=str(flow["verifier"]),
                nonce=str(flow["nonce"]),
                now=shop.now,
            )
        subject = str(claims["sub"])[:255]
        email = claims.get("email") if isinstance(claims.get("email"), str) else None
        verified = claims.get("email_verified") is True
        async with read(shop.engine) as conn:
            number = await contacts.contact_by_external_identity(
                conn, shop.point.institution_id, provider.issuer, subject
            )
            link = None
            if number is None and email and verified:
                number = await contacts.contact_by_login(conn, shop.point.institution_id, email)
                link = (provider.issuer, subject)
        next_url = str(flow.get("next") or f"{shop.base}/account")
        if number is not None:
            signed = await accounts.sign_in_external(
                shop.engine, shop.point, number, link=link, now=shop.now
            )
            await start_session(shop, signed)
            return shop.redirect(next_url)
        pending = {
            "sub": subject,
            "iss": provider.issuer,
            "email": email,
            "email_verified": verified,
            "given_name": claims.get("given_name"),
            "family_name": claims.get("family_name"),
            "next": next_url,
        }
        shop.local_cookie(LINK_COOKIE, _seal(shop, pending))
        return shop.redirect(f"{shop.base}/oidc/client/link")

    return await run_page(request, pos_code, handle)


def _pending(shop: Shop) -> dict[str, Any]:
    pending = _unseal(shop, shop.request.cookies.get(LINK_COOKIE))
    if pending is None:
        raise oidc.StateMismatch("there is no sign-in waiting for a link; start again")
    return pending


def _link_page(shop: Shop, pending: dict[str, Any], **values: Any) -> Response:
    error = values.get("error")
    return shop.page(
        "link.html",
        status=error.http_status if error else 200,
        title=shop.t("link_account"),
        provider_name=shop.setup.identity_provider.name if shop.setup.identity_provider else "",
        email=pending.get("email") or "",
        password_login=shop.password_login,
        **values,
    )


@router.get("/shop/{pos_code}/oidc/client/link")
async def link_form(request: Request, pos_code: str) -> Response:
    async def handle(shop: Shop) -> Response:
        return _link_page(shop, _pending(shop))

    return await run_page(request, pos_code, handle)


@router.post("/shop/{pos_code}/oidc/client/link")
async def link_submit(request: Request, pos_code: str) -> Response:
    """Link the provider's account to an existing one, proven by its password."""

    async def handle(shop: Shop) -> Response:
        form = await form_of(shop)
        pending = _pending(shop)
        if not shop.password_login:
            raise PasswordLoginDisabled("this shop signs in through its identity provider only")
        try:
            signed = await accounts.login(
                shop.engine,
                shop.point,
                email=field_of(form, "email") or str(pending.get("email") or ""),
                password=field_of(form, "password", 256),
                address=shop.address,
                remember=False,
                now=shop.now,
            )
        except DomainError as error:
            return _link_page(shop, pending, error=error)
        await accounts.sign_in_external(
            shop.engine,
            shop.point,
            signed.contact_number,
            link=(str(pending["iss"]), str(pending["sub"])),
            now=shop.now,
        )
        shop.clear_cookie(LINK_COOKIE, path=shop.base)
        await start_session(shop, signed)
        return shop.redirect(shop.safe_return(str(pending.get("next") or "") or None))

    return await run_page(request, pos_code, handle)


@router.post("/shop/{pos_code}/oidc/client/create")
async def create_account(request: Request, pos_code: str) -> Response:
    """A new account from the provider's claims."""

    async def handle(shop: Shop) -> Response:
        await form_of(shop)
        pending = _pending(shop)
        try:
            signed = await accounts.register_external(
                shop.engine,
                shop.point,
                ContactInput(
                    first_name=pending.get("given_name"),
                    last_name=pending.get("family_name") or pending.get("email"),
                    email=pending.get("email"),
                    language=shop.language,
                ),
                verified=bool(pending.get("email_verified")),
                link=(str(pending["iss"]), str(pending["sub"])),
                now=shop.now,
            )
        except DomainError as error:
            return _link_page(shop, pending, error=error)
        shop.clear_cookie(LINK_COOKIE, path=shop.base)
        await start_session(shop, signed)
        return shop.redirect(shop.safe_return(str(pending.get("next") or "") or None))

    return await run_page(request, pos_code, handle)
