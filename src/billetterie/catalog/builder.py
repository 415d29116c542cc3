"""Builds the detailed catalog (``catalogData`` of ``getCatalogDetailed``) of every sales channel.

The whole institution is read with one query per table, then assembled in memory; the result
is serialised once per channel and scope and stored (see ``services.rebuild_catalogs``). Field
names, enums, amounts in thousandths and translation objects follow the S-360 wire.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.catalog import db
from billetterie.catalog.models import (
    EXTENDED_STATES,
    SELLABLE_STATES,
    CatalogScope,
    PerformanceState,
    ProductFamily,
    ProductState,
    SeasonState,
)
from billetterie.shared.clock import as_utc
from billetterie.shared.text import translations

Json = dict[str, Any]


async def _all(
    conn: AsyncConnection, table: sa.Table, institution_id: int, *order: str
) -> list[Any]:
    query = sa.select(table).where(table.c.institution_id == institution_id)
    query = query.order_by(*(table.c[o] for o in order or ("id",)))
    return list((await conn.execute(query)).all())


class CatalogBuilder:
    """Loads an institution's catalog once; renders it for any channel and scope."""

    async def load(self, conn: AsyncConnection, institution_id: int) -> None:
        self.institution_id = institution_id
        load = _all
        self.channels = await load(conn, db.sales_channel, institution_id)
        self.seasons = await load(conn, db.season, institution_id, "start", "id")
        self.categories = await load(conn, db.audience_category, institution_id, "rank", "id")
        self.tariffs = await load(conn, db.audience_sub_category, institution_id, "rank", "id")
        self.levels = await load(conn, db.price_level, institution_id, "rank", "id")
        self.products = await load(conn, db.product, institution_id, "rank", "id")
        self.periods = await load(conn, db.sales_period, institution_id)
        self.performances = await load(conn, db.performance, institution_id, "start", "id")
        self.items = await load(conn, db.product_item, institution_id)
        self.composed = await load(conn, db.composed_product_performance, institution_id)
        self.themes = {t.id: t for t in await load(conn, db.theme, institution_id)}
        self.sites = {s.id: s for s in await load(conn, db.site, institution_id)}
        self.spaces = {s.id: s for s in await load(conn, db.space, institution_id)}
        seat_categories = await load(conn, db.seat_category, institution_id, "rank", "id")
        self.contingent_channels = await load(conn, db.contingent_sales_channel, institution_id)
        allocations = await load(conn, db.contingent_allocation, institution_id)

        self.categories_of_configuration: dict[int, list[Json]] = defaultdict(list)
        for c in seat_categories:
            self.categories_of_configuration[c.logical_configuration_id].append(
                {"id": c.id, "code": c.code, "externalName": translations(c.name), "rank": c.rank}
            )
        self.allocations_of_performance: dict[int, list[Any]] = defaultdict(list)
        for a in allocations:
            self.allocations_of_performance[a.performance_id].append(a)

        # prices are the bulk: read as plain tuples, and a performance's prices are serialised
        # once, as JSON text every channel and scope reuses (orjson.Fragment)
        performance_prices: dict[int, list[str]] = defaultdict(list)
        self.prices_of_item: dict[int, list[Json]] = defaultdict(list)
        self.prices_of_product: dict[int, list[Json]] = defaultdict(list)
        p = db.price.c
        rows = await conn.execute(
            sa.select(
                p.product_id,
                p.performance_id,
                p.product_item_id,
                p.seat_category_id,
                p.audience_sub_category_id,
                p.price_level_id,
                p.amount,
            )
            .where(p.institution_id == institution_id)
            .order_by(p.id)
        )
        for product_id, performance_id, item_id, seat_cat, tariff, level, amount in rows.all():
            if performance_id is not None:
                level_text = "" if level is None else f',"priceLevelId":{int(level)}'
                performance_prices[performance_id].append(
                    f'{{"seatCatId":{int(seat_cat)},"audSubCatId":{int(tariff)}{level_text},'
                    f'"amount":{int(amount)}}}'
                )
                continue
            price: Json = {"seatCatId": seat_cat, "audSubCatId": tariff, "amount": amount}
            if level is not None:
                price["priceLevelId"] = level
            if item_id is not None:
                del price["seatCatId"]
                self.prices_of_item[item_id].append(price)
            else:
                self.prices_of_product[product_id].append(price)
        self.prices_of_performance: dict[int, orjson.Fragment] = {
            performance_id: orjson.Fragment("[" + ",".join(prices) + "]")
            for performance_id, prices in performance_prices.items()
        }
        self._performances: dict[int, Json] = {}
        self._venues: dict[int, Json] = {}
        self.timeslots_of_item: dict[int, list[Json]] = defaultdict(list)
        t = db.timeslot.c
        slots = await conn.execute(
            sa.select(t.id, t.product_item_id, t.start, t.end, t.quota)
            .where(t.institution_id == institution_id)
            .order_by(t.start, t.id)
        )
        for slot_id, item_id, start, end, quota in slots.all():
            self.timeslots_of_item[item_id].append(
                {"id": slot_id, "start": _iso(start), "end": _iso(end), "quota": quota}
            )

    # --- rendering ---------------------------------------------------------------------

    def visible_products(self, channel_id: int, scope: CatalogScope) -> list[Any]:
        states = EXTENDED_STATES if scope == CatalogScope.EXTENDED else SELLABLE_STATES
        sold_here = {p.product_id for p in self.periods if p.sales_channel_id == channel_id}
        return [p for p in self.products if p.id in sold_here and ProductState(p.state) in states]

    @staticmethod
    def performance_states(scope: CatalogScope) -> set[str]:
        if scope == CatalogScope.EXTENDED:
            return {s.value for s in PerformanceState} - {PerformanceState.PREPARING.value}
        return {PerformanceState.RUNNING.value, PerformanceState.SUSPENDED.value}

    def selection(
        self, channel_id: int, scope: CatalogScope
    ) -> tuple[frozenset[int], frozenset[int]]:
        """The products and performances a scope shows: equal selections render equal
        documents, so a channel whose closed products are all gone renders once."""
        products = frozenset(p.id for p in self.visible_products(channel_id, scope))
        states = self.performance_states(scope)
        performances = frozenset(
            p.id for p in self.performances if p.product_id in products and p.state in states
        )
        return products, performances

    def render(self, channel_id: int, scope: CatalogScope) -> Json:
        products = self.visible_products(channel_id, scope)
        contingents = {
            c.contingent_id for c in self.contingent_channels if c.sales_channel_id == channel_id
        }
        performance_states = self.performance_states(scope)
        performances_of: dict[int, list[Any]] = defaultdict(list)
        by_id: dict[int, Any] = {}
        for perf in self.performances:
            by_id[perf.id] = perf
            if perf.state in performance_states:
                performances_of[perf.product_id].append(perf)
        composed_of: dict[int, list[int]] = defaultdict(list)
        for c in self.composed:
            composed_of[c.product_id].append(c.performance_id)
        items_of: dict[int, list[Any]] = defaultdict(list)
        for item in self.items:
            items_of[item.product_id].append(item)
        periods = {p.product_id: p for p in self.periods if p.sales_channel_id == channel_id}
        products_of_season: dict[int, list[Json]] = defaultdict(list)
        for product in products:
            products_of_season[product.season_id].append(
                self._product(
                    product,
                    periods[product.id],
                    performances_of[product.id],
                    [by_id[i] for i in composed_of[product.id] if i in by_id],
                    items_of[product.id],
                    contingents,
                )
            )
        seasons = []
        for season in self.seasons:
            if season.state == SeasonState.PREPARING.value:
                continue
            seasons.append(
                {
                    "id": season.id,
                    "code": season.code,
                    "state": season.state,
                    "start": _iso(season.start),
                    "end": _iso(season.end),
                    "externalName": translations(season.name),
                    "audienceCategories": [
                        self._audience_category(c)
                        for c in self.categories
                        if c.season_id == season.id
                    ],
                    "priceLevels": [
                        {
                            "id": lv.id,
                            "code": lv.code,
                            "externalName": translations(lv.name),
                            "rank": lv.rank,
                        }
                        for lv in self.levels
                        if lv.season_id == season.id
                    ],
                    "products": products_of_season[season.id],
                }
            )
        return {"seasons": seasons}

    def _audience_category(self, category: Any) -> Json:
        tariffs = [t for t in self.tariffs if t.audience_category_id == category.id]
        ids = {
            t.code: t.id
            for t in self.tariffs
            if t.audience_category_id
            in {c.id for c in self.categories if c.season_id == category.season_id}
        }
        return {
            "id": category.id,
            "code": category.code,
            "mainCategory": category.main_category,
            "secondaryCategory": category.secondary_category,
            "externalName": translations(category.name),
            "audienceSubCategories": [
                {
                    "id": t.id,
                    "code": t.code,
                    "externalName": translations(t.name),
                    "audienceCategoryKind": t.kind,
                    "requiredAudienceSubCategoryIds": [
                        ids[c] for c in t.required_codes if c in ids
                    ],
                    "crossSeatCategory": t.cross_seat_category,
                }
                for t in tariffs
            ],
        }

    def _theme(self, theme_id: int | None) -> Json | None:
        if theme_id is None or theme_id not in self.themes:
            return None
        theme = self.themes[theme_id]
        return {"id": theme.id, "code": theme.code, "externalName": translations(theme.name)}

    def _venue(self, perf: Any) -> Json:
        cached = self._venues.get(perf.space_id)
        if cached is not None:
            return cached
        space = self.spaces[perf.space_id]
        site = self.sites[space.site_id]
        cached = self._venues[perf.space_id] = {
            "siteId": site.id,
            "siteCode": site.code,
            "siteName": translations(site.name),
            "address": site.address,
            "spaceId": space.id,
            "spaceCode": space.code,
            "spaceName": translations(space.name),
        }
        return cached

    def _performance(self, perf: Any, contingents: set[int]) -> Json:
        """A performance as the channel sees it; everything but its contingents is built once."""
        base = self._performances.get(perf.id)
        if base is None:
            base = self._performances[perf.id] = self._performance_base(perf)
        mine = {a.contingent_id for a in self.allocations_of_performance[perf.id]} & contingents
        return {**base, "contingentIds": sorted(mine), "prices": base["prices"]}

    def _performance_base(self, perf: Any) -> Json:
        start: datetime = perf.start
        return {
            "id": perf.id,
            "code": perf.code,
            "state": perf.state,
            "start": _iso(start),
            "end": _iso(start + timedelta(seconds=perf.duration)),
            "duration": perf.duration,
            "externalName": translations(perf.name),
            "logicalConfigurationId": perf.logical_configuration_id,
            "venue": self._venue(perf),
            "seatCategories": self.categories_of_configuration[perf.logical_configuration_id],
            "contingentIds": [],
            "prices": self.prices_of_performance.get(perf.id, orjson.Fragment(b"[]")),
        }

    def _item(self, item: Any) -> Json:
        rendered: Json = {
            "itemId": item.id,
            "code": item.code,
            "externalName": translations(item.name),
            "itemType": item.kind,
            "capacity": item.capacity,
            "validityDays": item.validity_days,
            "itemPrices": self.prices_of_item[item.id],
        }
        if item.kind == "TIMESLOT":
            rendered["timeslots"] = self.timeslots_of_item[item.id]
        return rendered

    def _product(
        self,
        product: Any,
        period: Any,
        performances: list[Any],
        composed: list[Any],
        items: list[Any],
        contingents: set[int],
    ) -> Json:
        rendered: Json = {
            "id": product.id,
            "code": product.code,
            "productFamilyType": product.family,
            "productFamilySubType": product.sub_type,
            "state": product.state,
            "vatCodeId": product.vat_code_id,
            "externalName": translations(product.name),
            "externalDescription": translations(product.description),
            "alertRatio": product.alert_ratio,
            "contactRequired": product.contact_required,
            "externalUrl": product.external_url,
            "media": [
                {"url": m["url"], "altText": translations(m["alt"])} for m in product.media or []
            ],
            "theme": self._theme(product.theme_id),
            "subTheme": self._theme(product.sub_theme_id),
            "salesPeriods": [
                {
                    "salesChannelId": period.sales_channel_id,
                    "start": _iso(period.start),
                    "end": _iso(period.end),
                }
            ],
        }
        family = ProductFamily(product.family)
        if family == ProductFamily.SINGLE_ENTRY:
            rendered["event"] = {
                "id": product.id,
                "performances": [self._performance(p, contingents) for p in performances],
            }
        elif family in (ProductFamily.SEASONTICKET, ProductFamily.PACKAGE):
            rendered["composedProduct"] = {
                "performanceIds": [p.id for p in composed],
                "performances": [
                    {"id": p.id, "code": p.code, "productId": p.product_id, "start": _iso(p.start)}
                    for p in composed
                ],
                "prices": self.prices_of_product[product.id],
            }
        else:
            key = {ProductFamily.PASS: "pass", ProductFamily.MEMBERSHIP: "membership"}.get(
                family, "simpleProduct"
            )
            rendered[key] = {"items": [self._item(i) for i in items]}
        return rendered


