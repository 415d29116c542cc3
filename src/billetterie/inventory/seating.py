"""Best-available seat allocation for numbered seating plans.

Pure and dependency-free (standard library only): the callers load the seats, this module only
chooses. See ``docs/best-available.md`` for the algorithm, its pruning and measured figures.

Vocabulary, for one performance:

* a seat's **row** is its ``(block_id, row_order)``; seats at ``position`` p and p + 1 of the same
  row are side by side, a missing position is a seat that cannot be sold (taken, blocked, in
  another category or contingent, or absent from the plan);
* a **run** is a maximal sequence of free seats with consecutive positions in one row;
* a **window** of ``quantity`` seats is ``quantity`` free seats **together**: one row,
  consecutive positions, all inside one run;
* a window leaves an **orphan** when exactly one free seat is left between it and either end of
  its run; such windows are never offered (0 or >= 2 seats left on each side are fine);
* the **best** window has the lowest sum of ranks (lower rank is better); ties go to the window
  with the lowest single rank, then the lowest ``(block_id, row_order, position)`` of its first
  seat, so the answer is deterministic.

Two entry points share that contract:

* :func:`best_available` takes the free seats as :class:`FreeSeat` values. It must look at every
  seat once (grouping them by row), so it costs O(n) in the number of free seats given;
* :class:`SeatIndex` is built once per performance from all its seats, then kept up to date with
  :meth:`SeatIndex.take` and :meth:`SeatIndex.free`; its :meth:`SeatIndex.best_available` only
  examines the rows that can still win and, from one call to the next, only the rows that
  changed: about a millisecond at worst on 80,000 seats, a few dozen microseconds usually.

When no window qualifies, ``split_allowed`` falls back to the ``quantity`` best-ranked seats
wherever they are (ids in rank order); without it the answer is None.

:func:`best_common` chooses for several performances at once (a season ticket): the best window
of **plan seats** (the venue's seats the performances' seats stand for) that are free at every
one of them and leave no orphan at any of them, so the buyer sits in the same seats every time.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from operator import attrgetter
from typing import NamedTuple

__all__ = [
    "FreeSeat",
    "PlanSeat",
    "SeatIndex",
    "best_available",
    "best_common",
    "best_common_of",
]


@dataclass(frozen=True, slots=True)
class FreeSeat:
    """A free seat the caller may sell."""

    id: int  # performance seat id
    block_id: int
    row_order: int  # the row's place in its block (rows of a block are ordered)
    position: int  # the seat's place in its row: p and p + 1 are side by side
    rank: int  # lower is better (from the seating plan); unique per performance


class PlanSeat(NamedTuple):
    """One seat of a performance's plan, free or not, for :class:`SeatIndex`.

    ``group`` says what may sell the seat, typically its stock id (seat category and
    contingent); :meth:`SeatIndex.best_available` can be restricted to some groups.
    A plain tuple ``(id, block_id, row_order, position, rank, free, group)`` works as well.
    """

    id: int
    block_id: int
    row_order: int
    position: int
    rank: int
    free: bool = True
    group: int = 0


# A window's sort key: (sum of ranks, lowest rank, block_id, row_order, position of its first seat).
_Key = tuple[int, int, int, int, int]
# A row's best window in SeatIndex: _Key + the row's index and the window's first bit.
_Window = tuple[int, int, int, int, int, int, int]
_MAX_CACHED = 64  # (quantity, allowed) combinations remembered by a SeatIndex

_rank: Callable[[FreeSeat], int] = attrgetter("rank")
_position: Callable[[FreeSeat], int] = attrgetter("position")


def _check_quantity(quantity: int) -> None:
    if quantity < 1:
        raise ValueError(f"quantity must be at least 1, not {quantity}")


# --------------------------------------------------------------------------------------------
# The plain function
# --------------------------------------------------------------------------------------------


def best_available(
    seats: Iterable[FreeSeat], quantity: int, *, split_allowed: bool = False
) -> list[int] | None:
    """Choose ``quantity`` seats among ``seats`` (the free seats the caller may sell).

    Returns the ids of the best window of ``quantity`` seats together in one row that leaves no
    orphan, in position order. When there is none: with ``split_allowed`` the ``quantity``
    best-ranked seats overall (ids sorted by rank), else None. None as well when fewer than
    ``quantity`` seats are given. Raises ValueError when ``quantity`` < 1 or when two seats of a
    row the search visits share a position.

    Every seat is read once to group the seats by row; only the rows whose lowest rank can still
    beat the best window found are then sorted and scanned.
    """
    _check_quantity(quantity)
    # block_id -> row_order -> seats: nested dicts, no key tuple allocated per seat
    blocks: dict[int, dict[int, list[FreeSeat]]] = {}
    for seat in seats:
        rows = blocks.get(seat.block_id)
        if rows is None:
            blocks[seat.block_id] = {seat.row_order: [seat]}
            continue
        row = rows.get(seat.row_order)
        if row is None:
            rows[seat.row_order] = [seat]
        else:
            row.append(seat)
    if sum(len(row) for rows in blocks.values() for row in rows.values()) < quantity:
        return None

    # Rows by their lowest rank: every window of a row scores at least quantity x that rank.
    order = sorted(
        (min(map(_rank, row)), block_id, row_order, row)
        for block_id, rows in blocks.items()
        for row_order, row in rows.items()
    )
    best: _Key | None = None
    best_row: list[FreeSeat] = []
    best_start = 0
    for lowest, block_id, row_order, row in order:
        if best is not None and quantity * lowest > best[0]:
            break
        if len(row) < quantity:
            continue
        found = _best_in_row(row, quantity)
        if found is None:
            continue
        score, low, start = found
        candidate = (score, low, block_id, row_order, row[start].position)
        if best is None or candidate < best:
            best, best_row, best_start = candidate, row, start
    if best is not None:
        return [seat.id for seat in best_row[best_start : best_start + quantity]]
    if not split_allowed:
        return None
    # The `quantity` best seats overall lie in the `quantity` rows with the lowest ranks.
    pool = [seat for *_, row in order[:quantity] for seat in row]
    return [seat.id for seat in heapq.nsmallest(quantity, pool, key=_rank)]


def _best_in_row(row: list[FreeSeat], quantity: int) -> tuple[int, int, int] | None:
    """The best window of one row: (sum of ranks, lowest rank, index in ``row``), or None.

    Sorts ``row`` by position in place.
    """
    row.sort(key=_position)
    best: tuple[int, int, int] | None = None
    count = len(row)
    start = 0
    while start < count:
        end = start + 1
        previous = row[start].position
        while end < count:
            position = row[end].position
            if position != previous + 1:
                if position == previous:
                    raise ValueError(f"two seats at position {position} of the same row")
                break
            previous = position
            end += 1
        length = end - start
        if length >= quantity:
            ranks = [seat.rank for seat in row[start:end]]
            last = length - quantity  # windows start at offsets 0..last of the run
            total = sum(ranks[:quantity])
            for offset in range(last + 1):
                if offset:
                    total += ranks[offset + quantity - 1] - ranks[offset - 1]
                if offset == 1 or last - offset == 1:
                    continue  # one seat left alone on the left or on the right
                if best is None or total < best[0]:
                    best = (total, min(ranks[offset : offset + quantity]), start + offset)
                elif total == best[0]:
                    low = min(ranks[offset : offset + quantity])
                    if low < best[1]:
                        best = (total, low, start + offset)
        start = end
    return best


# --------------------------------------------------------------------------------------------
# The same seats at several performances
# --------------------------------------------------------------------------------------------


def best_common(
    performances: Sequence[Mapping[int, FreeSeat]], quantity: int
) -> list[list[int]] | None:
    """Choose the same ``quantity`` plan seats at every performance of ``performances``.

    Each mapping gives one performance's free seats (those the caller may sell) by **plan seat
    id**, the seat of the venue's plan that the performance's seat stands for. The answer is,
    per performance in the given order, the ids of its seats (``FreeSeat.id``, in position
    order) for the best window of plan seats free at every performance: together at each of
    them (one row, consecutive positions) and leaving no orphan at any of them, each
    performance's run and orphan judged on its own free seats. Windows are scored by the sum,
    over the performances, of their ranks; ties go to the lowest single such sum, then to the
    lowest ``(block_id, row_order, position)`` of the first performance's first seat, so with one
    performance (or identical ones) the choice is :func:`best_available`'s without split.

    None when no window qualifies: there is no split fallback, the caller seats each performance
    on its own then. ValueError when ``quantity`` < 1, when no performance is given, or when two
    seats of a row the search visits share a position.

    Costs O(n) in the free seats given (the intersection and the rows' free positions), then the
    rows are pruned as in :func:`best_available`.
    """
    _check_quantity(quantity)
    if not performances:
        raise ValueError("no performance given")
    smallest = min(performances, key=len)
    others = [p for p in performances if p is not smallest]
    common = [plan_id for plan_id in smallest if all(plan_id in p for p in others)]
    if len(common) < quantity:
        return None
    first = performances[0]
    # per performance: (block_id, row_order) -> its free positions, for runs and orphans
    free_at: list[dict[tuple[int, int], set[int]]] = []
    for seats in performances:
        rows: dict[tuple[int, int], set[int]] = {}
        for seat in seats.values():
            rows.setdefault((seat.block_id, seat.row_order), set()).add(seat.position)
        free_at.append(rows)
    # the common seats by row of the first performance, with their summed ranks
    by_row: dict[tuple[int, int], list[tuple[int, int, int]]] = {}  # (position, rank, plan id)
    for plan_id in common:
        seat = first[plan_id]
        rank = sum(p[plan_id].rank for p in performances)
        by_row.setdefault((seat.block_id, seat.row_order), []).append(
            (seat.position, rank, plan_id)
        )
    order = sorted((min(rank for _, rank, _ in row), key, row) for key, row in by_row.items())

    def fits(plan_ids: list[int]) -> bool:
        """Together and without orphan at every performance."""
        for seats, rows in zip(performances, free_at, strict=True):
            placed = [seats[plan_id] for plan_id in plan_ids]
            start = placed[0]
            key = (start.block_id, start.row_order)
            if any(
                (s.block_id, s.row_order) != key or s.position != start.position + i
                for i, s in enumerate(placed)
            ):
                return False
            free = rows[key]
            left, right = start.position - 1, start.position + quantity
            if (left in free and left - 1 not in free) or (right in free and right + 1 not in free):
                return False
        return True

    best: _Key | None = None
    best_ids: list[int] = []
    for lowest, (block_id, row_order), row in order:
        if best is not None and quantity * lowest > best[0]:
            break
        if len(row) < quantity:
            continue
        row.sort()
        for index in range(1, len(row)):
            if row[index][0] == row[index - 1][0]:
                raise ValueError(f"two seats at position {row[index][0]} of the same row")
        for start in range(len(row) - quantity + 1):
            window = row[start : start + quantity]
            if window[-1][0] - window[0][0] != quantity - 1:
                continue  # not consecutive among the common seats
            ranks = [rank for _, rank, _ in window]
            candidate = (sum(ranks), min(ranks), block_id, row_order, window[0][0])
            if best is not None and candidate >= best:
                continue
            plan_ids = [plan_id for *_, plan_id in window]
            if fits(plan_ids):
                best, best_ids = candidate, plan_ids
    if best is None:
        return None
    return [[seats[plan_id].id for plan_id in best_ids] for seats in performances]


# --------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------


def _window_starts(mask: int, quantity: int) -> int:
    """Bit i is set when bits i .. i + quantity - 1 of ``mask`` are all set."""
    span = 1
    while span < quantity:
        step = span if span * 2 <= quantity else quantity - span
        mask &= mask >> step
        span += step
    return mask


def _longest_run(mask: int) -> int:
    length = 0
    while mask:
        mask &= mask >> 1
        length += 1
    return length


class _Search:
    """What a :class:`SeatIndex` remembers of the search for one (quantity, allowed groups).

    Rows are examined in the order of their bounds; ``examined`` of them so far. ``heap`` holds
    the best window of every examined row that has one, as ``_Window`` + the row's version when
    it was examined: an entry whose row changed since is stale and dropped when it surfaces.
    ``changed`` lists the examined rows changed since the last call, to examine again.
    """

    __slots__ = ("changed", "examined", "heap", "seen")

    def __init__(self, rows: int) -> None:
        self.examined = 0
        self.seen = bytearray(rows)  # per row: examined already
        self.heap: list[tuple[int, int, int, int, int, int, int, int]] = []
        self.changed: set[int] = set()


class SeatIndex:
    """The seats of one performance, kept in memory for fast best-available.

    Build it once from every seat of the performance (free or not), keep it in step with the
    database through :meth:`take` (a seat stops being free: held, sold, blocked) and :meth:`free`
    (it is free again), and ask :meth:`best_available`, which follows the contract of the
    module's :func:`best_available` over the free seats of the allowed groups.

    Inside, each row is a bitmask of free seats (one bit per position; a gap in the plan's
    positions becomes one bit that is never free), so a row's windows, runs and orphans are a
    handful of integer operations. Rows are examined in the order of a lower bound of their
    score (the sum of the ``quantity`` lowest ranks of the row's plan seats, computed once per
    quantity) until the next bound exceeds the best window found. What was examined is kept per
    (quantity, allowed) in a heap of the rows' best windows, and :meth:`take` and :meth:`free`
    mark the rows they change: the next call examines those rows again and, unless a better
    window may lie in rows not examined yet, answers from the top of the heap.

    Not thread-safe: a process serving several requests at once must serialise the calls.
    """

    __slots__ = (
        "_allowed_masks",
        "_bounds",
        "_free",
        "_free_by_group",
        "_group_masks",
        "_ids",
        "_longest",
        "_positions",
        "_prefix",
        "_ranks",
        "_row_keys",
        "_searches",
        "_sorted_ranks",
        "_versions",
        "_where",
    )

    def __init__(
        self, seats: Iterable[PlanSeat | tuple[int, int, int, int, int, bool, int]]
    ) -> None:
        """Index ``seats``, every seat of the performance.

        Raises ValueError when a seat id appears twice or two seats share a row and position.
        """
        by_row: dict[tuple[int, int], list[PlanSeat]] = {}
        for raw in seats:
            seat = raw if isinstance(raw, PlanSeat) else PlanSeat(*raw)
            by_row.setdefault((seat.block_id, seat.row_order), []).append(seat)

        self._row_keys: list[tuple[int, int]] = sorted(by_row)
        self._ids: list[list[int]] = []  # per row, per bit: seat id (-1 in a gap)
        self._positions: list[list[int]] = []  # per row, per bit: position (-1 in a gap)
        self._ranks: list[list[int]] = []  # per row, per bit: rank (0 in a gap)
        self._prefix: list[list[int]] = []  # per row: prefix sums of _ranks
        self._sorted_ranks: list[list[int]] = []  # per row: the plan's ranks, ascending
        self._free: list[int] = []  # per row: bitmask of the free seats
        self._longest: list[int] = []  # per row: longest run of free seats
        self._group_masks: list[dict[int, int]] = []  # per row: group -> bitmask of its seats
        self._where: dict[int, tuple[int, int, int]] = {}  # seat id -> (row, bit, group)
        self._free_by_group: dict[int, int] = {}

        for row_index, key in enumerate(self._row_keys):
            row = sorted(by_row[key], key=lambda s: s.position)
            ids: list[int] = []
            positions: list[int] = []
            ranks: list[int] = []
            free = 0
            groups: dict[int, int] = {}
            previous: int | None = None
            for seat in row:
                if previous is not None and seat.position != previous + 1:
                    if seat.position == previous:
                        raise ValueError(
                            f"two seats at position {seat.position} of row {key} (block, row)"
                        )
                    ids.append(-1)  # a gap: one bit that is never free separates the runs
                    positions.append(-1)
                    ranks.append(0)
                previous = seat.position
                bit = 1 << len(ids)
                if seat.id in self._where:
                    raise ValueError(f"seat {seat.id} appears twice")
                self._where[seat.id] = (row_index, bit, seat.group)
                ids.append(seat.id)
                positions.append(seat.position)
                ranks.append(seat.rank)
                groups[seat.group] = groups.get(seat.group, 0) | bit
                self._free_by_group.setdefault(seat.group, 0)
                if seat.free:
                    free |= bit
                    self._free_by_group[seat.group] += 1
            prefix = [0]
            for rank in ranks:
                prefix.append(prefix[-1] + rank)
            self._ids.append(ids)
            self._positions.append(positions)
            self._ranks.append(ranks)
            self._prefix.append(prefix)
            self._sorted_ranks.append(sorted(seat.rank for seat in row))
            self._free.append(free)
            self._longest.append(_longest_run(free))
            self._group_masks.append(groups)

        self._versions = [0] * len(self._row_keys)  # per row: bumped at every change
        self._bounds: dict[int, list[tuple[int, int]]] = {}  # quantity -> (bound, row) ascending
        # (allowed groups, blocks) -> per row mask
        self._allowed_masks: dict[
            tuple[frozenset[int] | None, frozenset[int] | None], list[int]
        ] = {}
        # (quantity, allowed groups, blocks) -> search
        self._searches: dict[tuple[int, frozenset[int] | None, frozenset[int] | None], _Search] = {}

    # -- state ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, seat_id: object) -> bool:
        return seat_id in self._where

    def is_free(self, seat_id: int) -> bool:
        """Whether the seat is free; KeyError for an unknown seat."""
        row, bit, _ = self._where[seat_id]
        return bool(self._free[row] & bit)

    def free_count(self, allowed: Collection[int] | None = None) -> int:
        """How many seats are free (in the ``allowed`` groups, all groups when None)."""
        if allowed is None:
            return sum(self._free_by_group.values())
        return sum(self._free_by_group.get(group, 0) for group in set(allowed))

    def free_seats(
        self, allowed: Collection[int] | None = None, blocks: Collection[int] | None = None
    ) -> list[FreeSeat]:
        """The free seats (of the ``allowed`` groups, in the ``blocks``; all when None), as
        the input of :func:`best_available` or :func:`best_common`. O(free seats)."""
        groups = None if allowed is None else frozenset(allowed)
        within = None if blocks is None else frozenset(blocks)
        masks = None if groups is None and within is None else self._masks_for(groups, within)
        seats: list[FreeSeat] = []
        for row, free in enumerate(self._free):
            mask = free if masks is None else free & masks[row]
            if not mask:
                continue
            block_id, row_order = self._row_keys[row]
            ids, positions, ranks = self._ids[row], self._positions[row], self._ranks[row]
            while mask:
                low = mask & -mask
                mask ^= low
                bit = low.bit_length() - 1
                seats.append(FreeSeat(ids[bit], block_id, row_order, positions[bit], ranks[bit]))
        return seats

    def layout(self) -> list[tuple[tuple[int, int], list[int]]]:
        """Per row, its ``(block_id, row_order)`` and the seat id at each of its bits (-1 in a
        gap), in the order :func:`best_common_of` compares indexes by."""
        return [(key, list(ids)) for key, ids in zip(self._row_keys, self._ids, strict=True)]

    def take(self, seat_ids: Iterable[int]) -> None:
        """Mark free seats as no longer free (held, sold, blocked).

        All or nothing: KeyError for an unknown seat, ValueError when a seat is not free or
        appears twice, and then nothing changes.
        """
        self._change(seat_ids, to_free=False)

    def free(self, seat_ids: Iterable[int]) -> None:
        """Mark seats free again. All or nothing, like :meth:`take` (ValueError if already free)."""
        self._change(seat_ids, to_free=True)

    def _change(self, seat_ids: Iterable[int], *, to_free: bool) -> None:
        wanted = list(seat_ids)
        if len(set(wanted)) != len(wanted):
            raise ValueError("a seat appears twice")
        places: list[tuple[int, int, int]] = []
        for seat_id in wanted:
            try:
                place = self._where[seat_id]
            except KeyError:
                raise KeyError(f"no seat {seat_id} in this index") from None
            if bool(self._free[place[0]] & place[1]) == to_free:
                raise ValueError(f"seat {seat_id} is already {'free' if to_free else 'taken'}")
            places.append(place)
        rows: set[int] = set()
        step = 1 if to_free else -1
        for row, bit, group in places:
            self._free[row] ^= bit
            self._free_by_group[group] += step
            rows.add(row)
        for row in rows:
            self._longest[row] = _longest_run(self._free[row])
            self._versions[row] += 1
            for search in self._searches.values():
                if search.seen[row]:
                    search.changed.add(row)

    def forget(self) -> None:
        """Drop what past searches remembered; the next call of each kind starts afresh.

        Seat states and the per-quantity bounds are kept. Useful to bound memory when many
        (quantity, allowed) combinations were asked, or to measure a cold search.
        """
        self._searches.clear()

    # -- search --------------------------------------------------------------------------------

    def _bounds_for(self, quantity: int) -> list[tuple[int, int]]:
        bounds = self._bounds.get(quantity)
        if bounds is None:
            bounds = sorted(
                (sum(ranks[:quantity]), row)
                for row, ranks in enumerate(self._sorted_ranks)
                if len(ranks) >= quantity
            )
            self._bounds[quantity] = bounds
        return bounds

    def _masks_for(
        self, allowed: frozenset[int] | None, blocks: frozenset[int] | None = None
    ) -> list[int]:
        """Per row, the bits of the seats of the ``allowed`` groups (every group: None) in
        the ``blocks`` (every block: None)."""
        masks = self._allowed_masks.get((allowed, blocks))
        if masks is None:
            masks = []
            for row, groups in enumerate(self._group_masks):
                mask = 0
                if blocks is None or self._row_keys[row][0] in blocks:
                    for group, bits in groups.items():
                        if allowed is None or group in allowed:
                            mask |= bits
                masks.append(mask)
            if len(self._allowed_masks) >= _MAX_CACHED:
                self._allowed_masks.clear()
            self._allowed_masks[(allowed, blocks)] = masks
        return masks

    def best_available(
        self,
        quantity: int,
        *,
        split_allowed: bool = False,
        allowed: Collection[int] | None = None,
        blocks: Collection[int] | None = None,
    ) -> list[int] | None:
        """Choose ``quantity`` free seats, as the module's :func:`best_available` would.

        ``allowed`` restricts the choice to the seats of these groups (e.g. the stocks of one
        seat category that the sales channel may sell); seats of other groups count as
        unavailable, also for runs and orphans. None means every group. ``blocks`` restricts it
        the same way to the seats of these blocks (a buyer's preferred areas).
        """
        _check_quantity(quantity)
        groups = None if allowed is None else frozenset(allowed)
        within = None if blocks is None else frozenset(blocks)
        masks = None
        if groups is not None or within is not None:
            masks = self._masks_for(groups, within)
        if within is None:
            if self.free_count(groups) < quantity:
                return None
        else:
            assert masks is not None
            free = sum((f & m).bit_count() for f, m in zip(self._free, masks, strict=True))
            if free < quantity:
                return None
        best = self._best_window(quantity, (groups, within), masks)
        if best is not None:
            bit = best[6]
            return self._ids[best[5]][bit : bit + quantity]
        if split_allowed:
            return self._best_seats(quantity, masks)
        return None

    def _best_window(
        self,
        quantity: int,
        key: tuple[frozenset[int] | None, frozenset[int] | None],
        masks: list[int] | None,
    ) -> _Window | None:
        search = self._searches.get((quantity, *key))
        if search is None:
            if len(self._searches) >= _MAX_CACHED:
                self._searches.clear()
            search = self._searches[(quantity, *key)] = _Search(len(self._row_keys))
        heap = search.heap
        versions = self._versions
        for row in search.changed:
            found = self._best_in_row(row, quantity, masks)
            if found is not None:
                heapq.heappush(heap, (*found, versions[row]))
        search.changed.clear()
        if len(heap) > 2 * len(versions) + 64:  # mostly stale entries: compact
            heap[:] = [entry for entry in heap if entry[7] == versions[entry[5]]]
            heapq.heapify(heap)

        bounds = self._bounds_for(quantity)
        seen = search.seen
        while True:
            while heap and heap[0][7] != versions[heap[0][5]]:
                heapq.heappop(heap)  # that row changed since: examined again above
            if search.examined == len(bounds):
                break
            bound, row = bounds[search.examined]
            if heap and bound > heap[0][0]:
                break  # no row left to examine can beat or tie the best window
            search.examined += 1
            seen[row] = 1
            found = self._best_in_row(row, quantity, masks)
            if found is not None:
                heapq.heappush(heap, (*found, versions[row]))
        return heap[0][:7] if heap else None

    def _best_in_row(self, row: int, quantity: int, masks: list[int] | None) -> _Window | None:
        """The row's best window (see ``_Window``), None when it has none."""
        if self._longest[row] < quantity:
            return None
        mask = self._free[row] if masks is None else self._free[row] & masks[row]
        starts = _window_starts(mask, quantity)
        # Orphans: one free seat at bit i - 1 but not i - 2 (left), or at bit i + quantity but
        # not i + quantity + 1 (right) of a window starting at bit i.
        starts &= ~(((mask << 1) & ~(mask << 2)) | ((mask >> quantity) & ~(mask >> (quantity + 1))))
        if not starts:
            return None
        prefix = self._prefix[row]
        ranks = self._ranks[row]
        best_score = best_low = best_bit = -1
        while starts:
            low = starts & -starts
            starts ^= low
            bit = low.bit_length() - 1
            score = prefix[bit + quantity] - prefix[bit]
            if best_bit < 0 or score < best_score:
                best_score, best_low, best_bit = score, -1, bit
            elif score == best_score:  # rare: the lowest rank decides, then the first position
                if best_low < 0:
                    best_low = min(ranks[best_bit : best_bit + quantity])
                lowest = min(ranks[bit : bit + quantity])
                if lowest < best_low:
                    best_low, best_bit = lowest, bit
        if best_low < 0:
            best_low = min(ranks[best_bit : best_bit + quantity])
        block_id, row_order = self._row_keys[row]
        position = self._positions[row][best_bit]
        return (best_score, best_low, block_id, row_order, position, row, best_bit)

    def _best_seats(self, quantity: int, masks: list[int] | None) -> list[int]:
        """The split fallback: the ``quantity`` best-ranked free (allowed) seats, by rank.

        Rows are visited by their lowest plan rank, until that rank is worse than the worst of
        the ``quantity`` best seats found. The caller checked that there are enough free seats.
        """
        chosen: list[tuple[int, int]] = []  # (-rank, id): a max-heap of the best seats so far
        free = self._free
        for lowest, row in self._bounds_for(1):
            if len(chosen) == quantity and lowest > -chosen[0][0]:
                break
            mask = free[row] if masks is None else free[row] & masks[row]
            ranks = self._ranks[row]
            ids = self._ids[row]
            while mask:
                low = mask & -mask
                mask ^= low
                bit = low.bit_length() - 1
                rank = ranks[bit]
                if len(chosen) < quantity:
                    heapq.heappush(chosen, (-rank, ids[bit]))
                elif rank < -chosen[0][0]:
                    heapq.heapreplace(chosen, (-rank, ids[bit]))
        return [seat_id for _, seat_id in sorted(chosen, reverse=True)]


def best_common_of(
    indexes: Sequence[SeatIndex],
    quantity: int,
    *,
    allowed: Sequence[Collection[int] | None] | None = None,
    blocks: Collection[int] | None = None,
) -> list[list[int]] | None:
    """:func:`best_common` over indexes laid out alike, with their bitmasks.

    The indexes must have the same rows and, in each row, the same position at each bit (the
    performances of one plan: the caller checks that a bit stands for the same plan seat
    everywhere, e.g. with :meth:`SeatIndex.layout`); ValueError otherwise. ``allowed`` gives
    each index its allowed groups (None: every group), ``blocks`` restricts all of them; seats
    outside count as unavailable, as in :meth:`SeatIndex.best_available`. The answer is
    :func:`best_common`'s over the same free seats: per index, the seat ids of the best window
    of bits free in every index, leaving no orphan in any, by the summed ranks.

    Per row: the free masks are ANDed, windows found on the result, and each index's orphans
    removed from the window starts; O(rows x indexes) big-integer operations, against
    :func:`best_common`'s O(free seats) objects.
    """
    _check_quantity(quantity)
    if not indexes:
        raise ValueError("no index given")
    first = indexes[0]
    for other in indexes[1:]:
        if other._row_keys != first._row_keys or other._positions != first._positions:
            raise ValueError("the indexes are not laid out alike")
    within = None if blocks is None else frozenset(blocks)
    masks: list[list[int] | None] = []
    for number, index in enumerate(indexes):
        groups = allowed[number] if allowed is not None else None
        frozen = None if groups is None else frozenset(groups)
        masks.append(
            None if frozen is None and within is None else index._masks_for(frozen, within)
        )
    best: _Key | None = None
    best_row = best_bit = -1
    for row, (block_id, row_order) in enumerate(first._row_keys):
        frees: list[int] = []
        for index, mask in zip(indexes, masks, strict=True):
            if index._longest[row] < quantity:
                break
            frees.append(index._free[row] if mask is None else index._free[row] & mask[row])
        else:
            starts = _window_starts(reduce(operator.and_, frees), quantity)
            for free in frees:
                if not starts:
                    break
                starts &= ~(
                    ((free << 1) & ~(free << 2)) | ((free >> quantity) & ~(free >> (quantity + 1)))
                )
            while starts:
                low = starts & -starts
                starts ^= low
                bit = low.bit_length() - 1
                score = sum(
                    index._prefix[row][bit + quantity] - index._prefix[row][bit]
                    for index in indexes
                )
                if best is not None and score > best[0]:
                    continue
                lowest = min(
                    sum(index._ranks[row][b] for index in indexes)
                    for b in range(bit, bit + quantity)
                )
                position = first._positions[row][bit]
                candidate = (score, lowest, block_id, row_order, position)
                if best is None or candidate < best:
                    best, best_row, best_bit = candidate, row, bit
    if best is None:
        return None
    return [index._ids[best_row][best_bit : best_bit + quantity] for index in indexes]
