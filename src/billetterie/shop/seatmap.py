"""The shop's seat map: what a performance page draws, read so that a 20,000-seat stadium costs
one aggregate query, not 20,000 rows.

- **overview**: one row per block (extent, seats, free seats for the channel) from
  ``inventory.queries.block_overview``. A plan of at most ``MAP_LIMIT`` seats is drawn whole;
  beyond, the page draws the blocks and the buyer opens one, whose seats are read alone
  (``seat_map(block_ids=...)``), in the page (``?block=``) or as a fragment the page's script
  fetches (``/performances/<id>/blocks/<block>``).
- **cache**: each answer is kept per process under (performance, the channel's contingents,
  block) with the institution's change sequence and the catalog version it was read at, and
  the earliest expiry of a hold among its seats. It serves while both versions are unchanged
  and that expiry has not passed: every seat change of the institution moves the sequence in
  its transaction, a setup import moves the catalog version, and a hold's expiry (which frees
  its seats without a change) is in the entry. The sequence is read before the seats, so an
  entry is never older than its key. The sale path never reads this: holds re-check the seats
  in the database (``inventory.services``).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.inventory.queries import block_overview, current_sequence, seat_map

MAP_LIMIT = 1500  # beyond, the map shows its blocks first, then one block's seats
CACHE_SIZE = 256  # answers kept per process


@dataclass(frozen=True, slots=True)
class Entry:
    sequence: int
    version: int
    until: datetime | None  # the first expiry of a hold among its seats
    value: Any
    drawings: dict[Any, Any] = field(default_factory=dict)  # what is drawn from the value


class SeatMapCache:
    """Seat-map answers of one process, least recently used out (see the module docstring).
    Not thread-safe; nothing here awaits, so the coroutines of one event loop see it whole."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self.entries: OrderedDict[Any, Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any, sequence: int, version: int, now: datetime) -> Any | None:
        entry = self.entry(key, sequence, version, now)
        return None if entry is None else entry.value

    def entry(self, key: Any, sequence: int, version: int, now: datetime) -> Entry | None:
        entry = self.entries.get(key)
        if (
            entry is None
            or entry.sequence != sequence
            or entry.version != version
            or (entry.until is not None and entry.until <= now)
        ):
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(
        self, key: Any, sequence: int, version: int, until: datetime | None, value: Any
    ) -> Entry:
        entry = self.entries[key] = Entry(sequence, version, until, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return entry

    def clear(self) -> None:
        self.entries.clear()


@dataclass(frozen=True, slots=True)
class MapView:
    blocks: list[dict[str, Any]]  # the overview's blocks (empty: the plan is drawn whole)
    seats: list[dict[str, Any]]  # the seats drawn: all, one block's, or none
    block: dict[str, Any] | None  # the block opened
    # drawings of these seats, kept with them in the cache (the SVG markup per language)
    drawings: dict[Any, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reader:
    """One request's reads: the performance as this channel sees it, at these versions."""

    conn: AsyncConnection
    cache: SeatMapCache
    institution_id: int
    performance_id: int
    contingents: frozenset[int]
    version: int
    now: datetime

    async def view(self, asked_block: str | None) -> MapView:
        sequence = await current_sequence(self.conn, self.institution_id)
        blocks = await self.overview(sequence)
        total = sum(b["seats"] for b in blocks)
        if not total:
            return MapView([], [], None)
        until = _earliest(b["nextExpiry"] for b in blocks)
        if total <= MAP_LIMIT:
            entry = await self.seats(sequence, None, until)
            return MapView([], entry.value, None, entry.drawings)
        chosen = next((b for b in blocks if str(b["id"]) == asked_block), None)
        if chosen is None:
            return MapView(blocks, [], None)
        entry = await self.seats(sequence, chosen["id"], chosen["nextExpiry"])
        return MapView(blocks, entry.value, chosen, entry.drawings)

    async def overview(self, sequence: int) -> list[dict[str, Any]]:
        key = ("overview", self.performance_id, self.contingents)
        blocks: list[dict[str, Any]] | None = self.cache.get(key, sequence, self.version, self.now)
        if blocks is None:
            blocks = await block_overview(
                self.conn,
                institution_id=self.institution_id,
                performance_id=self.performance_id,
                contingents=set(self.contingents),
                now=self.now,
            )
            blocks.sort(key=lambda b: (b["y0"], b["x0"]))
            for number, b in enumerate(blocks, start=1):
                b["number"] = number
            until = _earliest(b["nextExpiry"] for b in blocks)
            self.cache.put(key, sequence, self.version, until, blocks)
        return blocks

    async def seats(self, sequence: int, block_id: int | None, until: datetime | None) -> Entry:
        key = ("seats", self.performance_id, self.contingents, block_id)
        entry = self.cache.entry(key, sequence, self.version, self.now)
        if entry is None:
            seats = await seat_map(
                self.conn,
                institution_id=self.institution_id,
                performance_id=self.performance_id,
                contingents=set(self.contingents),
                block_ids=() if block_id is None else (block_id,),
                now=self.now,
            )
            entry = self.cache.put(key, sequence, self.version, until, seats)
        return entry


def _earliest(moments: Any) -> datetime | None:
    present = [m for m in moments if m is not None]
    return min(present) if present else None


def cache_of(caches: dict[str, Any]) -> SeatMapCache:
    cache = caches.get("seat_maps")
    if cache is None:
        cache = caches["seat_maps"] = SeatMapCache()
    assert isinstance(cache, SeatMapCache)
    return cache


# --- drawing -------------------------------------------------------------------------------


def svg(seats: list[dict[str, Any]], colors: dict[int, str]) -> dict[str, Any]:
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


def overview_svg(blocks: list[dict[str, Any]]) -> dict[str, Any]:
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
