"""What the shop shows of the channel's catalog: pure functions over the cached catalog
document (``getCatalogDetailed``'s ``catalogData``) and the availability board."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from billetterie.inventory.availability import total, visible
from billetterie.inventory.board import Board
from billetterie.inventory.models import Level, level
from billetterie.shop.i18n import localized

Json = dict[str, Any]
LEVEL_NAMES = {Level.GOOD: "available", Level.LIMITED: "limited", Level.NONE: "sold_out"}


def products(document: Json) -> Iterator[tuple[Json, Json]]:
    """(season, product) for every product of the catalog."""
    for season in document["seasons"]:
        for product in season["products"]:
            yield season, product


def find_product(document: Json, product_id: int) -> tuple[Json, Json] | None:
    return next(((s, p) for s, p in products(document) if p["id"] == product_id), None)


def find_product_code(document: Json, code: str) -> tuple[Json, Json] | None:
    return next(((s, p) for s, p in products(document) if p["code"] == code), None)


def performances(product: Json) -> list[Json]:
    return list((product.get("event") or {}).get("performances") or [])


def find_performance(document: Json, performance_id: int) -> tuple[Json, Json, Json] | None:
    for season, product in products(document):
        for performance in performances(product):
            if performance["id"] == performance_id:
                return season, product, performance
    return None


def items(product: Json) -> list[Json]:
    for key in ("pass", "membership", "simpleProduct"):
        if product.get(key):
            return list(product[key].get("items") or [])
    return []


def tariffs(season: Json) -> dict[int, Json]:
    return {t["id"]: t for c in season["audienceCategories"] for t in c["audienceSubCategories"]}


def in_sales_period(product: Json, channel_id: int, now: datetime) -> bool:
    return product["state"] == "RUNNING" and any(
        p["salesChannelId"] == channel_id
        and datetime.fromisoformat(p["start"]) <= now < datetime.fromisoformat(p["end"])
        for p in product.get("salesPeriods") or []
    )


def performance_open(performance: Json, now: datetime) -> bool:
    return performance["state"] == "RUNNING" and datetime.fromisoformat(performance["start"]) > now


def product_level(board: Board, product_id: int, contingents: set[int]) -> Level:
    stocks = visible(board.product_stocks(product_id), contingents)
    if not stocks:
        return Level.NONE
    return level(total(stocks), board.alert_ratio(product_id))


def performance_level(
    board: Board, product_id: int, performance_id: int, contingents: set[int]
) -> Level:
    stocks = visible(board.performance_stocks(performance_id), contingents)
    if not stocks:
        return Level.NONE
    return level(total(stocks), board.alert_ratio(product_id))


def category_levels(
    board: Board, product_id: int, performance_id: int, contingents: set[int]
) -> dict[int, Level]:
    by_category: dict[int, list[Any]] = {}
    for stock in visible(board.performance_stocks(performance_id), contingents):
        if stock.seat_category_id is not None:
            by_category.setdefault(stock.seat_category_id, []).append(stock)
    ratio = board.alert_ratio(product_id)
    return {cat: level(total(stocks), ratio) for cat, stocks in by_category.items()}


def timeslot_levels(board: Board, product_id: int, contingents: set[int]) -> dict[int, Level]:
    ratio = board.alert_ratio(product_id)
    return {
        st.timeslot_id: level(st.counts, ratio)
        for st in visible(board.product_stocks(product_id), contingents)
        if st.timeslot_id is not None
    }


def lowest_price(product: Json) -> int | None:
    amounts = [
        p["amount"]
        for perf in performances(product)
        for p in perf.get("prices") or []
        if p["amount"] > 0
    ]
    amounts += [p["amount"] for i in items(product) for p in i.get("itemPrices") or []]
    amounts += [p["amount"] for p in (product.get("composedProduct") or {}).get("prices") or []]
    positive = [a for a in amounts if a > 0]
    return min(positive) if positive else None


def matches(product: Json, words: list[str], language: str) -> bool:
    """Every word appears in the product's name, description, code, theme or sub-theme."""
    haystack = " ".join(
        [
            localized(product.get("externalName"), language),
            localized(product.get("externalDescription"), language),
            product["code"],
            localized((product.get("theme") or {}).get("externalName"), language),
            localized((product.get("subTheme") or {}).get("externalName"), language),
        ]
    ).casefold()
    return all(w.casefold() in haystack for w in words)


def themes(document: Json) -> list[tuple[Json, list[Json]]]:
    """Themes with their sub-themes, in catalog order."""
    found: dict[int, tuple[Json, dict[int, Json]]] = {}
    for _, product in products(document):
        theme = product.get("theme")
        if not theme:
            continue
        entry = found.setdefault(theme["id"], (theme, {}))
        sub = product.get("subTheme")
        if sub:
            entry[1].setdefault(sub["id"], sub)
    return [(theme, list(subs.values())) for theme, subs in found.values()]


def date_after(value: str, now: datetime) -> bool:
    return datetime.fromisoformat(value) > now
