"""Writes a validated setup document into the catalog tables, matching rows by business code.

Contract: the caller owns the transaction; this module writes everything or raises. Ids of rows
whose code stays are kept, so partners' caches stay valid across re-imports.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.catalog import db
from billetterie.catalog.models import ItemKind, ProductFamily
from billetterie.catalog.setupfile import (
    PriceGrid,
    SetupDocument,
    TariffPrices,
    block_rows,
    parse_selector,
    schedule_slots,
)
from billetterie.shared.db import Sync


class _Importer:
    def __init__(self, connection: AsyncConnection, doc: SetupDocument, now: datetime) -> None:
        self.connection = connection
        self.doc = doc
        self.now = now
        self.zone = ZoneInfo(doc.organization.timeZone)
        self.main_language = doc.organization.mainLanguage

    def text(self, value: dict[str, str] | None) -> dict[str, str]:
        if not value:
            return {}
        return {(k or self.main_language): v for k, v in value.items()}

    def when(self, value: datetime) -> datetime:
        """Naive times in the file are the organization's local time."""
        return value.replace(tzinfo=self.zone) if value.tzinfo is None else value

    async def run(self) -> tuple[int, int]:
        doc = self.doc
        conn = self.connection
        row = (
            await conn.execute(
                sa.select(db.institution.c.id).where(db.institution.c.code == doc.institution.code)
            )
        ).first()
        values = {"name": self.text(doc.institution.name), "currency": doc.institution.currency}
        if row is None:
            institution_id = (
                await conn.execute(
                    sa.insert(db.institution)
                    .values(code=doc.institution.code, setup_version=0, **values)
                    .returning(db.institution.c.id)
                )
            ).scalar_one()
        else:
            institution_id = row[0]
            await conn.execute(
                sa.update(db.institution)
                .where(db.institution.c.id == institution_id)
                .values(**values)
            )
        sync = Sync(conn, institution_id)
        self.sync = sync

        org = doc.organization
        organizations = await sync.rows(
            db.organization,
            ("code",),
            [
                {
                    "code": org.code,
                    "name": self.text(org.name),
                    "time_zone": org.timeZone,
                    "main_language": org.mainLanguage,
                    "languages": list(org.languages),
                }
            ],
        )
        organization_id = organizations[(org.code,)]

        payment_methods = await sync.rows(
            db.payment_method,
            ("code",),
            [
                {
                    "code": p.code,
                    "name": self.text(p.name),
                    "payment_type": p.type.value,
                    "for_payment": p.forPayment,
                    "for_reimbursement": p.forReimbursement,
                }
                for p in doc.paymentMethods
            ],
        )
        channels = await sync.rows(
            db.sales_channel,
            ("code",),
            [
                {
                    "code": c.code,
                    "name": self.text(c.name),
                    "channel_type": c.type.value,
                    "organization_id": organization_id,
                }
                for c in doc.salesChannels
            ],
        )
        points_of_sale = await sync.rows(
            db.point_of_sale,
            ("code",),
            [
                {
                    "code": p.code,
                    "sales_channel_id": channels[(c.code,)],
                    "number": p.number,
                    "name": self.text(p.name),
                    "pos_type": p.type,
                    "order_abandon_delay": p.orderAbandonDelay,
                    "seat_selection_mode": p.seatSelectionMode.value,
                    "split_seating_allowed": p.splitSeatingAllowed,
                    "max_seats_per_performance": p.maxSeatsPerPerformance,
                    "contact_login_mode": p.contactLoginMode.value,
                    "guest_login_available": p.guestLoginAvailable,
                    "contact_account_creation_allowed": p.contactAccountCreationAllowed,
                    "cookie_domain": p.cookieDomain,
                    "languages": list(p.languages or org.languages),
                    "external_urls": p.externalUrls.model_dump(exclude_none=True),
                    "parameters": dict(p.parameters),
                }
                for c in doc.salesChannels
                for p in c.pointsOfSale
            ],
        )
        await sync.rows(
            db.point_of_sale_payment_method,
            ("point_of_sale_id", "payment_method_id"),
            [
                {
                    "point_of_sale_id": points_of_sale[(p.code,)],
                    "payment_method_id": payment_methods[(m,)],
                    "rank": rank,
                }
                for c in doc.salesChannels
                for p in c.pointsOfSale
                for rank, m in enumerate(p.paymentMethods, start=1)
            ],
        )

        vat_codes = await sync.rows(
            db.vat_code,
            ("code",),
            [
                {"code": v.code, "name": self.text(v.name), "rate": v.rate, "country": v.country}
                for v in doc.vatCodes
            ],
        )
        seasons = await sync.rows(
            db.season,
            ("code",),
            [
                {
                    "code": s.code,
                    "name": self.text(s.name),
                    "state": s.state.value,
                    "start": self.when(s.start),
                    "end": self.when(s.end),
                }
                for s in doc.seasons
            ],
        )
        categories = await sync.rows(
            db.audience_category,
            ("season_id", "code"),
            [
                {
                    "season_id": seasons[(a.season,)],
                    "code": a.code,
                    "name": self.text(a.name),
                    "main_category": a.mainCategory.value,
                    "secondary_category": a.secondaryCategory.value,
                    "rank": rank,
                }
                for rank, a in enumerate(doc.audienceCategories, start=1)
            ],
        )
        tariff_rows = await sync.rows(
            db.audience_sub_category,
            ("audience_category_id", "code"),
            [
                {
                    "audience_category_id": categories[(seasons[(a.season,)], a.code)],
                    "code": t.code,
                    "name": self.text(t.name),
                    "kind": t.kind.value,
                    "cross_seat_category": t.crossSeatCategory,
                    "required_codes": list(t.requires),
                    "rank": rank,
                }
                for a in doc.audienceCategories
                for rank, t in enumerate(a.tariffs, start=1)
            ],
        )
        # tariff codes are unique within a season
        self.tariffs: dict[tuple[str, str], int] = {}
        for a in doc.audienceCategories:
            for t in a.tariffs:
                category_id = categories[(seasons[(a.season,)], a.code)]
                self.tariffs[(a.season, t.code)] = tariff_rows[(category_id, t.code)]
        levels = await sync.rows(
            db.price_level,
            ("season_id", "code"),
            [
                {
                    "season_id": seasons[(p.season,)],
                    "code": p.code,
                    "name": self.text(p.name),
                    "rank": rank,
                }
                for rank, p in enumerate(doc.priceLevels, start=1)
            ],
        )
        self.levels = {
            (p.season, p.code): levels[(seasons[(p.season,)], p.code)] for p in doc.priceLevels
        }

        # codes are unique across both levels: a theme that changes level is updated, not re-created
        column = db.theme.c
        theme_codes = [x.code for x in doc.themes]
        sub_theme_codes = [s.code for x in doc.themes for s in x.subThemes]
        themes = await sync.rows(
            db.theme,
            ("code",),
            [{"code": t.code, "name": self.text(t.name), "parent_id": None} for t in doc.themes],
            where=sa.or_(
                column.code.in_(theme_codes),
                sa.and_(column.parent_id.is_(None), column.code.not_in(sub_theme_codes)),
            ),
        )
        sub_themes = await sync.rows(
            db.theme,
            ("code",),
            [
                {"code": s.code, "name": self.text(s.name), "parent_id": themes[(t.code,)]}
                for t in doc.themes
                for s in t.subThemes
            ],
            where=sa.or_(
                column.code.in_(sub_theme_codes),
                sa.and_(column.parent_id.is_not(None), column.code.not_in(theme_codes)),
            ),
        )
        all_themes = {k[0]: v for k, v in {**themes, **sub_themes}.items()}

        await self._venues()
        contingents = await sync.rows(
            db.contingent,
            ("code",),
            [{"code": c.code, "name": self.text(c.name)} for c in doc.contingents],
        )
        await sync.rows(
            db.contingent_sales_channel,
            ("contingent_id", "sales_channel_id"),
            [
                {"contingent_id": contingents[(c.code,)], "sales_channel_id": channels[(ch,)]}
                for c in doc.contingents
                for ch in c.salesChannels
            ],
        )
        self.contingents = {k[0]: v for k, v in contingents.items()}
        await self._products(seasons, vat_codes, all_themes, channels)
        await sync.delete_stale()
        return institution_id, sync.changes

    async def _venues(self) -> None:
        sync = self.sync
        doc = self.doc
        sites = await sync.rows(
            db.site,
            ("code",),
            [
                {
                    "code": s.code,
                    "name": self.text(s.name),
                    "address": s.address.model_dump(exclude_none=True),
                }
                for s in doc.venues
            ],
        )
        spaces = await sync.rows(
            db.space,
            ("site_id", "code"),
            [
                {"site_id": sites[(s.code,)], "code": sp.code, "name": self.text(sp.name)}
                for s in doc.venues
                for sp in s.spaces
            ],
        )
        physicals = await sync.rows(
            db.physical_configuration,
            ("space_id", "code"),
            [
                {
                    "space_id": spaces[(sites[(s.code,)], sp.code)],
                    "code": pc.code,
                    "name": self.text(pc.name),
                    "stage_x": pc.stage.x,
                    "stage_y": pc.stage.y,
                }
                for s in doc.venues
                for sp in s.spaces
                for pc in sp.configurations
            ],
        )
        layout = [
            (
                spaces[(sites[(s.code,)], sp.code)],
                physicals[(spaces[(sites[(s.code,)], sp.code)], pc.code)],
                pc,
            )
            for s in doc.venues
            for sp in s.spaces
            for pc in sp.configurations
        ]
        areas = await sync.rows(
            db.area,
            ("physical_configuration_id", "code"),
            [
                {"physical_configuration_id": pc_id, "code": a.code, "name": self.text(a.name)}
                for _, pc_id, pc in layout
                for a in pc.areas
            ],
        )
        blocks = await sync.rows(
            db.block,
            ("area_id", "code"),
            [
                {
                    "area_id": areas[(pc_id, a.code)],
                    "code": b.code,
                    "name": self.text(b.name or {"": b.code}),
                }
                for _, pc_id, pc in layout
                for a in pc.areas
                for b in a.blocks
            ],
        )
        seat_rows: list[dict[str, Any]] = []
        for _, pc_id, pc in layout:
            placed: list[dict[str, Any]] = []
            for a in pc.areas:
                for b in a.blocks:
                    block_id = blocks[(areas[(pc_id, a.code)], b.code)]
                    for row_index, (row, numbers) in enumerate(block_rows(b)):
                        for seat_index, number in enumerate(numbers):
                            placed.append(
                                {
                                    "physical_configuration_id": pc_id,
                                    "block_id": block_id,
                                    "row": row,
                                    "number": number,
                                    "x": round(b.origin.x + seat_index * b.seatSpacing, 3),
                                    "y": round(b.origin.y + row_index * b.rowSpacing, 3),
                                }
                            )
            # best-available rank: closest to the stage first, ties by position
            placed.sort(
                key=lambda s: (math.hypot(s["x"] - pc.stage.x, s["y"] - pc.stage.y), s["y"], s["x"])
            )
            for rank, seat in enumerate(placed, start=1):
                seat["rank"] = rank
            seat_rows.extend(placed)
        seats = await sync.rows(db.seat, ("block_id", "row", "number"), seat_rows)

        logicals = await sync.rows(
            db.logical_configuration,
            ("physical_configuration_id", "code"),
            [
                {"physical_configuration_id": pc_id, "code": lc.code, "name": self.text(lc.name)}
                for _, pc_id, pc in layout
                for lc in pc.logicalConfigurations
            ],
        )
        seat_categories = await sync.rows(
            db.seat_category,
            ("logical_configuration_id", "code"),
            [
                {
                    "logical_configuration_id": logicals[(pc_id, lc.code)],
                    "code": c.code,
                    "name": self.text(c.name),
                    "rank": rank,
                    "color": c.color,
                }
                for _, pc_id, pc in layout
                for lc in pc.logicalConfigurations
                for rank, c in enumerate(lc.seatCategories, start=1)
            ],
        )
        assignments: list[dict[str, Any]] = []
        zones: list[dict[str, Any]] = []
        self.configurations: dict[str, tuple[int, int, dict[str, int]]] = {}
        for space_id, pc_id, pc in layout:
            rows_of = {
                (a.code, b.code): (areas[(pc_id, a.code)], b, [r for r, _ in block_rows(b)])
                for a in pc.areas
                for b in a.blocks
            }
            for lc in pc.logicalConfigurations:
                lc_id = logicals[(pc_id, lc.code)]
                cats = {c.code: seat_categories[(lc_id, c.code)] for c in lc.seatCategories}
                self.configurations[lc.code] = (space_id, lc_id, cats)
                for c in lc.seatCategories:
                    for selector in c.seats:
                        area_code, block_code, rows_selected = parse_selector(selector)
                        area_id, b, all_rows = rows_of[(area_code, block_code)]
                        block_id = blocks[(area_id, b.code)]
                        wanted = set(rows_selected or all_rows)
                        for row, numbers in block_rows(b):
                            if row in wanted:
                                assignments.extend(
                                    {
                                        "logical_configuration_id": lc_id,
                                        "seat_id": seats[(block_id, row, n)],
                                        "seat_category_id": cats[c.code],
                                    }
                                    for n in numbers
                                )
                zones.extend(
                    {
                        "logical_configuration_id": lc_id,
                        "code": z.code,
                        "name": self.text(z.name),
                        "seat_category_id": cats[z.seatCategory],
                        "capacity": z.capacity,
                    }
                    for z in lc.zones
                )
        await sync.rows(db.seat_assignment, ("logical_configuration_id", "seat_id"), assignments)
        await sync.rows(db.zone, ("logical_configuration_id", "code"), zones)

    def _grid_rows(
        self,
        season: str,
        grid: PriceGrid | TariffPrices,
        categories: dict[str, int] | None,
        **ids: int | None,
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        per_category: dict[str | None, Any] = (
            {None: grid} if categories is None else {k: v for k, v in grid.items()}
        )
        for category, tariffs in per_category.items():
            for tariff, amount in tariffs.items():
                levels = amount if isinstance(amount, dict) else {None: amount}
                for level, value in levels.items():
                    rows.append(
                        {
                            "performance_id": None,
                            "product_item_id": None,
                            **ids,
                            "seat_category_id": None
                            if categories is None
                            else categories[str(category)],
                            "audience_sub_category_id": self.tariffs[(season, tariff)],
                            "price_level_id": None
                            if level is None
                            else self.levels[(season, level)],
                            "amount": value,
                        }
                    )
        return rows

    async def _products(
        self,
        seasons: dict[Any, int],
        vat_codes: dict[Any, int],
        themes: dict[str, int],
        channels: dict[Any, int],
    ) -> None:
        sync = self.sync
        doc = self.doc
        products = await sync.rows(
            db.product,
            ("code",),
            [
                {
                    "code": p.code,
                    "season_id": seasons[(p.season,)],
                    "vat_code_id": vat_codes[(p.vatCode,)],
                    "theme_id": themes.get(p.theme) if p.theme else None,
                    "sub_theme_id": themes.get(p.subTheme) if p.subTheme else None,
                    "family": p.family.value,
                    "sub_type": p.subType,
                    "state": p.state.value,
                    "name": self.text(p.name),
                    "description": self.text(p.description),
                    "alert_ratio": p.alertRatio,
                    "contact_required": p.contactRequired,
                    "external_url": p.externalUrl,
                    "media": [{"url": m.url, "alt": self.text(m.alt)} for m in p.media],
                    "rank": rank,
                }
                for rank, p in enumerate(doc.products, start=1)
            ],
        )
        await sync.rows(
            db.sales_period,
            ("product_id", "sales_channel_id"),
            [
                {
                    "product_id": products[(p.code,)],
                    "sales_channel_id": channels[(s.salesChannel,)],
                    "start": self.when(s.start),
                    "end": self.when(s.end),
                }
                for p in doc.products
                for s in p.salesPeriods
            ],
        )
        performance_rows: list[dict[str, Any]] = []
        for p in doc.products:
            if p.event is None or p.family != ProductFamily.SINGLE_ENTRY:
                continue
            for perf in p.event.performances:
                space_id, lc_id, _ = self.configurations[
                    perf.configuration or p.event.configuration or ""
                ]
                performance_rows.append(
                    {
                        "code": perf.code,
                        "product_id": products[(p.code,)],
                        "space_id": space_id,
                        "logical_configuration_id": lc_id,
                        "state": perf.state.value,
                        "start": self.when(perf.start),
                        "duration": perf.duration or p.event.duration,
                        "name": self.text(perf.name) or None,
                    }
                )
        performances = await sync.rows(db.performance, ("code",), performance_rows)
        item_rows: list[dict[str, Any]] = []
        for p in doc.products:
            for item in p.items or []:
                item_rows.append(
                    {
                        "product_id": products[(p.code,)],
                        "code": item.code,
                        "name": self.text(item.name),
                        "kind": item.kind.value,
                        "capacity": item.capacity,
                        "validity_days": item.validityDays,
                        "schedule": item.schedule.model_dump(mode="json")
                        if item.schedule
                        else None,
                    }
                )
        items = await sync.rows(db.product_item, ("product_id", "code"), item_rows)

        timeslots: list[dict[str, Any]] = []
        composed: list[dict[str, Any]] = []
        prices: list[dict[str, Any]] = []
        allocations: list[dict[str, Any]] = []
        for p in doc.products:
            product_id = products[(p.code,)]
            if p.event is not None and p.family == ProductFamily.SINGLE_ENTRY:
                for perf in p.event.performances:
                    _, _, cats = self.configurations[
                        perf.configuration or p.event.configuration or ""
                    ]
                    performance_id = performances[(perf.code,)]
                    grid = perf.prices if perf.prices is not None else p.event.prices
                    prices += self._grid_rows(
                        p.season,
                        grid or {},
                        cats,
                        product_id=product_id,
                        performance_id=performance_id,
                    )
                    for a in (
                        perf.allocations if perf.allocations is not None else p.event.allocations
                    ):
                        allocations.append(
                            {
                                "contingent_id": self.contingents[a.contingent],
                                "performance_id": performance_id,
                                "seat_category_id": cats[a.seatCategory],
                                "quantity": a.quantity,
                            }
                        )
            if p.composed is not None:
                categories: dict[str, int] = {}
                for code in p.composed.performances:
                    composed.append(
                        {"product_id": product_id, "performance_id": performances[(code,)]}
                    )
                for other in doc.products:  # seat categories of the first performance's plan
                    for perf in other.event.performances if other.event else []:
                        if perf.code == p.composed.performances[0]:
                            assert other.event is not None
                            categories = self.configurations[
                                perf.configuration or other.event.configuration or ""
                            ][2]
                prices += self._grid_rows(
                    p.season, p.composed.prices, categories, product_id=product_id
                )
            for item in p.items or []:
                item_id = items[(product_id, item.code)]
                prices += self._grid_rows(
                    p.season, item.prices, None, product_id=product_id, product_item_id=item_id
                )
                if item.kind != ItemKind.TIMESLOT:
                    continue
                slots = [(self.when(t.start), self.when(t.end), t.quota) for t in item.timeslots]
                if item.schedule is not None:
                    slots += [
                        (s, e, item.schedule.quota)
                        for s, e in schedule_slots(item.schedule, self.zone)
                    ]
                timeslots.extend(
                    {"product_item_id": item_id, "start": s, "end": e, "quota": q}
                    for s, e, q in slots
                )
        await sync.rows(db.timeslot, ("product_item_id", "start"), timeslots)
        await sync.rows(db.composed_product_performance, ("product_id", "performance_id"), composed)
        await sync.rows(
            db.price,
            (
                "product_id",
                "performance_id",
                "product_item_id",
                "seat_category_id",
                "audience_sub_category_id",
                "price_level_id",
            ),
            prices,
        )
        await sync.rows(
            db.contingent_allocation,
            ("contingent_id", "performance_id", "seat_category_id"),
            allocations,
        )


async def write_document(
    connection: AsyncConnection, document: SetupDocument, now: datetime
) -> tuple[int, int]:
    """Write ``document`` (all but its operators, which belong to identity); return
    ``(institution_id, number of rows changed)``."""
    return await _Importer(connection, document, now).run()
