"""Availability as partners read it: sums of stock counters with S-360's filter semantics.

Filters on seat categories and contingents work the same way (API.md):

- empty: one row, the sum over every value;
- ``[-1]``: one row per value;
- a list of ids: one row per listed id, only those.

A channel sees the general pool and its own contingents; naming any other contingent is an
error. Levels come from :func:`billetterie.inventory.models.level` with the product's alert ratio.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from billetterie.inventory.models import ZERO, Counts, Level, level

EACH = -1
POOL = 0  # the general pool, as a contingent id in per-contingent rows


class FilterError(ValueError):
    """A filter names something the caller may not see; ``field`` names the filter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Filter:
    values: tuple[int, ...] = ()

    @property
    def each(self) -> bool:
        return self.values == (EACH,)

    @property
    def summed(self) -> bool:
        return not self.values

    @classmethod
    def of(cls, values: Sequence[int] | None) -> Filter:
        return cls(tuple(values or ()))


def counts_json(counts: Counts, alert_ratio: int) -> dict[str, Any]:
    lv = level(counts, alert_ratio)
    return {
        "availabilityLevel": int(lv),
        "availabilityLevelName": Level(lv).name,
        "capacity": counts.capacity,
        "free": counts.free,
        "held": counts.held,
        "sold": counts.sold,
        "blocked": counts.blocked,
    }


def total(stocks: Iterable[Any]) -> Counts:
    result = ZERO
    for stock in stocks:
        result = result + stock.counts
    return result


def visible(stocks: Iterable[Any], contingents: set[int]) -> list[Any]:
    return [s for s in stocks if s.contingent_id is None or s.contingent_id in contingents]


def breakdown(
    stocks: Sequence[Any],
    *,
    seat_categories: Filter,
    contingents: Filter,
    channel_contingents: set[int],
    alert_ratio: int,
) -> list[dict[str, Any]]:
    """Rows for one performance's (already visible) stocks, by the two filters."""
    for value in contingents.values:
        if value not in (EACH, POOL) and value not in channel_contingents:
            raise FilterError("contingentIds", f"contingent {value} is not one of this channel's")
    known_categories = {s.seat_category_id for s in stocks}
    for value in seat_categories.values:
        if value != EACH and value not in known_categories:
            raise FilterError(
                "seatCategoryIds", f"seat category {value} is not sold for this performance"
            )

    def category_keys() -> list[int | None]:
        if seat_categories.summed:
            return [None]
        if seat_categories.each:
            return sorted(k for k in known_categories if k is not None)
        return list(seat_categories.values)

    def contingent_keys() -> list[int | None]:
        if contingents.summed:
            return [None]
        present = {s.contingent_id or POOL for s in stocks}
        if contingents.each:
            return sorted(present)
        return list(contingents.values)

    rows = []
    for category in category_keys():
        for contingent in contingent_keys():
            chosen = [
                s
                for s in stocks
                if (category is None or s.seat_category_id == category)
                and (contingent is None or (s.contingent_id or POOL) == contingent)
            ]
            row: dict[str, Any] = {}
            if category is not None:
                row["seatCategoryId"] = category
            if contingent is not None:
                row["contingentId"] = contingent
            row.update(counts_json(total(chosen), alert_ratio))
            rows.append(row)
    return rows
