"""The setup file's sign-in section of each point of sale (website key, return hosts, SAML
service providers, OIDC clients, external provider), stored as written and read back typed."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.identity import db
from billetterie.identity.models import (
    ExternalProvider,
    OidcClient,
    SamlServiceProvider,
    SignInSetup,
)
from billetterie.shared.db import Sync

Json = dict[str, Any]


async def sync_sign_in(
    conn: AsyncConnection, institution_id: int, sections: dict[int, Json]
) -> int:
    """Store each point of sale's section (``{point_of_sale_id: section}``; the setup file's
    field names). The caller owns the transaction. Returns how many rows changed."""
    sync = Sync(conn, institution_id)
    await sync.rows(
        db.point_of_sale_identity,
        ("point_of_sale_id",),
        [
            {
                "point_of_sale_id": pos_id,
                "website_public_key": section.get("websitePublicKey"),
                "return_hosts": list(section.get("returnHosts") or []),
                "saml_service_providers": list(section.get("samlServiceProviders") or []),
                "oidc_clients": list(section.get("oidcClients") or []),
                "identity_provider": section.get("identityProvider"),
            }
            for pos_id, section in sorted(sections.items())
            if any(section.values())
        ],
    )
    await sync.delete_stale()
    return sync.changes


async def sign_in_sections(conn: AsyncConnection, institution_id: int) -> dict[int, Json]:
    """The sections as the setup file writes them, by point of sale id (empty ones left out)."""
    t = db.point_of_sale_identity.c
    rows = (
        await conn.execute(
            sa.select(db.point_of_sale_identity).where(t.institution_id == institution_id)
        )
    ).all()
    result: dict[int, Json] = {}
    for r in rows:
        section: Json = {
            "websitePublicKey": r.website_public_key,
            "returnHosts": r.return_hosts,
            "samlServiceProviders": r.saml_service_providers,
            "oidcClients": r.oidc_clients,
            "identityProvider": r.identity_provider,
        }
        result[r.point_of_sale_id] = {k: v for k, v in section.items() if v}
    return result


def _setup(row: Any) -> SignInSetup:
    if row is None:
        return SignInSetup()
    provider = row.identity_provider
    return SignInSetup(
        website_public_key=row.website_public_key,
        return_hosts=tuple(row.return_hosts),
        saml_service_providers=tuple(
            SamlServiceProvider(
                p["entityId"],
                p["assertionConsumerService"],
                p.get("singleLogoutService"),
                p.get("certificate"),
                bool(p.get("wantRequestsSigned", False)),
            )
            for p in row.saml_service_providers
        ),
        oidc_clients=tuple(
            OidcClient(
                c["clientId"], c.get("name"), tuple(c["redirectUris"]), c.get("clientSecretHash")
            )
            for c in row.oidc_clients
        ),
        identity_provider=None
        if not provider
        else ExternalProvider(
            provider["issuer"].rstrip("/"),
            provider["clientId"],
            provider["clientSecret"],
            provider.get("name", "SSO"),
            tuple(provider.get("scopes") or ("openid", "email", "profile")),
            bool(provider.get("exclusive", False)),
        ),
    )


async def sign_in_setup(conn: AsyncConnection, point_of_sale_id: int) -> SignInSetup:
    t = db.point_of_sale_identity.c
    row = (
        await conn.execute(
            sa.select(db.point_of_sale_identity).where(t.point_of_sale_id == point_of_sale_id)
        )
    ).first()
    return _setup(row)
