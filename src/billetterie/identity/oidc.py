"""OpenID Connect, both ways, per point of sale.

As a provider it implements, of OpenID Connect Core 1.0 and OAuth 2.0:
- the authorization code flow (Core §3.1; RFC 6749 §4.1) with PKCE S256 required for every
  client (RFC 7636; ``plain`` is refused); confidential clients also authenticate with
  ``client_secret_post`` or ``client_secret_basic`` (argon2 hash in the setup file);
- redirect URIs compared exactly with the registered ones (RFC 6749 §3.1.2.3); codes live
  ``CODE_LIFETIME``, are bound to client, redirect URI and challenge, and are usable once;
- ID tokens (Core §2) and access tokens as RS256 JWTs; ``nonce`` echoed; ``sub`` = the contact
  number; the userinfo endpoint (Core §5.3); discovery (OpenID Connect Discovery 1.0 §3) and
  the JWKS (RFC 7517).
Skipped: implicit and hybrid flows, refresh tokens, dynamic registration, request objects,
``prompt``/``max_age`` beyond the defaults, consent screens (clients are the institution's own).

As a relying party of the point of sale's external provider (its ``identityProvider``), it
runs the same code flow with PKCE, checks the ID token's signature (provider's JWKS), issuer,
audience, expiry and nonce, then links the provider's account to a contact: by the provider's
``sub`` first, then by a verified email equal to a contact's login, else through the
link-account page. ``exclusive`` turns password sign-in off on that point of sale.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.identity import db
from billetterie.identity.accounts import digest
from billetterie.identity.keys import StoredKey
from billetterie.identity.models import ExternalProvider, OidcClient, SignInSetup
from billetterie.shared.db import transaction
from billetterie.shared.errors import DomainError

CODE_LIFETIME = timedelta(minutes=2)
TOKEN_LIFETIME = timedelta(minutes=10)
SCOPES = frozenset({"openid", "profile", "email"})
_hasher = PasswordHasher()


class OAuthError(DomainError):
    """An OAuth error (RFC 6749 §5.2): ``oauth_error`` is the protocol's ``error`` value."""

    http_status = 400
    oauth_error = "invalid_request"


class UnknownClient(OAuthError):
    code = "error.oidc.unknown_client"
    oauth_error = "invalid_client"
    http_status = 401


class BadRedirectUri(OAuthError):
    code = "error.oidc.bad_redirect_uri"


class InvalidAuthorizeRequest(OAuthError):
    code = "error.oidc.invalid_request"


class InvalidGrant(OAuthError):
    code = "error.oidc.invalid_grant"
    oauth_error = "invalid_grant"


class InvalidAccessToken(OAuthError):
    code = "error.oidc.invalid_token"
    oauth_error = "invalid_token"
    http_status = 401


class ProviderRefused(DomainError):
    """The external provider's answer cannot be trusted or did not come."""

    code = "error.oidc.provider"
    http_status = 502


class StateMismatch(DomainError):
    code = "error.oidc.state"
    http_status = 400


def key_id(key: StoredKey) -> str:
    return hashlib.sha256(key.public_pem().encode()).hexdigest()[:16]


def jwks(key: StoredKey) -> dict[str, Any]:
    private = key.private_key()
    assert isinstance(private, rsa.RSAPrivateKey)
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update({"kid": key_id(key), "use": "sig", "alg": "RS256"})
    return {"keys": [jwk]}


def discovery(issuer: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oidc/authorize",
        "token_endpoint": f"{issuer}/oidc/token",
        "userinfo_endpoint": f"{issuer}/oidc/userinfo",
        "jwks_uri": f"{issuer}/oidc/jwks",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": sorted(SCOPES),
        "token_endpoint_auth_methods_supported": [
            "none",
            "client_secret_post",
            "client_secret_basic",
        ],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "sub",
            "email",
            "email_verified",
            "given_name",
            "family_name",
            "contact_number",
        ],
    }


# --- provider --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthorizeRequest:
    client: OidcClient
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str


