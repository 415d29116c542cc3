"""Catalog pages: the programme by theme and sub-theme, search, a product, a performance
(seat map or best available), static pages. Handlers read the cached catalog and the board;
the seat map is read from the database (``inventory.queries.seat_map``)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from billetterie.inventory.models import Level
from billetterie.inventory.queries import seat_map
from billetterie.shared.db import read
from billetterie.shop import offers
from billetterie.shop.errors import NotOnSale, UnknownShopPerformance, UnknownShopProduct
from billetterie.shop.web import Page, run

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"shop.js": "text/javascript", "shop.css": "text/css"}
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
MAX_QUERY = 100
MAP_LIMIT = 1500  # beyond, the map shows its blocks first, then one block's seats


def level_name(value: Level) -> str:
    return offers.LEVEL_NAMES[value]


async def product_cards(page: Page, chosen: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
    board = await page.board()
    contingents = set(page.context.contingent_ids)
    return [
        {
            "product": product,
            "level": level_name(offers.product_level(board, product["id"], contingents)),
            "from_price": offers.lowest_price(product),
            "on_sale": offers.in_sales_period(product, page.context.sales_channel.id, page.now),
        }
        for _, product in chosen
    ]


@router.get("/shop/{pos_code}")
async def catalog(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        document = await (await page.catalog()).document()
        theme = request.query_params.get("theme", "")[:32]
        sub = request.query_params.get("sub", "")[:32]
        chosen = [
            (s, p)
            for s, p in offers.products(document)
            if (not theme or (p.get("theme") or {}).get("code") == theme)
            and (not sub or (p.get("subTheme") or {}).get("code") == sub)
        ]
        return page.render(
            "catalog.html",
            title=page.t("catalog"),
            themes=offers.themes(document),
            theme=theme,
            sub=sub,
            cards=await product_cards(page, chosen),
        )

    return await run(request, pos_code, handle)


@router.get("/shop/{pos_code}/search")
async def search(request: Request, pos_code: str) -> Response:
    async def handle(page: Page) -> Response:
        query = request.query_params.get("q", "")[:MAX_QUERY]
        words = query.split()
        document = await (await page.catalog()).document()
        chosen = (
            [
                (s, p)
                for s, p in offers.products(document)
                if offers.matches(p, words, page.language)
            ]
            if words
            else []
        )
        return page.render(
            "search.html",
            title=page.t("search_results"),
            query=query,
            cards=await product_cards(page, chosen),
        )

    return await run(request, pos_code, handle)


@router.get("/shop/{pos_code}/products/{product_id}")
async def product_page(request: Request, pos_code: str, product_id: str) -> Response:
    async def handle(page: Page) -> Response:
        document = await (await page.catalog()).document()
        found = offers.find_product(document, _number(product_id))
        if found is None:
            raise UnknownShopProduct("this product is not sold in this shop")
        season, product = found
        board = await page.board()
        contingents = set(page.context.contingent_ids)
        perfs = [
            {
                "performance": perf,
                "level": level_name(
                    offers.performance_level(board, product["id"], perf["id"], contingents)
                ),
                "open": offers.performance_open(perf, page.now),
            }
            for perf in offers.performances(product)
        ]
        slot_levels = offers.timeslot_levels(board, product["id"], contingents)
        item_list = [
            {
                "item": item,
                "slots": [
                    {
                        **slot,
                        "level": level_name(slot_levels.get(slot["id"], Level.NONE)),
                    }
                    for slot in item.get("timeslots") or []
                    if offers.date_after(slot["end"], page.now)
                ],
            }
            for item in offers.items(product)
        ]
        composed = product.get("composedProduct")
        categories = _composed_categories(composed) if composed else []
        return page.render(
            "product.html",
            title=page.text(product["externalName"]),
            product=product,
            tariffs=offers.tariffs(season),
            level=level_name(offers.product_level(board, product["id"], contingents)),
            on_sale=offers.in_sales_period(product, page.context.sales_channel.id, page.now),
            performances=perfs,
            items=item_list,
            composed=composed,
            composed_categories=categories,
            website=_website(page, product),
        )

    return await run(request, pos_code, handle)


def _composed_categories(composed: dict[str, Any]) -> list[int]:
    return sorted({p["seatCatId"] for p in composed.get("prices") or []})


def _website(page: Page, product: dict[str, Any]) -> str | None:
    url = product.get("externalUrl")
    return url.replace("{LANGUAGE}", page.language) if isinstance(url, str) else None


def _number(value: str) -> int:
    if not value.isdigit() or len(value) > 15:
        raise UnknownShopProduct("this product is not sold in this shop")
    return int(value)


@router.get("/shop/{pos_code}/performances/{performance_id}")
async def performance_page(request: Request, pos_code: str, performance_id: str) -> Response:
    async def handle(page: Page) -> Response:
        document = await (await page.catalog()).document()
        if not performance_id.isdigit() or len(performance_id) > 15:
            raise UnknownShopPerformance("this performance is not sold in this shop")
        found = offers.find_performance(document, int(performance_id))
        if found is None:
            raise UnknownShopPerformance("this performance is not sold in this shop")
        season, product, perf = found
        channel = page.context.sales_channel.id
        if not (offers.in_sales_period(product, channel, page.now)) or not (
            offers.performance_open(perf, page.now)
        ):
            raise NotOnSale("this performance is not on sale")
        contingents = set(page.context.contingent_ids)
        async with read(page.engine) as conn:
            seats = await seat_map(
                conn,
                institution_id=page.context.institution_id,
                performance_id=perf["id"],
                contingents=contingents,
                now=page.now,
            )
        mode = page.context.point_of_sale.seat_selection_mode
        show_map = bool(seats) and mode in {"SEAT_MAP", "BEST_AVAILABLE_AND_SEAT_MAP"}
        show_best = not seats or mode in {"BEST_AVAILABLE", "BEST_AVAILABLE_AND_SEAT_MAP"}
        blocks: list[dict[str, Any]] = []
        if show_map and len(seats) > MAP_LIMIT:
            blocks = _blocks(seats)
            asked = request.query_params.get("block", "")
            chosen = next((b for b in blocks if str(b["id"]) == asked), None)
            seats = [s for s in seats if chosen and s["blockId"] == chosen["id"]]
        board = await page.board()
        levels = offers.category_levels(board, product["id"], perf["id"], contingents)
        categories = [
            {
                **cat,
                "color": PALETTE[i % len(PALETTE)],
                "level": level_name(levels.get(cat["id"], Level.NONE)),
                "prices": [p for p in perf.get("prices") or [] if p["seatCatId"] == cat["id"]],
            }
            for i, cat in enumerate(perf.get("seatCategories") or [])
        ]
        return page.render(
            "performance.html",
            title=page.text(product["externalName"]),
            product=product,
            performance=perf,
            tariffs=offers.tariffs(season),
            categories=categories,
            show_map=show_map,
            show_best=show_best,
            svg=_svg(seats, {c["id"]: c["color"] for c in categories})
            if show_map and seats
            else None,
            overview=_overview(blocks) if blocks and not seats else None,
            blocks=blocks,
            max_seats=page.context.point_of_sale.max_seats_per_performance,
        )

    return await run(request, pos_code, handle)


def _svg(seats: list[dict[str, Any]], colors: dict[int, str]) -> dict[str, Any]:
    """The seat map's geometry: seats scaled into a view box, coloured by category."""
    xs = [s["x"] for s in seats]
    ys = [s["y"] for s in seats]
    left, top = min(xs), min(ys)
    span = max(max(xs) - left, max(ys) - top, 1.0)
    # a seat is about one unit wide in the plan's coordinates; keep circles a fraction of the
    # smallest distance between two seats of a row
    gaps = sorted({round(abs(a["x"] - b["x"]), 3) for a, b in itertools.pairwise(seats)} - {0.0})
    step = gaps[0] if gaps else span / 10
    scale = 1000 / span
    radius = max(min(step * scale * 0.42, 18), 1.5)
    margin = radius * 2
    return {
        "width": round(1000 + 2 * margin, 1),
        "height": round((max(ys) - top) * scale + 2 * margin, 1),
        "radius": round(radius, 2),
        "seats": [
            {
                **s,
                "cx": round((s["x"] - left) * scale + margin, 1),
                "cy": round((s["y"] - top) * scale + margin, 1),
                "color": colors.get(s["seatCategoryId"] or 0, "#888"),
            }
            for s in seats
        ],
    }


