"""Writes an institution's configuration back as a setup document.

The export is the import's inverse: importing it into an empty database gives the same
catalog, and re-importing it where it came from changes nothing. Seating plans are written back
as compact rows; timeslots generated from a schedule are written as the schedule.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.catalog import db
from billetterie.catalog.services import institution_id_by_code, list_rows
from billetterie.shared.money import format_amount

Json = dict[str, Any]


def _compact(labels: list[str]) -> str:
    """``["1", "2", "3", "7"]`` -> ``"1-3,7"``; letters likewise; anything else listed."""
    parts: list[str] = []
    i = 0
    while i < len(labels):
        j = i
        while j + 1 < len(labels) and _next(labels[j]) == labels[j + 1]:
            j += 1
        parts.append(labels[i] if i == j else f"{labels[i]}-{labels[j]}")
        i = j + 1
    return ",".join(parts)


def _next(label: str) -> str | None:
    if label.isdigit() and not (len(label) > 1 and label.startswith("0")):
        return str(int(label) + 1)
    if len(label) == 1 and label.isalpha() and label not in "zZ":
        return chr(ord(label) + 1)
    return None


class _Exporter:
    def __init__(self, conn: AsyncConnection, institution_id: int) -> None:
        self.conn = conn
        self.institution_id = institution_id

    async def rows(self, table: str, **filters: Any) -> list[Any]:
        return await list_rows(self.conn, table, self.institution_id, **filters)

    def when(self, value: datetime) -> str:
        return value.astimezone(self.zone).isoformat()

    async def run(self) -> Json:
        institution = await self._institution()
        [organization] = await self.rows("organization")
        self.zone = ZoneInfo(organization.time_zone)
        payment_methods = await self.rows("payment_method")
        method_code = {m.id: m.code for m in payment_methods}
        channels = await self.rows("sales_channel")
        points_of_sale = await self.rows("point_of_sale")
        links = await self.rows("point_of_sale_payment_method")
        methods_of: dict[int, list[Any]] = defaultdict(list)
        for link in sorted(links, key=lambda x: x.rank):
            methods_of[link.point_of_sale_id].append(method_code[link.payment_method_id])
        channel_code = {c.id: c.code for c in channels}
        seasons = await self.rows("season")
        season_code = {s.id: s.code for s in seasons}
        categories = await self.rows("audience_category")
        tariffs = await self.rows("audience_sub_category")
        levels = await self.rows("price_level")
        themes = await self.rows("theme")
        theme_code = {t.id: t.code for t in themes}
        vat_codes = await self.rows("vat_code")
        vat_code = {v.id: v.code for v in vat_codes}
        document: Json = {
            "institution": {
                "code": institution.code,
                "name": institution.name,
                "currency": institution.currency,
            },
            "organization": {
                "code": organization.code,
                "name": organization.name,
                "timeZone": organization.time_zone,
                "mainLanguage": organization.main_language,
                "languages": organization.languages,
            },
            "paymentMethods": [
                {
                    "code": m.code,
                    "name": m.name,
                    "type": m.payment_type,
                    "forPayment": m.for_payment,
                    "forReimbursement": m.for_reimbursement,
                }
                for m in payment_methods
            ],
            "salesChannels": [
                {
                    "code": c.code,
                    "name": c.name,
                    "type": c.channel_type,
                    "pointsOfSale": [
                        self._point_of_sale(p, methods_of[p.id])
                        for p in points_of_sale
                        if p.sales_channel_id == c.id
                    ],
                }
                for c in channels
            ],
            "vatCodes": [
                {"code": v.code, "name": v.name, "rate": v.rate, "country": v.country}
                for v in vat_codes
            ],
            "seasons": [
                {
                    "code": s.code,
                    "name": s.name,
                    "state": s.state,
                    "start": self.when(s.start),
                    "end": self.when(s.end),
                }
                for s in seasons
            ],
            "audienceCategories": [
                {
                    "code": a.code,
                    "season": season_code[a.season_id],
                    "name": a.name,
                    "mainCategory": a.main_category,
                    "secondaryCategory": a.secondary_category,
                    "tariffs": [
                        {
                            "code": t.code,
                            "name": t.name,
                            "kind": t.kind,
                            "crossSeatCategory": t.cross_seat_category,
                            "requires": t.required_codes,
                        }
                        for t in sorted(tariffs, key=lambda t: (t.rank, t.id))
                        if t.audience_category_id == a.id
                    ],
                }
                for a in sorted(categories, key=lambda a: (a.rank, a.id))
            ],
            "priceLevels": [
                {"code": p.code, "season": season_code[p.season_id], "name": p.name}
                for p in sorted(levels, key=lambda p: (p.rank, p.id))
            ],
            "themes": [
                {
                    "code": t.code,
                    "name": t.name,
                    "subThemes": [
                        {"code": s.code, "name": s.name} for s in themes if s.parent_id == t.id
                    ],
                }
                for t in themes
                if t.parent_id is None
            ],
        }
        document["venues"] = await self._venues()
        contingents = await self.rows("contingent")
        contingent_channels = await self.rows("contingent_sales_channel")
        document["contingents"] = [
            {
                "code": c.code,
                "name": c.name,
                "salesChannels": [
                    channel_code[x.sales_channel_id]
                    for x in contingent_channels
                    if x.contingent_id == c.id
                ],
            }
            for c in contingents
        ]
        self.contingent_code = {c.id: c.code for c in contingents}
        tariff_code = {t.id: t.code for t in tariffs}
        level_code = {lv.id: lv.code for lv in levels}
        document["products"] = await self._products(
            season_code, vat_code, theme_code, channel_code, tariff_code, level_code
        )
        return document

    async def _institution(self) -> Any:
        return (
            await self.conn.execute(
                sa.select(db.institution).where(db.institution.c.id == self.institution_id)
            )
        ).one()

    def _point_of_sale(self, p: Any, methods: list[str]) -> Json:
        return _drop_none(
            {
                "code": p.code,
                "number": p.number,
                "name": p.name,
                "type": p.pos_type,
                "paymentMethods": methods,
                "orderAbandonDelay": p.order_abandon_delay,
                "seatSelectionMode": p.seat_selection_mode,
                "splitSeatingAllowed": p.split_seating_allowed,
                "maxSeatsPerPerformance": p.max_seats_per_performance,
                "contactLoginMode": p.contact_login_mode,
                "guestLoginAvailable": p.guest_login_available,
                "contactAccountCreationAllowed": p.contact_account_creation_allowed,
                "cookieDomain": p.cookie_domain,
                "languages": p.languages,
                "externalUrls": p.external_urls,
                "parameters": p.parameters,
            }
        )

    async def _venues(self) -> list[Json]:
        sites = await self.rows("site")
        spaces = await self.rows("space")
        physicals = await self.rows("physical_configuration")
        areas = await self.rows("area")
        blocks = await self.rows("block")
        seats = await self.rows("seat")
        logicals = await self.rows("logical_configuration")
        seat_categories = await self.rows("seat_category")
        assignments = await self.rows("seat_assignment")
        zones = await self.rows("zone")
        seats_of: dict[int, list[Any]] = defaultdict(list)
        for seat in seats:
            seats_of[seat.block_id].append(seat)
        category_of_seat: dict[tuple[int, int], int] = {
            (a.logical_configuration_id, a.seat_id): a.seat_category_id for a in assignments
        }
        category_code = {c.id: c.code for c in seat_categories}
        self.configuration_code = {lc.id: lc.code for lc in logicals}
        self.seat_category_code = category_code

        def block_spec(block: Any) -> Json:
            block_seats = sorted(seats_of[block.id], key=lambda s: (s.y, s.x))
            rows: dict[str, list[Any]] = {}
            for seat in block_seats:
                rows.setdefault(seat.row, []).append(seat)
            origin_x = min((s.x for s in block_seats), default=0.0)
            origin_y = min((s.y for s in block_seats), default=0.0)
            row_list = list(rows.items())
            seat_spacing = next((round(r[1].x - r[0].x, 3) for _, r in row_list if len(r) > 1), 1.0)
            row_spacing = (
                round(row_list[1][1][0].y - row_list[0][1][0].y, 3) if len(row_list) > 1 else 1.0
            )
            groups: list[tuple[list[str], str]] = []
            for row, row_seats in row_list:
                numbers = _compact([s.number for s in row_seats])
                if groups and groups[-1][1] == numbers:
                    groups[-1][0].append(row)
                else:
                    groups.append(([row], numbers))
            spec: Json = {"code": block.code, "name": block.name}
            if len(groups) == 1:
                spec["rows"] = _compact(groups[0][0])
                spec["seats"] = groups[0][1]
            else:
                spec["rowSeats"] = {_compact(r): s for r, s in groups}
            spec["origin"] = {"x": origin_x, "y": origin_y}
            spec["seatSpacing"] = seat_spacing or 1.0
            spec["rowSpacing"] = row_spacing or 1.0
            return spec

        def selectors(logical_id: int, physical_id: int, category_id: int) -> list[str]:
            found: list[str] = []
            for area in (a for a in areas if a.physical_configuration_id == physical_id):
                for block in (b for b in blocks if b.area_id == area.id):
                    rows: dict[str, set[int | None]] = {}
                    for seat in sorted(seats_of[block.id], key=lambda s: (s.y, s.x)):
                        rows.setdefault(seat.row, set()).add(
                            category_of_seat.get((logical_id, seat.id))
                        )
                    mine = [r for r, cats in rows.items() if cats == {category_id}]
                    if not mine:
                        continue
                    if len(mine) == len(rows):
                        found.append(f"{area.code}/{block.code}")
                    else:
                        found.append(f"{area.code}/{block.code} rows {_compact(mine)}")
            return found

        venues = []
        for site in sites:
            site_spaces = []
            for space in (s for s in spaces if s.site_id == site.id):
                configurations = []
                for pc in (p for p in physicals if p.space_id == space.id):
                    configurations.append(
                        {
                            "code": pc.code,
                            "name": pc.name,
                            "stage": {"x": pc.stage_x, "y": pc.stage_y},
                            "areas": [
                                {
                                    "code": a.code,
                                    "name": a.name,
                                    "blocks": [block_spec(b) for b in blocks if b.area_id == a.id],
                                }
                                for a in areas
                                if a.physical_configuration_id == pc.id
                            ],
                            "logicalConfigurations": [
                                {
                                    "code": lc.code,
                                    "name": lc.name,
                                    "seatCategories": [
                                        _drop_none(
                                            {
                                                "code": c.code,
                                                "name": c.name,
                                                "color": c.color,
                                                "seats": selectors(lc.id, pc.id, c.id),
                                            }
                                        )
                                        for c in sorted(
                                            seat_categories, key=lambda c: (c.rank, c.id)
                                        )
                                        if c.logical_configuration_id == lc.id
                                    ],
                                    "zones": [
                                        {
                                            "code": z.code,
                                            "name": z.name,
                                            "seatCategory": category_code[z.seat_category_id],
                                            "capacity": z.capacity,
                                        }
                                        for z in zones
                                        if z.logical_configuration_id == lc.id
                                    ],
                                }
                                for lc in logicals
                                if lc.physical_configuration_id == pc.id
                            ],
                        }
                    )
                site_spaces.append(
                    {"code": space.code, "name": space.name, "configurations": configurations}
                )
            venues.append(
                {
                    "code": site.code,
                    "name": site.name,
                    "address": site.address,
                    "spaces": site_spaces,
                }
            )
        return venues

    async def _products(
        self,
        season_code: dict[int, str],
        vat_code: dict[int, str],
        theme_code: dict[int, str],
        channel_code: dict[int, str],
        tariff_code: dict[int, str],
        level_code: dict[int, str],
    ) -> list[Json]:
        products = sorted(await self.rows("product"), key=lambda p: (p.rank, p.id))
        periods = await self.rows("sales_period")
        performances = sorted(await self.rows("performance"), key=lambda p: (p.start, p.id))
        items = await self.rows("product_item")
        timeslots = await self.rows("timeslot")
        composed = await self.rows("composed_product_performance")
        prices = await self.rows("price")
        allocations = await self.rows("contingent_allocation")
        performance_code = {p.id: p.code for p in performances}

        def grid(rows: list[Any], with_category: bool) -> Json:
            result: Json = {}
            for price in rows:
                target = result
                if with_category:
                    target = result.setdefault(
                        self.seat_category_code.get(price.seat_category_id, ""), {}
                    )
                tariff = tariff_code[price.audience_sub_category_id]
                amount = format_amount(price.amount)
                if price.price_level_id is None:
                    target[tariff] = amount
                else:
                    target.setdefault(tariff, {})[level_code[price.price_level_id]] = amount
            return result

        prices_of_performance: dict[int, list[Any]] = defaultdict(list)
        prices_of_item: dict[int, list[Any]] = defaultdict(list)
        prices_of_product: dict[int, list[Any]] = defaultdict(list)
        for price in prices:
            if price.performance_id is not None:
                prices_of_performance[price.performance_id].append(price)
            elif price.product_item_id is not None:
                prices_of_item[price.product_item_id].append(price)
            else:
                prices_of_product[price.product_id].append(price)

        exported = []
        for product in products:
            spec: Json = {
                "code": product.code,
                "family": product.family,
                "subType": product.sub_type,
                "season": season_code[product.season_id],
                "state": product.state,
                "name": product.name,
                "description": product.description or None,
                "alertRatio": product.alert_ratio,
                "vatCode": vat_code[product.vat_code_id],
                "theme": theme_code.get(product.theme_id) if product.theme_id else None,
                "subTheme": theme_code.get(product.sub_theme_id) if product.sub_theme_id else None,
                "contactRequired": product.contact_required,
                "externalUrl": product.external_url,
                "media": [{"url": m["url"], "alt": m["alt"]} for m in product.media or []] or None,
                "salesPeriods": [
                    {
                        "salesChannel": channel_code[p.sales_channel_id],
                        "start": self.when(p.start),
                        "end": self.when(p.end),
                    }
                    for p in periods
                    if p.product_id == product.id
                ],
            }
            mine = [p for p in performances if p.product_id == product.id]
            if mine:
                spec["event"] = {
                    "performances": [
                        _drop_none(
                            {
                                "code": p.code,
                                "start": self.when(p.start),
                                "duration": p.duration,
                                "state": p.state,
                                "configuration": self.configuration_code[
                                    p.logical_configuration_id
                                ],
                                "name": p.name or None,
                                "prices": grid(prices_of_performance[p.id], True),
                                "allocations": [
                                    {
                                        "contingent": self.contingent_code[a.contingent_id],
                                        "seatCategory": self.seat_category_code[a.seat_category_id],
                                        "quantity": a.quantity,
                                    }
                                    for a in allocations
                                    if a.performance_id == p.id
                                ],
                            }
                        )
                        for p in mine
                    ]
                }
            members = [c.performance_id for c in composed if c.product_id == product.id]
            if members:
                spec["composed"] = {
                    "performances": [performance_code[m] for m in members],  # the catalog's order
                    "prices": grid(prices_of_product[product.id], True),
                }
            product_items = [i for i in items if i.product_id == product.id]
            if product_items or product.family in {
                "PASS",
                "MEMBERSHIP",
                "SERVICE",
                "GOODS",
                "TRANSPORT",
                "HOSPITALITY",
            }:
                spec["items"] = [
                    self._item(i, prices_of_item[i.id], timeslots, grid) for i in product_items
                ]
            exported.append(_drop_none(spec))
        return exported

    def _item(self, item: Any, prices: list[Any], timeslots: list[Any], grid: Any) -> Json:
        spec: Json = {
            "code": item.code,
            "name": item.name,
            "kind": item.kind,
            "capacity": item.capacity,
            "validityDays": item.validity_days,
            "prices": grid(prices, False),
        }
        if item.schedule is not None:
            spec["schedule"] = item.schedule
        elif item.kind == "TIMESLOT":
            spec["timeslots"] = [
                {"start": self.when(t.start), "end": self.when(t.end), "quota": t.quota}
                for t in sorted(timeslots, key=lambda t: t.start)
                if t.product_item_id == item.id
            ]
        return _drop_none(spec)


def _drop_none(values: Json) -> Json:
    return {k: v for k, v in values.items() if v is not None}


async def export_document(conn: AsyncConnection, institution_code: str) -> Json:
    """The setup document of one institution (raises UnknownInstitution)."""
    institution_id = await institution_id_by_code(conn, institution_code)
    return await _Exporter(conn, institution_id).run()