def check_authorize(setup: SignInSetup, params: dict[str, str]) -> AuthorizeRequest:
    """Validate an authorization request. Client and redirect URI errors must not redirect
    (raised as UnknownClient / BadRedirectUri); the others carry ``redirect_uri``."""
    client = setup.oidc_client(params.get("client_id", ""))
    if client is None:
        raise UnknownClient("unknown client_id")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:
        raise BadRedirectUri("redirect_uri is not one registered for this client")
    state = params.get("state")

    def refuse(detail: str) -> InvalidAuthorizeRequest:
        return InvalidAuthorizeRequest(detail, redirect_uri=redirect_uri, state=state)

    if params.get("response_type") != "code":
        raise refuse("response_type must be code")
    scopes = params.get("scope", "").split()
    if "openid" not in scopes or not set(scopes) <= SCOPES:
        raise refuse("scope must include openid and only openid, profile, email")
    challenge = params.get("code_challenge", "")
    if params.get("code_challenge_method") != "S256" or not 43 <= len(challenge) <= 128:
        raise refuse("PKCE with code_challenge_method S256 is required")
    nonce = params.get("nonce")
    if (nonce is not None and len(nonce) > 255) or (state is not None and len(state) > 1024):
        raise refuse("nonce or state too long")
    return AuthorizeRequest(client, redirect_uri, " ".join(scopes), state, nonce, challenge)


async def issue_code(
    engine: AsyncEngine,
    request: AuthorizeRequest,
    *,
    institution_id: int,
    point_of_sale_id: int,
    contact_number: int,
    now: datetime,
) -> str:
    code = secrets.token_urlsafe(32)
    async with transaction(engine) as conn:
        await conn.execute(
            sa.insert(db.oidc_code).values(
                institution_id=institution_id,
                point_of_sale_id=point_of_sale_id,
                contact_id=contact_number,
                code_hash=digest(code),
                client_id=request.client.client_id,
                redirect_uri=request.redirect_uri,
                scope=request.scope,
                nonce=request.nonce,
                code_challenge=request.code_challenge,
                created_at=now,
                expires_at=now + CODE_LIFETIME,
            )
        )
    return code


def authenticate_client(
    setup: SignInSetup, client_id: str, client_secret: str | None
) -> OidcClient:
    client = setup.oidc_client(client_id)
    if client is None:
        raise UnknownClient("unknown client")
    if client.client_secret_hash is not None:
        try:
            _hasher.verify(client.client_secret_hash, client_secret or "")
        except (VerificationError, InvalidHashError):
            raise UnknownClient("client authentication failed") from None
    return client


@dataclass(frozen=True)
class Grant:
    contact_number: int
    client_id: str
    scope: str
    nonce: str | None


async def redeem_code(
    engine: AsyncEngine,
    *,
    point_of_sale_id: int,
    client: OidcClient,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    now: datetime,
) -> Grant:
    """Exchange a code once; every mismatch is ``invalid_grant``. The code is spent before it
    is checked, so a wrong verifier or client burns it (no second guess)."""
    c = db.oidc_code.c
    async with transaction(engine) as conn:
        row = (
            await conn.execute(sa.select(db.oidc_code).where(c.code_hash == digest(code[:200])))
        ).first()
        claimed = 0
        if row is not None and row.point_of_sale_id == point_of_sale_id:
            result = await conn.execute(
                sa.update(db.oidc_code)
                .where(c.id == row.id, c.used_at.is_(None))
                .values(used_at=now)
            )
            claimed = result.rowcount
    if row is None or row.point_of_sale_id != point_of_sale_id:
        raise InvalidGrant("unknown code")
    if claimed != 1:
        raise InvalidGrant("this code was already used")
    if row.expires_at <= now:
        raise InvalidGrant("this code has expired")
    if row.client_id != client.client_id or row.redirect_uri != redirect_uri:
        raise InvalidGrant("the code was issued to another client or redirect_uri")
    if not 43 <= len(code_verifier) <= 128 or not secrets.compare_digest(
        create_s256_code_challenge(code_verifier), row.code_challenge
    ):
        raise InvalidGrant("code_verifier does not match the code_challenge")
    return Grant(int(row.contact_id), row.client_id, row.scope, row.nonce)


def sign(key: StoredKey, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, key.private_pem, algorithm="RS256", headers={"kid": key_id(key)})


