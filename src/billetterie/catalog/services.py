"""Catalog use cases: import and export the setup, build the catalog ahead, read helpers.

The setup import owns its transaction: the rows, the setup version, the rebuilt catalog
snapshots and the audit entry commit together, so a partner never sees a catalog "in progress".
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.catalog import db
from billetterie.catalog.builder import CatalogBuilder, summarize
from billetterie.catalog.errors import CatalogNotBuilt, UnknownInstitution, UnknownPointOfSale
from billetterie.catalog.models import CatalogScope
from billetterie.catalog.setup_import import write_document
from billetterie.catalog.setupfile import SetupDocument
from billetterie.shared import audit
from billetterie.shared.db import metadata, transaction

AfterWrite = Callable[[AsyncConnection, int, SetupDocument], Awaitable[int]]


@dataclass(frozen=True)
class ImportResult:
    institution_id: int
    changes: int
    setup_version: int
    channels_changed: int


async def import_setup(
    engine: AsyncEngine,
    document: SetupDocument,
    *,
    now: datetime,
    actor: str,
    after_write: Sequence[AfterWrite] = (),
) -> ImportResult:
    """Create or update an institution from a validated setup document (idempotent).

    Bumps the setup version only when something changed; rebuilds the catalog snapshots of
    every channel in the same transaction and moves a channel's version only when its catalog
    changed. ``after_write`` callbacks (operators, the inventory's provisioning) run in that
    transaction after the catalog rows are written; the changes they report count too.
    """
    async with transaction(engine) as conn:
        institution_id, changes = await write_document(conn, document, now)
        for callback in after_write:
            changes += await callback(conn, institution_id, document)
        version = (
            await conn.execute(
                sa.select(db.institution.c.setup_version).where(
                    db.institution.c.id == institution_id
                )
            )
        ).scalar_one()
        channels_changed = 0
        if changes:
            version += 1
            await conn.execute(
                sa.update(db.institution)
                .where(db.institution.c.id == institution_id)
                .values(setup_version=version, setup_updated_at=now)
            )
        channels_changed = await rebuild_catalogs(conn, institution_id, version, now)
        await audit.record(
            conn,
            institution_id=institution_id,
            action="catalog.setup.imported",
            actor=actor,
            at=now,
            changes=changes,
            setup_version=version,
        )
    return ImportResult(institution_id, changes, version, channels_changed)


async def rebuild_catalogs(
    conn: AsyncConnection, institution_id: int, version: int, now: datetime
) -> int:
    """Render and store every channel's catalog; a snapshot whose content is unchanged keeps
    its version and time. Returns how many snapshots changed."""
    builder = CatalogBuilder()
    with _no_cyclic_gc():  # the build allocates ~1M acyclic objects; collections only cost
        return await _rebuild(conn, builder, institution_id, version, now)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def _rebuild(
    conn: AsyncConnection, builder: CatalogBuilder, institution_id: int, version: int, now: datetime
) -> int:
    await builder.load(conn, institution_id)
    s = db.catalog_snapshot.c
    existing = {
        (r.sales_channel_id, r.scope): r.content_hash
        for r in (
            await conn.execute(
                sa.select(s.sales_channel_id, s.scope, s.content_hash).where(
                    s.institution_id == institution_id
                )
            )
        ).all()
    }
    changed = 0
    for channel in builder.channels:
        rendered: dict[Any, tuple[bytes, bytes, str]] = {}
        for scope in CatalogScope:
            selection = builder.selection(channel.id, scope)
            if selection not in rendered:
                document = builder.render(channel.id, scope)
                body = orjson.dumps(document)
                summary = orjson.dumps(summarize(document))
                rendered[selection] = (body, summary, hashlib.sha256(body).hexdigest())
            body, summary, digest = rendered[selection]
            key = (channel.id, scope.value)
            if existing.get(key) == digest:
                continue
            values = {
                "version": version,
                "content_hash": digest,
                "updated_at": now,
                "body": body,
                "summary": summary,
            }
            if key in existing:
                await conn.execute(
                    sa.update(db.catalog_snapshot)
                    .where(s.sales_channel_id == channel.id, s.scope == scope.value)
                    .values(**values)
                )
            else:
                await conn.execute(
                    sa.insert(db.catalog_snapshot).values(
                        institution_id=institution_id,
                        sales_channel_id=channel.id,
                        scope=scope.value,
                        **values,
                    )
                )
            changed += 1
    return changed


@dataclass(frozen=True)
class SnapshotVersion:
    version: int
    updated_at: datetime


async def snapshot_version(
    conn: AsyncConnection, sales_channel_id: int, scope: CatalogScope
) -> SnapshotVersion:
    s = db.catalog_snapshot.c
    row = (
        await conn.execute(
            sa.select(s.version, s.updated_at).where(
                s.sales_channel_id == sales_channel_id, s.scope == scope.value
            )
        )
    ).first()
    if row is None:
        raise CatalogNotBuilt("the catalog of this sales channel has not been built")
    return SnapshotVersion(row.version, row.updated_at)


async def snapshot_body(
    conn: AsyncConnection, sales_channel_id: int, scope: CatalogScope
) -> tuple[int, bytes, bytes]:
    """(version, catalogData JSON, summary JSON) of a channel's catalog."""
    s = db.catalog_snapshot.c
    row = (
        await conn.execute(
            sa.select(s.version, s.body, s.summary).where(
                s.sales_channel_id == sales_channel_id, s.scope == scope.value
            )
        )
    ).first()
    if row is None:
        raise CatalogNotBuilt("the catalog of this sales channel has not been built")
    return row.version, bytes(row.body), bytes(row.summary)


@dataclass(frozen=True)
class ChannelState:
    """The versions a request checks its caches against, read in one query."""

    setup_version: int
    catalog: SnapshotVersion


async def channel_state(
    conn: AsyncConnection, institution_id: int, sales_channel_id: int, scope: CatalogScope
) -> ChannelState:
    i, s = db.institution.c, db.catalog_snapshot.c
    row = (
        await conn.execute(
            sa.select(i.setup_version, s.version, s.updated_at)
            .join(db.catalog_snapshot, s.institution_id == i.id)
            .where(
                i.id == institution_id,
                s.sales_channel_id == sales_channel_id,
                s.scope == scope.value,
            )
        )
    ).first()
    if row is None:
        raise CatalogNotBuilt("the catalog of this sales channel has not been built")
    return ChannelState(row.setup_version, SnapshotVersion(row.version, row.updated_at))


async def channel_states(conn: AsyncConnection) -> dict[tuple[int, CatalogScope], ChannelState]:
    """:func:`channel_state` of every built channel and scope, in one query (for per-process
    caches that a setup import invalidates)."""
    i, s = db.institution.c, db.catalog_snapshot.c
    rows = (
        await conn.execute(
            sa.select(i.setup_version, s.sales_channel_id, s.scope, s.version, s.updated_at).join(
                db.catalog_snapshot, s.institution_id == i.id
            )
        )
    ).all()
    return {
        (r.sales_channel_id, CatalogScope(r.scope)): ChannelState(
            r.setup_version, SnapshotVersion(r.version, r.updated_at)
        )
        for r in rows
    }


async def setup_version(conn: AsyncConnection, institution_id: int) -> int:
    i = db.institution.c
    return int(
        (await conn.execute(sa.select(i.setup_version).where(i.id == institution_id))).scalar_one()
    )


@dataclass(frozen=True)
class PointOfSaleContext:
    """What an operator's point of sale fixes: institution, organization, channel."""

    institution_id: int
    institution_code: str
    currency: str
    setup_version: int
    organization: Any
    sales_channel: Any
    point_of_sale: Any
    payment_methods: list[Any]
    contingent_ids: frozenset[int] = frozenset()


async def point_of_sale_context(conn: AsyncConnection, point_of_sale_id: int) -> PointOfSaleContext:
    pos = (
        await conn.execute(
            sa.select(db.point_of_sale).where(db.point_of_sale.c.id == point_of_sale_id)
        )
    ).first()
    if pos is None:
        raise UnknownPointOfSale(f"point of sale {point_of_sale_id} does not exist")
    channel = (
        await conn.execute(
            sa.select(db.sales_channel).where(db.sales_channel.c.id == pos.sales_channel_id)
        )
    ).one()
    organization = (
        await conn.execute(
            sa.select(db.organization).where(db.organization.c.id == channel.organization_id)
        )
    ).one()
    institution = (
        await conn.execute(
            sa.select(db.institution).where(db.institution.c.id == pos.institution_id)
        )
    ).one()
    link = db.point_of_sale_payment_method.c
    methods = (
        await conn.execute(
            sa.select(db.payment_method, link.rank)
            .join(db.point_of_sale_payment_method, link.payment_method_id == db.payment_method.c.id)
            .where(link.point_of_sale_id == pos.id)
            .order_by(link.rank)
        )
    ).all()
    return PointOfSaleContext(
        institution.id,
        institution.code,
        institution.currency,
        institution.setup_version,
        organization,
        channel,
        pos,
        list(methods),
        frozenset(
            r.contingent_id
            for r in (
                await conn.execute(
                    sa.select(db.contingent_sales_channel.c.contingent_id).where(
                        db.contingent_sales_channel.c.sales_channel_id == channel.id
                    )
                )
            ).all()
        ),
    )


async def find_point_of_sale(conn: AsyncConnection, institution_code: str, pos_code: str) -> int:
    row = (
        await conn.execute(
            sa.select(db.point_of_sale.c.id)
            .join(db.institution, db.institution.c.id == db.point_of_sale.c.institution_id)
            .where(db.institution.c.code == institution_code, db.point_of_sale.c.code == pos_code)
        )
    ).first()
    if row is None:
        raise UnknownPointOfSale(f"no point of sale {pos_code} in institution {institution_code}")
    return int(row[0])


async def point_of_sale_by_code(conn: AsyncConnection, pos_code: str) -> int:
    """The point of sale a shop URL names (``/shop/<code>``); its code must be unique across
    institutions, else it is not reachable that way."""
    rows = (
        await conn.execute(
            sa.select(db.point_of_sale.c.id).where(db.point_of_sale.c.code == pos_code).limit(2)
        )
    ).all()
    if len(rows) != 1:
        raise UnknownPointOfSale(f"no shop {pos_code}")
    return int(rows[0][0])


async def institution_id_by_code(conn: AsyncConnection, code: str) -> int:
    row = (
        await conn.execute(sa.select(db.institution.c.id).where(db.institution.c.code == code))
    ).first()
    if row is None:
        raise UnknownInstitution(f"no institution {code}")
    return int(row[0])


@dataclass(frozen=True)
class OrganizationRef:
    institution_id: int
    institution_code: str
    organization_id: int
    organization_code: str


async def organization_refs(conn: AsyncConnection) -> list[OrganizationRef]:
    """Every organization with its institution, by institution and organization code."""
    rows = (
        await conn.execute(
            sa.select(
                db.institution.c.id,
                db.institution.c.code,
                db.organization.c.id,
                db.organization.c.code,
            )
            .join(db.organization, db.organization.c.institution_id == db.institution.c.id)
            .order_by(db.institution.c.code, db.organization.c.code)
        )
    ).all()
    return [OrganizationRef(*row) for row in rows]


async def institution_currency(conn: AsyncConnection, code: str) -> tuple[int, str]:
    """The institution's id and currency, by code."""
    row = (
        await conn.execute(
            sa.select(db.institution.c.id, db.institution.c.currency).where(
                db.institution.c.code == code
            )
        )
    ).first()
    if row is None:
        raise UnknownInstitution(f"no institution {code}")
    return int(row.id), str(row.currency)


async def institution_is_empty(conn: AsyncConnection) -> bool:
    return (
        await conn.execute(sa.select(sa.func.count()).select_from(db.institution))
    ).scalar_one() == 0


async def list_rows(
    conn: AsyncConnection, table_name: str, institution_id: int, **filters: Any
) -> list[Any]:
    """Rows of a catalog table for one institution (the tenancy filter is not optional)."""
    table = metadata.tables[table_name]
    query = sa.select(table).where(table.c.institution_id == institution_id)
    for column, value in filters.items():
        query = query.where(table.c[column] == value)
    return list((await conn.execute(query.order_by(table.c.id))).all())


@dataclass(frozen=True)
class InventoryPlan:
    """What the inventory needs to know of an institution's catalog to provision its stock."""

    performances: list[Any]  # id, product_id, logical_configuration_id
    seats: list[
        Any
    ]  # logical_configuration_id, seat_category_id, seat_id, block_id, row, number, x, y, rank
    zones: list[Any]  # logical_configuration_id, seat_category_id, capacity
    allocations: list[Any]  # contingent_id, performance_id, seat_category_id, quantity
    items: list[Any]  # id, product_id, kind, capacity
    timeslots: list[Any]  # id, product_item_id, quota
    products: list[Any]  # id, family, alert_ratio


async def inventory_plan(conn: AsyncConnection, institution_id: int) -> InventoryPlan:
    p, a, s = db.performance.c, db.seat_assignment.c, db.seat.c
    seats = (
        await conn.execute(
            sa.select(
                a.logical_configuration_id,
                a.seat_category_id,
                s.id.label("seat_id"),
                s.block_id,
                s.row,
                s.number,
                s.x,
                s.y,
                s.rank,
            )
            .join(db.seat, s.id == a.seat_id)
            .where(a.institution_id == institution_id)
        )
    ).all()
    z, al, i, t, pr = (
        db.zone.c,
        db.contingent_allocation.c,
        db.product_item.c,
        db.timeslot.c,
        db.product.c,
    )
    return InventoryPlan(
        performances=list(
            (
                await conn.execute(
                    sa.select(p.id, p.product_id, p.logical_configuration_id).where(
                        p.institution_id == institution_id
                    )
                )
            ).all()
        ),
        seats=list(seats),
        zones=list(
            (
                await conn.execute(
                    sa.select(z.logical_configuration_id, z.seat_category_id, z.capacity).where(
                        z.institution_id == institution_id
                    )
                )
            ).all()
        ),
        allocations=list(
            (
                await conn.execute(
                    sa.select(
                        al.contingent_id, al.performance_id, al.seat_category_id, al.quantity
                    ).where(al.institution_id == institution_id)
                )
            ).all()
        ),
        items=list(
            (
                await conn.execute(
                    sa.select(i.id, i.product_id, i.kind, i.capacity).where(
                        i.institution_id == institution_id
                    )
                )
            ).all()
        ),
        timeslots=list(
            (
                await conn.execute(
                    sa.select(t.id, t.product_item_id, t.quota).where(
                        t.institution_id == institution_id
                    )
                )
            ).all()
        ),
        products=list(
            (
                await conn.execute(
                    sa.select(pr.id, pr.family, pr.alert_ratio).where(
                        pr.institution_id == institution_id
                    )
                )
            ).all()
        ),
    )


async def point_of_sale_codes(conn: AsyncConnection, institution_id: int) -> dict[int, str]:
    p = db.point_of_sale.c
    rows = (
        await conn.execute(sa.select(p.id, p.code).where(p.institution_id == institution_id))
    ).all()
    return {row.id: row.code for row in rows}


@dataclass(frozen=True)
class ProductFacts:
    institution_id: int
    family: str
    alert_ratio: int


async def product_facts(conn: AsyncConnection) -> dict[int, ProductFacts]:
    """Every product's family and alert ratio (for availability levels)."""
    p = db.product.c
    rows = (await conn.execute(sa.select(p.id, p.institution_id, p.family, p.alert_ratio))).all()
    return {r.id: ProductFacts(r.institution_id, r.family, r.alert_ratio) for r in rows}


async def timeslot_times(conn: AsyncConnection) -> dict[int, tuple[datetime, datetime]]:
    t = db.timeslot.c
    rows = (await conn.execute(sa.select(t.id, t.start, t.end))).all()
    return {r.id: (r.start, r.end) for r in rows}


async def composed_performances(
    conn: AsyncConnection, institution_id: int, product_id: int
) -> list[int]:
    c = db.composed_product_performance.c
    rows = (
        await conn.execute(
            sa.select(c.performance_id).where(
                c.institution_id == institution_id, c.product_id == product_id
            )
        )
    ).all()
    return [r.performance_id for r in rows]


@dataclass(frozen=True)
class ProductRef:
    id: int
    code: str
    family: str
    name: dict[str, str]
    season_start: datetime
    season_end: datetime


async def products_by_code(
    conn: AsyncConnection, institution_id: int, codes: Sequence[str]
) -> dict[str, ProductRef]:
    """The institution's products among ``codes`` (unknown codes left out), with their season's
    dates (external printing names and dates its digital privileges by them)."""
    if not codes:
        return {}
    p, s = db.product.c, db.season.c
    rows = (
        await conn.execute(
            sa.select(p.id, p.code, p.family, p.name, s.start, s.end)
            .join(db.season, s.id == p.season_id)
            .where(p.institution_id == institution_id, p.code.in_(sorted(set(codes))))
        )
    ).all()
    return {r.code: ProductRef(r.id, r.code, r.family, dict(r.name), r.start, r.end) for r in rows}
