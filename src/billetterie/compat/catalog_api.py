"""catalogService and setupService (module ``tnseb``), version v1_33.

Handlers parse, call one service or cache, and render. What a caller sees is fixed by its
operator's point of sale: the sales channel's catalog, and only its institution's rows.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import Request
from starlette.responses import Response, StreamingResponse

from billetterie.catalog.errors import UnknownProduct, UnknownSeason
from billetterie.catalog.models import CatalogScope, ProductState
from billetterie.catalog.services import list_rows
from billetterie.compat import schemas as s
from billetterie.compat.catalog_cache import CachedCatalog, CatalogCache
from billetterie.compat.rpc import Call, RpcService
from billetterie.shared.db import read
from billetterie.shared.text import translations

VERSIONS = ("v1_33",)
catalog_service = RpcService(
    "tnseb", "catalogService", VERSIONS, "Catalog of the operator's channel"
)
setup_service = RpcService("tnseb", "setupService", VERSIONS, "Setup read helpers")

CURRENCY_SYMBOLS = {"EUR": "€", "CHF": "CHF", "GBP": "£", "USD": "$", "JPY": "¥", "SEK": "kr"}


def cache_of(call: Call) -> CatalogCache:
    cache = call.runtime.caches.get("catalog")
    if cache is None:
        cache = call.runtime.caches["catalog"] = CatalogCache(call.runtime.engine)
    assert isinstance(cache, CatalogCache)
    return cache


async def current_catalog(call: Call, scope: CatalogScope) -> CachedCatalog:
    context, version = await call.catalog_state(scope)
    return await cache_of(call).get(context.sales_channel.id, scope, version.version)


def accepts_gzip(request: Request) -> bool:
    """Whether Accept-Encoding admits gzip (``gzip;q=0`` refuses it)."""
    for part in request.headers.get("accept-encoding", "").lower().split(","):
        name, _, parameters = part.strip().partition(";")
        if name.strip() in {"gzip", "*"}:
            quality = parameters.strip().removeprefix("q=")
            try:
                return not parameters or float(quality) > 0
            except ValueError:
                return False
    return False


def stream(chunks: list[bytes | memoryview], headers: dict[str, str]) -> Response:
    """Send large buffers as they are, without joining them into one more copy."""

    async def body() -> AsyncIterator[bytes | memoryview]:
        for chunk in chunks:
            yield chunk

    length = sum(len(chunk) for chunk in chunks)
    return StreamingResponse(
        body(), media_type="application/json", headers={**headers, "Content-Length": str(length)}
    )


# --- catalogService ----------------------------------------------------------------------


@catalog_service.method("isCatalogServiceAlive", request=s.EmptyRequest, response=s.Envelope)
async def is_alive(body: s.EmptyRequest, call: Call) -> dict[str, Any]:
    """Answers success when the service can be called with this token."""
    return {}


def family_id(family: str, sub_type: str | None) -> int:
    """A stable id for a (family, sub-type) pair; S-360 exposes families as configured rows."""
    return zlib.crc32(f"{family}/{sub_type or ''}".encode()) & 0x7FFFFFFF


@catalog_service.method("getPOSConfig", request=s.EmptyRequest, response=s.PosConfigResponse)
async def get_pos_config(body: s.EmptyRequest, call: Call) -> dict[str, Any]:
    """The operator's point of sale: channel, organization, payment methods, families, rules."""
    catalog = await current_catalog(call, CatalogScope.STANDARD)
    context = await call.context()
    pos = context.point_of_sale
    organization = context.organization
    families: dict[tuple[str, str | None], dict[str, Any]] = {}
    for season in catalog.summary["seasons"]:
        for product in season["products"]:
            key = (product["productFamilyType"], product["productFamilySubType"])
            entry = families.setdefault(
                key,
                {
                    "id": family_id(*key),
                    "externalName": None,
                    "productFamilyType": key[0],
                    "productFamilySubType": key[1],
                    "contactRequired": False,
                },
            )
            entry["contactRequired"] = entry["contactRequired"] or product["contactRequired"]
    languages = pos.languages or organization.languages
    return {
        "posConfigData": {
            "posId": pos.id,
            "posCode": pos.code,
            "posNumber": pos.number,
            "posType": pos.pos_type,
            "posName": translations(pos.name),
            "salesChannelId": context.sales_channel.id,
            "salesChannelCode": context.sales_channel.code,
            "salesChannelType": context.sales_channel.channel_type,
            "institCode": context.institution_code,
            "organizationId": organization.id,
            "organizationCode": organization.code,
            "organizationName": organization.name.get(organization.main_language)
            or next(iter(organization.name.values()), organization.code),
            "organizationTimeZone": organization.time_zone,
            "currencyCode": context.currency,
            "currencySymbol": CURRENCY_SYMBOLS.get(context.currency, context.currency),
            "mainLanguage": organization.main_language,
            "languageList": languages,
            "paymentMethods": [
                {
                    "id": m.id,
                    "code": m.code,
                    "externalName": translations(m.name),
                    "paymentType": m.payment_type,
                    "forPayment": m.for_payment,
                    "forReimbursement": m.for_reimbursement,
                    "rank": m.rank,
                }
                for m in context.payment_methods
            ],
            "productFamilies": sorted(
                families.values(),
                key=lambda f: (f["productFamilyType"], f["productFamilySubType"] or ""),
            ),
            "seatSelectionMode": pos.seat_selection_mode,
            "splitSeatingAllowed": pos.split_seating_allowed,
            "maxSeatsPerPerformance": pos.max_seats_per_performance,
            "orderAbandonDelay": pos.order_abandon_delay,
            "contactLoginMode": pos.contact_login_mode,
            "guestLoginAvailable": pos.guest_login_available,
            "contactAccountCreationAllowed": pos.contact_account_creation_allowed,
            "cookieDomain": pos.cookie_domain,
            "externalUrls": pos.external_urls,
            "posParameters": pos.parameters,
        }
    }