def _blocks(seats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each block's extent and free seats, in the plan's coordinates."""
    found: dict[int, dict[str, Any]] = {}
    for s in seats:
        b = found.setdefault(
            s["blockId"],
            {"id": s["blockId"], "x0": s["x"], "y0": s["y"], "x1": s["x"], "y1": s["y"], "free": 0},
        )
        b["x0"], b["x1"] = min(b["x0"], s["x"]), max(b["x1"], s["x"])
        b["y0"], b["y1"] = min(b["y0"], s["y"]), max(b["y1"], s["y"])
        b["free"] += s["state"] == "FREE"
    ordered = sorted(found.values(), key=lambda b: (b["y0"], b["x0"]))
    for number, b in enumerate(ordered, start=1):
        b["number"] = number
    return ordered


def _overview(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """The blocks as rectangles scaled into a view box."""
    left, top = min(b["x0"] for b in blocks), min(b["y0"] for b in blocks)
    span = max(max(b["x1"] for b in blocks) - left, max(b["y1"] for b in blocks) - top, 1.0)
    scale, margin = 1000 / span, 10
    return {
        "width": 1000 + 2 * margin,
        "height": round((max(b["y1"] for b in blocks) - top) * scale + 2 * margin, 1),
        "blocks": [
            {
                **b,
                "rx": round((b["x0"] - left) * scale + margin, 1),
                "ry": round((b["y0"] - top) * scale + margin, 1),
                "rw": round(max((b["x1"] - b["x0"]) * scale, 6), 1),
                "rh": round(max((b["y1"] - b["y0"]) * scale, 6), 1),
            }
            for b in blocks
        ],
    }


@router.get("/shop/{pos_code}/pages/{name}")
async def static_page(request: Request, pos_code: str, name: str) -> Response:
    """Terms of sale, privacy, help, contact, home: the configured external URL, with
    ``{LANGUAGE}`` replaced."""

    async def handle(page: Page) -> Response:
        url = page.external(name) if name in PAGE_NAMES else None
        if url is None:
            raise UnknownShopProduct("this shop has no such page")
        return page.redirect(url)

    return await run(request, pos_code, handle)


PAGE_NAMES = {"termsOfSale", "privacy", "help", "contact", "home"}


@router.get("/shop-static/{name}")
async def static_file(name: str) -> Response:
    if name not in STATIC_FILES:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(
        STATIC / name,
        media_type=STATIC_FILES[name],
        headers={"Cache-Control": "public, max-age=3600"},
    )