def tokens(
    key: StoredKey,
    *,
    issuer: str,
    grant: Grant,
    claims: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    issued = int(now.timestamp())
    expires = int((now + TOKEN_LIFETIME).timestamp())
    access = sign(
        key,
        {
            "iss": issuer,
            "sub": str(grant.contact_number),
            "aud": f"{issuer}/oidc/userinfo",
            "client_id": grant.client_id,
            "scope": grant.scope,
            "iat": issued,
            "exp": expires,
            "jti": secrets.token_hex(8),
        },
    )
    id_claims = {
        "iss": issuer,
        "sub": str(grant.contact_number),
        "aud": grant.client_id,
        "iat": issued,
        "exp": expires,
        "auth_time": issued,
        "at_hash": _at_hash(access),
        **user_claims(claims, grant.scope),
    }
    if grant.nonce:
        id_claims["nonce"] = grant.nonce
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": int(TOKEN_LIFETIME.total_seconds()),
        "scope": grant.scope,
        "id_token": sign(key, id_claims),
    }


def _at_hash(token: str) -> str:
    half = hashlib.sha256(token.encode()).digest()[:16]
    return base64.urlsafe_b64encode(half).rstrip(b"=").decode()


def user_claims(claims: dict[str, Any], scope: str) -> dict[str, Any]:
    scopes = set(scope.split())
    result: dict[str, Any] = {"contact_number": claims["contact_number"]}
    if "email" in scopes:
        result.update(email=claims["email"], email_verified=claims["email_verified"])
    if "profile" in scopes:
        result.update(given_name=claims["given_name"], family_name=claims["family_name"])
    return {k: v for k, v in result.items() if v is not None}


def read_access_token(key: StoredKey, token: str, *, issuer: str, now: datetime) -> dict[str, Any]:
    private = key.private_key()
    assert isinstance(private, rsa.RSAPrivateKey)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            private.public_key(),
            algorithms=["RS256"],
            audience=f"{issuer}/oidc/userinfo",
            issuer=issuer,
            options={"verify_exp": False, "require": ["exp", "sub", "scope"]},
        )
    except jwt.PyJWTError:
        raise InvalidAccessToken("the access token is not valid") from None
    if claims["exp"] <= now.timestamp():
        raise InvalidAccessToken("the access token has expired")
    return claims


# --- relying party ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderMetadata:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


async def provider_metadata(
    provider: ExternalProvider, client: httpx.AsyncClient
) -> ProviderMetadata:
    try:
        response = await client.get(f"{provider.issuer}/.well-known/openid-configuration")
        response.raise_for_status()
        data = response.json()
        if data.get("issuer", "").rstrip("/") != provider.issuer:
            raise ProviderRefused("the provider's discovery names another issuer")
        return ProviderMetadata(
            str(data["authorization_endpoint"]),
            str(data["token_endpoint"]),
            str(data["jwks_uri"]),
        )
    except (httpx.HTTPError, ValueError, KeyError):
        raise ProviderRefused("the identity provider cannot be reached") from None


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, create_s256_code_challenge(verifier)


async def exchange_code(
    provider: ExternalProvider,
    metadata: ProviderMetadata,
    client: httpx.AsyncClient,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    nonce: str,
    now: datetime,
) -> dict[str, Any]:
    """The verified ID token claims of a code the provider sent back."""
    try:
        response = await client.post(
            metadata.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
                "client_id": provider.client_id,
            },
            auth=(provider.client_id, provider.client_secret),
        )
        if response.status_code != 200:
            raise ProviderRefused(f"the provider refused the code ({response.status_code})")
        id_token = str(response.json()["id_token"])
        keys = await client.get(metadata.jwks_uri)
        keys.raise_for_status()
        jwk_set = jwt.PyJWKSet.from_dict(keys.json())
        header = jwt.get_unverified_header(id_token)
        signing = next((k for k in jwk_set.keys if k.key_id == header.get("kid")), None) or (
            jwk_set.keys[0] if len(jwk_set.keys) == 1 else None
        )
        if signing is None:
            raise ProviderRefused("the ID token's key is not in the provider's JWKS")
        claims: dict[str, Any] = jwt.decode(
            id_token,
            signing.key,
            algorithms=["RS256", "ES256"],
            audience=provider.client_id,
            issuer=provider.issuer,
            options={"verify_exp": False, "verify_iat": False, "require": ["exp", "sub"]},
        )
    except (httpx.HTTPError, ValueError, KeyError, jwt.PyJWTError):
        raise ProviderRefused("the provider's answer does not verify") from None
    if claims["exp"] <= now.timestamp():
        raise ProviderRefused("the ID token has expired")
    if claims.get("nonce") != nonce:
        raise ProviderRefused("the ID token's nonce is not ours")
    return claims
