"""The setup file as the whole box office reads and writes it: the catalog, the operators
(identity), the webhook subscriptions, each point of sale's sign-in section (identity), the
contacts' criteria and authorizations (contacts) and the inventory the catalog calls for, in one
transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.catalog.services import (
    ImportResult,
    import_setup,
    institution_id_by_code,
    inventory_plan,
    point_of_sale_codes,
)
from billetterie.catalog.setup_export import export_document
from billetterie.catalog.setupfile import SetupDocument
from billetterie.contacts.models import Criterion
from billetterie.contacts.services import Definitions, list_definitions, sync_definitions
from billetterie.identity.services import OperatorSpec, list_operators, sync_operators
from billetterie.identity.signin import sign_in_sections, sync_sign_in
from billetterie.inventory.provision import provision
from billetterie.webhooks.services import SubscriptionSpec, list_subscriptions, sync_subscriptions


async def write_operators(
    conn: AsyncConnection, institution_id: int, document: SetupDocument, now: datetime
) -> int:
    codes = {
        code: pos_id for pos_id, code in (await point_of_sale_codes(conn, institution_id)).items()
    }
    specs = [
        OperatorSpec(o.login, o.partner, codes[o.pointOfSale], o.callsPerMinute, o.secretHash)
        for o in document.operators
    ]
    return await sync_operators(conn, institution_id, specs, now=now)


async def write_webhooks(
    conn: AsyncConnection, institution_id: int, document: SetupDocument
) -> int:
    codes = {
        code: pos_id for pos_id, code in (await point_of_sale_codes(conn, institution_id)).items()
    }
    specs = [
        SubscriptionSpec(
            code=w.code,
            point_of_sale_id=codes[w.pointOfSale],
            events=tuple(dict.fromkeys(w.events)),
            url=w.url,
            method=w.method,
            payload=w.payload,
            secret=w.secret,
            enabled=w.enabled,
            products=tuple(w.filter.products) if w.filter else (),
            product_families=tuple(f.value for f in w.filter.productFamilies) if w.filter else (),
        )
        for w in document.webhooks
    ]
    return await sync_subscriptions(conn, institution_id, specs)


async def export_webhooks(conn: AsyncConnection, institution_id: int) -> list[dict[str, Any]]:
    codes = await point_of_sale_codes(conn, institution_id)
    exported: list[dict[str, Any]] = []
    for sub in await list_subscriptions(conn, institution_id):
        entry: dict[str, Any] = {
            "code": sub.code,
            "pointOfSale": codes[sub.point_of_sale_id],
            "events": [e.value for e in sub.events],
            "url": sub.url,
            "method": sub.method.value,
            "payload": sub.payload.value,
        }
        if not sub.filter.is_empty:
            entry["filter"] = {
                **({"products": sorted(sub.filter.products)} if sub.filter.products else {}),
                **(
                    {"productFamilies": sorted(sub.filter.product_families)}
                    if sub.filter.product_families
                    else {}
                ),
            }
        if not sub.enabled:
            entry["enabled"] = False
        exported.append(entry)
    return exported


SIGN_IN_FIELDS = (
    "websitePublicKey",
    "returnHosts",
    "samlServiceProviders",
    "oidcClients",
    "identityProvider",
)


async def write_contact_setup(
    conn: AsyncConnection, institution_id: int, document: SetupDocument
) -> int:
    """The organization's criteria and authorizations, and each point of sale's sign-in."""
    organization = document.organization
    changes = await sync_definitions(
        conn,
        institution_id,
        Definitions(
            [Criterion(c.code, dict(c.name)) for c in organization.contactCriteria],
            [Criterion(c.code, dict(c.name)) for c in organization.contactAuthorizations],
        ),
    )
    codes = {
        code: pos_id for pos_id, code in (await point_of_sale_codes(conn, institution_id)).items()
    }
    sections = {
        codes[p.code]: p.model_dump(mode="json", include=set(SIGN_IN_FIELDS), exclude_none=True)
        for c in document.salesChannels
        for p in c.pointsOfSale
    }
    return changes + await sync_sign_in(conn, institution_id, sections)


async def provision_inventory(conn: AsyncConnection, institution_id: int, now: datetime) -> int:
    await provision(conn, institution_id, await inventory_plan(conn, institution_id), now)
    return 0  # stock follows the catalog; it is not a setup change of its own


async def import_institution(
    engine: AsyncEngine, document: SetupDocument, *, now: datetime, actor: str
) -> ImportResult:
    """Validate-then-write import of a whole institution (see catalog.services.import_setup)."""

    async def operators(conn: AsyncConnection, institution_id: int, doc: SetupDocument) -> int:
        return await write_operators(conn, institution_id, doc, now)

    async def inventory(conn: AsyncConnection, institution_id: int, doc: SetupDocument) -> int:
        return await provision_inventory(conn, institution_id, now)

    return await import_setup(
        engine,
        document,
        now=now,
        actor=actor,
        after_write=[operators, write_webhooks, write_contact_setup, inventory],
    )


async def export_institution(conn: AsyncConnection, institution_code: str) -> dict[str, Any]:
    """The setup document of one institution, operators included (without their secrets)."""
    document = await export_document(conn, institution_code)
    institution_id = await institution_id_by_code(conn, institution_code)
    codes = await point_of_sale_codes(conn, institution_id)
    exported = [
        {
            "login": o.login,
            "partner": o.partner,
            "pointOfSale": codes[o.point_of_sale_id],
            **({"callsPerMinute": o.calls_per_minute} if o.calls_per_minute is not None else {}),
        }
        for o in await list_operators(conn, institution_id)
    ]
    definitions = await list_definitions(conn, institution_id)
    for key, choices in (
        ("contactCriteria", definitions.criteria),
        ("contactAuthorizations", definitions.authorizations),
    ):
        if choices:
            document["organization"][key] = [{"code": c.code, "name": c.name} for c in choices]
    sections = await sign_in_sections(conn, institution_id)
    for channel in document["salesChannels"]:
        for pos in channel["pointsOfSale"]:
            pos_id = next(i for i, code in codes.items() if code == pos["code"])
            pos.update(sections.get(pos_id, {}))
    ordered: dict[str, Any] = {}
    for key, value in document.items():
        ordered[key] = value
        if key == "salesChannels" and exported:
            ordered["operators"] = exported
    webhooks = await export_webhooks(conn, institution_id)
    if webhooks:
        ordered["webhooks"] = webhooks
    return ordered
