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
    organization_refs,
    point_of_sale_codes,
)
from billetterie.catalog.setup_export import export_document
from billetterie.catalog.setupfile import SetupDocument, SetupFileError
from billetterie.contacts.models import Criterion
from billetterie.contacts.services import Definitions, list_definitions, sync_definitions
from billetterie.identity.services import OperatorSpec, list_operators, sync_operators
from billetterie.identity.signin import sign_in_sections, sync_sign_in
from billetterie.inventory.provision import provision
from billetterie.printing.errors import InvalidInterface
from billetterie.printing.services import InterfaceSpec, list_interfaces, sync_interfaces
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


async def write_printing(
    conn: AsyncConnection, institution_id: int, document: SetupDocument, now: datetime
) -> int:
    """The organization's external printing interfaces; a new one must bring its API key."""
    organization_id = next(
        r.organization_id
        for r in await organization_refs(conn)
        if r.institution_id == institution_id and r.organization_code == document.organization.code
    )
    specs = [
        InterfaceSpec(
            code=i.code,
            organization_id=organization_id,
            url=i.url,
            login=i.login,
            api_key=i.apiKey,
            products=tuple(i.products),
            schedule={str(k): v for k, v in i.schedule.items()},
            batch_size=i.batchSize,
            enabled=i.enabled,
            type=i.type,
        )
        for i in document.printingInterfaces
    ]
    try:
        return await sync_interfaces(conn, institution_id, specs, now=now)
    except InvalidInterface as exc:
        index = {i.code: n for n, i in enumerate(document.printingInterfaces)}
        problems = exc.extra.get("problems") or [("(interface)", exc.detail)]
        code = exc.extra.get("interface", "")
        base = f"printingInterfaces[{index.get(code, 0)}]"
        raise SetupFileError([(f"{base}.{name}", message) for name, message in problems]) from None


async def export_printing(conn: AsyncConnection, institution_id: int) -> list[dict[str, Any]]:
    """The interfaces as the setup file writes them, without their API keys."""
    exported: list[dict[str, Any]] = []
    for item in await list_interfaces(conn, institution_id):
        entry: dict[str, Any] = {
            "code": item.code,
            "type": item.type.value,
            "url": item.url,
            "login": item.login,
            "products": list(item.products),
        }
        if item.schedule:
            entry["schedule"] = {f.value: every for f, every in item.schedule.items()}
        if item.batch_size != 1000:
            entry["batchSize"] = item.batch_size
        if not item.enabled:
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

    async def printing(conn: AsyncConnection, institution_id: int, doc: SetupDocument) -> int:
        return await write_printing(conn, institution_id, doc, now)

    return await import_setup(
        engine,
        document,
        now=now,
        actor=actor,
        after_write=[operators, write_webhooks, write_contact_setup, inventory, printing],
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
    interfaces = await export_printing(conn, institution_id)
    if interfaces:
        ordered["printingInterfaces"] = interfaces
    return ordered