def _iso(value: datetime) -> str:
    return as_utc(value).isoformat()


SEASON_FIELDS = ("id", "code", "state", "start", "end", "externalName")


def product_summary(season: Json, product: Json) -> Json:
    """The short form of a product (``getCatalog``, searches); ``performanceStarts`` lists the
    starts of its performances, a season ticket's included."""
    starts = [
        p["start"]
        for p in (product.get("event") or {}).get("performances", [])
        + (product.get("composedProduct") or {}).get("performances", [])
    ]
    return {
        "id": product["id"],
        "code": product["code"],
        "productFamilyType": product["productFamilyType"],
        "productFamilySubType": product["productFamilySubType"],
        "state": product["state"],
        "seasonId": season["id"],
        "seasonCode": season["code"],
        "externalName": product["externalName"],
        "theme": product["theme"],
        "subTheme": product["subTheme"],
        "salesPeriods": product["salesPeriods"],
        "contactRequired": product["contactRequired"],
        "firstPerformanceStart": min(starts, default=None),
        "lastPerformanceStart": max(starts, default=None),
        "performanceCount": len(starts),
        "performanceStarts": starts,
    }


def summarize(document: Json) -> Json:
    """Every season with its products' summaries: what ``getCatalog``, ``getPOSConfig`` and
    ``searchProductsByCriteria`` read, so they never parse the whole catalog."""
    return {
        "seasons": [
            {
                **{k: season[k] for k in SEASON_FIELDS},
                "products": [product_summary(season, p) for p in season["products"]],
            }
            for season in document["seasons"]
        ]
    }