def filter_catalog(
    document: dict[str, Any], season_code: str | None, product_code: str | None
) -> dict[str, Any]:
    """The catalog restricted to one season and/or one product; unknown codes are errors."""
    seasons = document["seasons"]
    if season_code is not None:
        seasons = [x for x in seasons if x["code"] == season_code]
        if not seasons:
            raise UnknownSeason(f"no season {season_code} in this catalog")
    if product_code is not None:
        seasons = [
            {**x, "products": [p for p in x["products"] if p["code"] == product_code]}
            for x in seasons
        ]
        seasons = [x for x in seasons if x["products"]]
        if not seasons:
            raise UnknownProduct(f"no product {product_code} in this catalog")
    return {"seasons": seasons}


@catalog_service.method(
    "getCatalogDetailed", request=s.CatalogDetailedRequest, response=s.CatalogDetailedResponse
)
async def get_catalog_detailed(
    body: s.CatalogDetailedRequest, call: Call
) -> dict[str, Any] | Response:
    """The detailed catalog of the channel: seasons, tariffs, price levels, products with their
    performances, items, timeslots and prices. Built ahead, never ``in_progress``.
    ``scope: EXTENDED`` adds products no longer on sale. Send ``Accept-Encoding: gzip``."""
    catalog = await current_catalog(call, body.scope or CatalogScope.STANDARD)
    if body.seasonCode is None and body.productCode is None:
        gzip = accepts_gzip(call.request)
        headers = {"Vary": "Accept-Encoding"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        return stream(catalog.rpc_chunks(body.requestId, gzip=gzip), headers)
    document = await catalog.document()
    return {"catalogData": filter_catalog(document, body.seasonCode, body.productCode)}


def public(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in INTERNAL_FIELDS}


INTERNAL_FIELDS = {"performanceStarts", "contactRequired"}


@catalog_service.method("getCatalog", request=s.CatalogRequest, response=s.CatalogResponse)
async def get_catalog(body: s.CatalogRequest, call: Call) -> dict[str, Any]:
    """The channel's products on sale (RUNNING or SUSPENDED), as summaries."""
    catalog = await current_catalog(call, CatalogScope.STANDARD)
    document = filter_catalog(catalog.summary, body.seasonCode, body.productCode)
    return {
        "catalogData": {
            "seasons": [
                {**season, "products": [public(p) for p in season["products"]]}
                for season in document["seasons"]
            ]
        }
    }


@catalog_service.method(
    "getLastSetupUpdate", request=s.LastSetupUpdateRequest, response=s.LastSetupUpdateResponse
)
async def get_last_setup_update(body: s.LastSetupUpdateRequest, call: Call) -> dict[str, Any]:
    """When the catalog this channel sees last changed, and its version. Call it as often as
    you like (it reads one row); re-read the catalog only when the version moved."""
    _, version = await call.catalog_state(body.scope or CatalogScope.STANDARD)
    return {"lastSetupUpdate": version.updated_at.isoformat(), "setupVersion": version.version}


# --- setupService ------------------------------------------------------------------------


def season_row(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "code": row.code,
        "state": row.state,
        "start": row.start.isoformat(),
        "end": row.end.isoformat(),
        "externalName": translations(row.name),
    }


@setup_service.method("listSeasons", request=s.EmptyRequest, response=s.SeasonsResponse)
async def list_seasons(body: s.EmptyRequest, call: Call) -> dict[str, Any]:
    """The institution's seasons."""
    async with read(call.runtime.engine) as conn:
        rows = await list_rows(conn, "season", call.operator.institution_id)
    return {"seasons": [season_row(r) for r in sorted(rows, key=lambda r: (r.start, r.id))]}


async def _season(call: Call, season_id: int) -> Any:
    async with read(call.runtime.engine) as conn:
        rows = await list_rows(conn, "season", call.operator.institution_id, id=season_id)
    if not rows:
        raise UnknownSeason(f"no season {season_id}")
    return rows[0]


@setup_service.method(
    "listAudienceSubCategories", request=s.SeasonRequest, response=s.AudienceSubCategoriesResponse
)
async def list_audience_sub_categories(body: s.SeasonRequest, call: Call) -> dict[str, Any]:
    """The tariffs of a season, with their audience category."""
    season = await _season(call, body.seasonId)
    institution_id = call.operator.institution_id
    async with read(call.runtime.engine) as conn:
        categories = await list_rows(conn, "audience_category", institution_id, season_id=season.id)
        tariffs = await list_rows(conn, "audience_sub_category", institution_id)
    by_id = {c.id: c for c in categories}
    codes = {t.code: t.id for t in tariffs if t.audience_category_id in by_id}
    rows = []
    in_season = [t for t in tariffs if t.audience_category_id in by_id]
    for t in sorted(in_season, key=lambda t: (by_id[t.audience_category_id].rank, t.rank, t.id)):
        category = by_id[t.audience_category_id]
        rows.append(
            {
                "id": t.id,
                "code": t.code,
                "externalName": translations(t.name),
                "audienceCategoryKind": t.kind,
                "requiredAudienceSubCategoryIds": [
                    codes[c] for c in t.required_codes if c in codes
                ],
                "crossSeatCategory": t.cross_seat_category,
                "audienceCategoryId": category.id,
                "audienceCategoryCode": category.code,
                "mainCategory": category.main_category,
                "secondaryCategory": category.secondary_category,
                "seasonId": season.id,
            }
        )
    return {"audienceSubCategories": rows}


@setup_service.method("listPriceLevels", request=s.SeasonRequest, response=s.PriceLevelsResponse)
async def list_price_levels(body: s.SeasonRequest, call: Call) -> dict[str, Any]:
    """The price levels of a season."""
    season = await _season(call, body.seasonId)
    async with read(call.runtime.engine) as conn:
        levels = await list_rows(
            conn, "price_level", call.operator.institution_id, season_id=season.id
        )
    return {
        "priceLevels": [
            {
                "id": lv.id,
                "code": lv.code,
                "externalName": translations(lv.name),
                "rank": lv.rank,
                "seasonId": season.id,
            }
            for lv in sorted(levels, key=lambda lv: (lv.rank, lv.id))
        ]
    }


@setup_service.method("listVatCodes", request=s.EmptyRequest, response=s.VatCodesResponse)
async def list_vat_codes(body: s.EmptyRequest, call: Call) -> dict[str, Any]:
    """VAT codes; ``currentRate`` in thousandths of a percent (2100 = 2.1 %)."""
    async with read(call.runtime.engine) as conn:
        rows = await list_rows(conn, "vat_code", call.operator.institution_id)
    return {
        "vatCodes": [
            {
                "id": v.id,
                "code": v.code,
                "currentRate": v.rate,
                "country": v.country,
                "externalName": translations(v.name),
            }
            for v in rows
        ]
    }


def _matches(
    summary: dict[str, Any],
    body: s.SearchProductsRequest,
    start: datetime | None,
    end: datetime | None,
) -> bool:
    if (
        body.productFamilyType is not None
        and summary["productFamilyType"] != body.productFamilyType.value
    ):
        return False
    if (
        body.productFamilySubType is not None
        and summary["productFamilySubType"] != body.productFamilySubType
    ):
        return False
    if body.productCodes is not None and summary["code"] not in body.productCodes:
        return False
    if body.themeCode is not None and body.themeCode not in {
        (summary["theme"] or {}).get("code"),
        (summary["subTheme"] or {}).get("code"),
    }:
        return False
    states = body.states or [ProductState.RUNNING, ProductState.SUSPENDED]
    if summary["state"] not in {x.value for x in states}:
        return False
    if body.text:
        needle = body.text.casefold()
        names = (summary["externalName"] or {}).get("translations", [])
        if (
            not any(needle in t["value"].casefold() for t in names)
            and needle not in summary["code"].casefold()
        ):
            return False
    if start is not None or end is not None:
        dates = [datetime.fromisoformat(start) for start in summary["performanceStarts"]]
        if not any((start is None or d >= start) and (end is None or d <= end) for d in dates):
            return False
    return True


@setup_service.method(
    "searchProductsByCriteria", request=s.SearchProductsRequest, response=s.SearchProductsResponse
)
async def search_products_by_criteria(body: s.SearchProductsRequest, call: Call) -> dict[str, Any]:
    """Products of the channel matching every criterion given (states default to on sale)."""
    start, end = body.startDate, body.endDate
    catalog = await current_catalog(call, CatalogScope.EXTENDED)
    found: list[dict[str, Any]] = []
    for season in catalog.summary["seasons"]:
        if body.seasonCode is not None and season["code"] != body.seasonCode:
            continue
        found.extend(public(p) for p in season["products"] if _matches(p, body, start, end))
    return {"products": found}
