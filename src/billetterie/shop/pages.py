"""Catalog pages: the programme by theme and sub-theme, search, a product, a performance
(seat map or best available), static pages. Handlers read the cached catalog and the board;
the seat map comes from the database through ``shop.seatmap`` (a stadium's blocks first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from markupsafe import Markup
from starlette.responses import FileResponse, Response

from billetterie.inventory.models import Level
from billetterie.shared.db import read
from billetterie.shop import offers, queue, seatmap
from billetterie.shop.errors import (
    NotOnSale,
    UnknownBlock,
    UnknownShopPerformance,
    UnknownShopProduct,
)
from billetterie.shop.web import Page, run, templates

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).parent / "static"
STATIC_FILES = {
    "shop.js": "text/javascript",
    "shop.css": "text/css",
    # the demo institution's product images (its setup file names them by path)
    "demo-hamlet-stage.svg": "image/svg+xml",
    "demo-hamlet-skull.svg": "image/svg+xml",
}
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
MAX_QUERY = 100


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
        waiting = await queue.gate(page, product)
        if waiting is not None:
            return waiting
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
            media=[
                {"url": m["url"], "alt": page.text(m.get("altText"))}
                for m in product.get("media") or []
                if str(m.get("url", "")).startswith(("https://", "http://", "/"))
            ],
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


async def _performance(page: Page, performance_id: str) -> tuple[Any, Any, Any, int]:
    """The season, product and performance on sale here now, and the catalog's version."""
    catalog = await page.catalog()
    document = await catalog.document()
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
    return season, product, perf, catalog.version


async def _map_view(page: Page, perf: Any, version: int, block: str | None) -> seatmap.MapView:
    async with read(page.engine) as conn:
        reader = seatmap.Reader(
            conn,
            seatmap.cache_of(page.shop.runtime.caches),
            page.context.institution_id,
            perf["id"],
            frozenset(page.context.contingent_ids),
            version,
            page.now,
        )
        return await reader.view(block)


def _seats_svg(page: Page, view: seatmap.MapView, colors: dict[int, str]) -> Markup:
    """The seats' SVG element; drawn once per language while the seats are unchanged (the
    markup holds nobody's data: the form and its token are outside it)."""
    max_seats = page.context.point_of_sale.max_seats_per_performance
    key = ("svg", page.language, tuple(sorted(colors.items())), max_seats)
    drawn: Markup | None = view.drawings.get(key)
    if drawn is None:
        html = templates.get_template("_seats_svg.html").render(
            svg=seatmap.svg(view.seats, colors), block=view.block, max_seats=max_seats, t=page.t
        )
        drawn = view.drawings[key] = Markup(html)
    return drawn


def _colors(perf: Any) -> dict[int, str]:
    return {
        cat["id"]: PALETTE[i % len(PALETTE)]
        for i, cat in enumerate(perf.get("seatCategories") or [])
    }


@router.get("/shop/{pos_code}/performances/{performance_id}")
async def performance_page(request: Request, pos_code: str, performance_id: str) -> Response:
    async def handle(page: Page) -> Response:
        season, product, perf, version = await _performance(page, performance_id)
        waiting = await queue.gate(page, product)
        if waiting is not None:
            return waiting
        asked = request.query_params.get("block", "")[:20] or None
        view = await _map_view(page, perf, version, asked)
        mode = page.context.point_of_sale.seat_selection_mode
        drawn = bool(view.seats or view.blocks)
        show_map = drawn and mode in {"SEAT_MAP", "BEST_AVAILABLE_AND_SEAT_MAP"}
        show_best = not drawn or mode in {"BEST_AVAILABLE", "BEST_AVAILABLE_AND_SEAT_MAP"}
        board = await page.board()
        contingents = set(page.context.contingent_ids)
        levels = offers.category_levels(board, product["id"], perf["id"], contingents)
        colors = _colors(perf)
        categories = [
            {
                **cat,
                "color": colors[cat["id"]],
                "level": level_name(levels.get(cat["id"], Level.NONE)),
                "prices": [p for p in perf.get("prices") or [] if p["seatCatId"] == cat["id"]],
            }
            for cat in perf.get("seatCategories") or []
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
            svg=_seats_svg(page, view, colors) if show_map and view.seats else None,
            overview=seatmap.overview_svg(view.blocks) if show_map and view.blocks else None,
            block=view.block,
            max_seats=page.context.point_of_sale.max_seats_per_performance,
        )

    return await run(request, pos_code, handle)


@router.get("/shop/{pos_code}/performances/{performance_id}/blocks/{block_id}")
async def block_fragment(
    request: Request, pos_code: str, performance_id: str, block_id: str
) -> Response:
    """One block's seats and the seat form: the piece of the performance page that its script
    fetches when the buyer opens a block of the overview (``?block=`` without the script)."""

    async def handle(page: Page) -> Response:
        season, product, perf, version = await _performance(page, performance_id)
        queue.require_admission(page, product)
        mode = page.context.point_of_sale.seat_selection_mode
        view = await _map_view(page, perf, version, block_id[:20])
        if view.block is None or mode not in {"SEAT_MAP", "BEST_AVAILABLE_AND_SEAT_MAP"}:
            raise UnknownBlock("this performance's map has no such block")
        return page.render(
            "_block.html",
            performance=perf,
            tariffs=offers.tariffs(season),
            svg=_seats_svg(page, view, _colors(perf)),
            block=view.block,
            max_seats=page.context.point_of_sale.max_seats_per_performance,
        )

    return await run(request, pos_code, handle)


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
