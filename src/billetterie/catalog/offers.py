"""What a sales channel may sell, and at what price: the catalog's answer to a cart line.

An *offer* is one place of a product for one tariff: its price (thousandths), VAT rate, the
performances it takes a place in (one for a single entry, each of its performances for a season
ticket or package, none for a simple product) and the names a ticket shows. It is refused, with
a stable code, when the product is not on sale on the channel now (state RUNNING and a sales
period for the channel around ``now``), when the performance or timeslot is not open, or when no
price exists for the tariff. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.catalog import db
from billetterie.catalog.models import PerformanceState, ProductFamily, ProductState
from billetterie.shared.db import engine_cache
from billetterie.shared.errors import DomainError, NotFound

SIMPLE_FAMILIES = {
    ProductFamily.PASS.value,
    ProductFamily.MEMBERSHIP.value,
    ProductFamily.SERVICE.value,
    ProductFamily.GOODS.value,
}
COMPOSED_FAMILIES = {ProductFamily.SEASONTICKET.value, ProductFamily.PACKAGE.value}


class UnknownOffer(NotFound):
    """The performance, item, timeslot, seat category or tariff does not exist here."""

    code = "error.order.unknown_product"


class NotOnSale(DomainError):
    code = "error.order.not_on_sale"
    http_status = 409


class NoPrice(DomainError):
    code = "error.order.no_price"
    http_status = 409


@dataclass(frozen=True)
class Offer:
    product_id: int
    product_family: str
    amount: int
    vat_rate: int
    audience_sub_category_id: int
    price_level_id: int | None
    contact_required: bool
    # (performance id, seat category id) for every place the offer takes
    performances: tuple[tuple[int, int], ...] = ()
    product_item_id: int | None = None
    timeslot_id: int | None = None
    labels: dict[str, Any] = field(default_factory=dict)


async def _product(
    conn: AsyncConnection,
    institution_id: int,
    sales_channel_id: int,
    product_id: int,
    now: datetime,
) -> Any:
    row, period = await _product_and_period(conn, institution_id, sales_channel_id, product_id)
    _check_period(row.code, period, now)
    return row


def _check_period(product_code: str, period: Any, now: datetime) -> None:
    if not period.start <= now < period.end:
        raise NotOnSale(f"product {product_code} is not on sale now on this sales channel")


async def _product_and_period(
    conn: AsyncConnection,
    institution_id: int,
    sales_channel_id: int,
    product_id: int,
) -> tuple[Any, Any]:
    """The product if it is RUNNING, and its sales period on the channel (not checked)."""
    p, sp, vat = db.product.c, db.sales_period.c, db.vat_code.c
    row = (
        await conn.execute(
            sa.select(db.product, vat.rate.label("vat_rate"))
            .join(db.vat_code, vat.id == p.vat_code_id)
            .where(p.id == product_id, p.institution_id == institution_id)
        )
    ).first()
    if row is None:
        raise UnknownOffer(f"no product {product_id}")
    period = (
        await conn.execute(
            sa.select(sp.start, sp.end).where(
                sp.product_id == product_id, sp.sales_channel_id == sales_channel_id
            )
        )
    ).first()
    if period is None:
        raise UnknownOffer(f"product {product_id} is not sold on this sales channel")
    if row.state != ProductState.RUNNING.value:
        raise NotOnSale(f"product {row.code} is {row.state.lower()}, not on sale")
    return row, period


async def _tariff(conn: AsyncConnection, institution_id: int, tariff_id: int) -> Any:
    a = db.audience_sub_category.c
    row = (
        await conn.execute(
            sa.select(a.id, a.code, a.name).where(
                a.id == tariff_id, a.institution_id == institution_id
            )
        )
    ).first()
    if row is None:
        raise UnknownOffer(f"no audience sub-category {tariff_id}")
    return row


async def _price(
    conn: AsyncConnection,
    product_id: int,
    tariff_id: int,
    price_level_id: int | None,
    *,
    performance_id: int | None = None,
    seat_category_id: int | None = None,
    product_item_id: int | None = None,
) -> tuple[int, int | None]:
    pr = db.price.c

    def same(column: Any, value: int | None) -> Any:
        return column.is_(None) if value is None else column == value

    query = sa.select(pr.amount, pr.price_level_id).where(
        pr.product_id == product_id,
        pr.audience_sub_category_id == tariff_id,
        same(pr.performance_id, performance_id),
        same(pr.seat_category_id, seat_category_id),
        same(pr.product_item_id, product_item_id),
    )
    if price_level_id is not None:
        query = query.where(pr.price_level_id == price_level_id)
    rows = (await conn.execute(query)).all()
    if not rows:
        raise NoPrice("no price for this tariff here")
    # without a price level asked for: the level-less price, else the first level's
    amount, level = min(rows, key=lambda r: (r.price_level_id is not None, r.price_level_id or 0))
    return int(amount), level


async def _seat_category(conn: AsyncConnection, institution_id: int, category_id: int) -> Any:
    c = db.seat_category.c
    row = (
        await conn.execute(
            sa.select(c.id, c.code, c.name, c.logical_configuration_id).where(
                c.id == category_id, c.institution_id == institution_id
            )
        )
    ).first()
    if row is None:
        raise UnknownOffer(f"no seat category {category_id}")
    return row


async def _performances(
    conn: AsyncConnection, institution_id: int, performance_ids: Iterable[int]
) -> dict[int, Any]:
    pf, sp, site = db.performance.c, db.space.c, db.site.c
    rows = (
        await conn.execute(
            sa.select(
                pf.id,
                pf.product_id,
                pf.code,
                pf.state,
                pf.start,
                pf.duration,
                pf.logical_configuration_id,
                sp.name.label("space_name"),
                site.name.label("site_name"),
                site.address.label("site_address"),
            )
            .join(db.space, sp.id == pf.space_id)
            .join(db.site, site.id == sp.site_id)
            .where(pf.institution_id == institution_id, pf.id.in_(sorted(set(performance_ids))))
        )
    ).all()
    return {r.id: r for r in rows}


def _performance_labels(perf: Any) -> dict[str, Any]:
    return {
        "performanceCode": perf.code,
        "start": perf.start.isoformat(),
        "duration": perf.duration,
        "venue": perf.site_name,
        "space": perf.space_name,
        "address": perf.site_address,
    }


async def performance_offer(
    conn: AsyncConnection,
    *,
    institution_id: int,
    sales_channel_id: int,
    performance_id: int,
    seat_category_id: int,
    audience_sub_category_id: int,
    price_level_id: int | None,
    now: datetime,
    setup_version: int = 0,
) -> Offer:
    """One place of a single-entry performance in a seat category for a tariff.

    With ``setup_version`` (the institution's, read in the caller's transaction), the offer is
    kept per process for that version: a setup import changes the version, and only the sales
    period is checked against ``now`` again."""
    key = (
        institution_id,
        setup_version,
        sales_channel_id,
        performance_id,
        seat_category_id,
        audience_sub_category_id,
        price_level_id,
    )
    offers = engine_cache(conn, "catalog.offers")
    cached = offers.get(key) if setup_version else None
    if cached is None:
        cached = await _performance_offer(
            conn,
            institution_id=institution_id,
            sales_channel_id=sales_channel_id,
            performance_id=performance_id,
            seat_category_id=seat_category_id,
            audience_sub_category_id=audience_sub_category_id,
            price_level_id=price_level_id,
        )
        if setup_version:
            offers[key] = cached
    offer, product_code, period = cached
    _check_period(product_code, period, now)
    return offer


async def _performance_offer(
    conn: AsyncConnection,
    *,
    institution_id: int,
    sales_channel_id: int,
    performance_id: int,
    seat_category_id: int,
    audience_sub_category_id: int,
    price_level_id: int | None,
) -> tuple[Offer, str, Any]:
    perf = (await _performances(conn, institution_id, [performance_id])).get(performance_id)
    if perf is None:
        raise UnknownOffer(f"no performance {performance_id}")
    product, period = await _product_and_period(
        conn, institution_id, sales_channel_id, perf.product_id
    )
    if product.family != ProductFamily.SINGLE_ENTRY.value:
        raise UnknownOffer(f"performance {performance_id} belongs to a {product.family} product")
    if perf.state != PerformanceState.RUNNING.value:
        raise NotOnSale(f"performance {perf.code} is {perf.state.lower()}, not on sale")
    category = await _seat_category(conn, institution_id, seat_category_id)
    if category.logical_configuration_id != perf.logical_configuration_id:
        raise UnknownOffer(f"seat category {seat_category_id} is not one of this performance's")
    tariff = await _tariff(conn, institution_id, audience_sub_category_id)
    amount, level = await _price(
        conn,
        product.id,
        tariff.id,
        price_level_id,
        performance_id=performance_id,
        seat_category_id=seat_category_id,
    )
    offer = Offer(
        product_id=product.id,
        product_family=product.family,
        amount=amount,
        vat_rate=product.vat_rate,
        audience_sub_category_id=tariff.id,
        price_level_id=level,
        contact_required=product.contact_required,
        performances=((performance_id, seat_category_id),),
        labels={
            "product": product.name,
            "productCode": product.code,
            "contactRequired": product.contact_required,
            "productFamily": product.family,
            "seatCategory": category.name,
            "tariff": tariff.name,
            "tariffCode": tariff.code,
            **_performance_labels(perf),
        },
    )
    return offer, product.code, period


async def composed_offer(
    conn: AsyncConnection,
    *,
    institution_id: int,
    sales_channel_id: int,
    product_id: int,
    seat_category_id: int,
    audience_sub_category_id: int,
    price_level_id: int | None,
    now: datetime,
) -> Offer:
    """A season ticket or package: one place in the same seat category (by code) in each of its
    performances that has not started yet."""
    product = await _product(conn, institution_id, sales_channel_id, product_id, now)
    if product.family not in COMPOSED_FAMILIES:
        raise UnknownOffer(f"product {product.code} is not a season ticket or package")
    category = await _seat_category(conn, institution_id, seat_category_id)
    tariff = await _tariff(conn, institution_id, audience_sub_category_id)
    amount, level = await _price(
        conn, product.id, tariff.id, price_level_id, seat_category_id=seat_category_id
    )
    c = db.composed_product_performance.c
    ids = [
        r.performance_id
        for r in (
            await conn.execute(sa.select(c.performance_id).where(c.product_id == product.id))
        ).all()
    ]
    performances = await _performances(conn, institution_id, ids)
    sc = db.seat_category.c
    categories = {
        (r.logical_configuration_id, r.code): r.id
        for r in (
            await conn.execute(
                sa.select(sc.id, sc.code, sc.logical_configuration_id).where(
                    sc.institution_id == institution_id, sc.code == category.code
                )
            )
        ).all()
    }
    places: list[tuple[int, int]] = []
    for perf in sorted(performances.values(), key=lambda p: (p.start, p.id)):
        if perf.state != PerformanceState.RUNNING.value:
            raise NotOnSale(f"performance {perf.code} of {product.code} is not on sale")
        target = categories.get((perf.logical_configuration_id, category.code))
        if target is None:
            raise UnknownOffer(f"performance {perf.code} has no seat category {category.code}")
        places.append((perf.id, target))
    if not places:
        raise NotOnSale(f"{product.code} has no performance left")
    return Offer(
        product_id=product.id,
        product_family=product.family,
        amount=amount,
        vat_rate=product.vat_rate,
        audience_sub_category_id=tariff.id,
        price_level_id=level,
        contact_required=product.contact_required,
        performances=tuple(places),
        labels={
            "product": product.name,
            "productCode": product.code,
            "contactRequired": product.contact_required,
            "productFamily": product.family,
            "seatCategory": category.name,
            "tariff": tariff.name,
            "tariffCode": tariff.code,
            "performances": [_performance_labels(performances[p]) for p, _ in places],
        },
    )


async def item_offer(
    conn: AsyncConnection,
    *,
    institution_id: int,
    sales_channel_id: int,
    product_item_id: int,
    timeslot_id: int | None,
    audience_sub_category_id: int,
    price_level_id: int | None,
    now: datetime,
) -> Offer:
    """One unit of a simple product's item (a pass entry, a card, a service), in a timeslot
    when the item is a timeslot item (required then, refused otherwise)."""
    it, ts = db.product_item.c, db.timeslot.c
    item = (
        await conn.execute(
            sa.select(db.product_item).where(
                it.id == product_item_id, it.institution_id == institution_id
            )
        )
    ).first()
    if item is None:
        raise UnknownOffer(f"no product item {product_item_id}")
    product = await _product(conn, institution_id, sales_channel_id, item.product_id, now)
    labels: dict[str, Any] = {
        "product": product.name,
        "productCode": product.code,
        "contactRequired": product.contact_required,
        "productFamily": product.family,
        "item": item.name,
        "itemCode": item.code,
        "validityDays": item.validity_days,
    }
    if item.kind == "TIMESLOT":
        if timeslot_id is None:
            raise UnknownOffer(f"item {item.code} is sold by timeslot: give a timeslotId")
        slot = (
            await conn.execute(
                sa.select(ts.id, ts.start, ts.end).where(
                    ts.id == timeslot_id, ts.product_item_id == item.id
                )
            )
        ).first()
        if slot is None:
            raise UnknownOffer(f"no timeslot {timeslot_id} for item {item.code}")
        if slot.end <= now:
            raise NotOnSale("this timeslot is over")
        labels |= {"start": slot.start.isoformat(), "end": slot.end.isoformat()}
    elif timeslot_id is not None:
        raise UnknownOffer(f"item {item.code} has no timeslots")
    tariff = await _tariff(conn, institution_id, audience_sub_category_id)
    amount, level = await _price(
        conn, product.id, tariff.id, price_level_id, product_item_id=item.id
    )
    return Offer(
        product_id=product.id,
        product_family=product.family,
        amount=amount,
        vat_rate=product.vat_rate,
        audience_sub_category_id=tariff.id,
        price_level_id=level,
        contact_required=product.contact_required,
        product_item_id=item.id,
        timeslot_id=timeslot_id,
        labels=labels | {"tariff": tariff.name, "tariffCode": tariff.code},
    )


async def block_labels(
    conn: AsyncConnection,
    institution_id: int,
    block_ids: Iterable[int],
    *,
    setup_version: int = 0,
) -> dict[int, dict[str, Any]]:
    """Area and block names of seats, for tickets; with ``setup_version`` (read in the
    caller's transaction), every block of the institution is read once per process and
    version."""
    b, a = db.block.c, db.area.c
    ids = sorted(set(block_ids))
    if not ids:
        return {}
    query = sa.select(b.id, b.name.label("block"), a.name.label("area")).join(
        db.area, a.id == b.area_id
    )
    if not setup_version:
        rows = (
            await conn.execute(query.where(b.institution_id == institution_id, b.id.in_(ids)))
        ).all()
        return {r.id: {"area": r.area, "block": r.block} for r in rows}
    key = (institution_id, setup_version)
    cache = engine_cache(conn, "catalog.blocks", limit=64)
    labels = cache.get(key)
    if labels is None:
        rows = (await conn.execute(query.where(b.institution_id == institution_id))).all()
        labels = cache[key] = {r.id: {"area": r.area, "block": r.block} for r in rows}
    return {block_id: labels[block_id] for block_id in ids if block_id in labels}


async def area_blocks(
    conn: AsyncConnection, institution_id: int, area_ids: Iterable[int]
) -> tuple[int, ...]:
    """The blocks of these areas of the institution's venues; UnknownOffer when one of the
    areas is not the institution's."""
    wanted = sorted(set(area_ids))
    if not wanted:
        return ()
    a, b = db.area.c, db.block.c
    rows = (
        await conn.execute(
            sa.select(a.id, b.id.label("block_id"))
            .select_from(db.area.outerjoin(db.block, b.area_id == a.id))
            .where(a.institution_id == institution_id, a.id.in_(wanted))
        )
    ).all()
    missing = set(wanted) - {r.id for r in rows}
    if missing:
        raise UnknownOffer(f"no area {min(missing)} here")
    return tuple(sorted({r.block_id for r in rows if r.block_id is not None}))


async def organization_facts(conn: AsyncConnection, organization_id: int) -> dict[str, Any]:
    """Name, code and time zone of an organization, for tickets."""
    o = db.organization.c
    row = (await conn.execute(sa.select(db.organization).where(o.id == organization_id))).one()
    return {"id": row.id, "code": row.code, "name": row.name, "timeZone": row.time_zone}


async def tariff_codes(conn: AsyncConnection, institution_id: int) -> dict[int, str]:
    """Audience sub-category (tariff) codes by id."""
    a = db.audience_sub_category.c
    rows = (
        await conn.execute(sa.select(a.id, a.code).where(a.institution_id == institution_id))
    ).all()
    return {r.id: r.code for r in rows}


async def ticket_names(conn: AsyncConnection, institution_id: int, organization_id: int) -> Any:
    """What a printed ticket names: the institution, its organization and its time zone."""
    i, o = db.institution.c, db.organization.c
    return (
        await conn.execute(
            sa.select(
                i.name.label("institution"),
                o.name.label("organization"),
                o.time_zone,
                o.main_language,
            )
            .join(db.organization, o.institution_id == i.id)
            .where(i.id == institution_id, o.id == organization_id)
        )
    ).one()
