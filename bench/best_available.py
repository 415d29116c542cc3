"""Benchmark of best-available seat allocation (``billetterie.inventory.seating``).

An 80,000-seat venue is generated in code: 40 blocks (8 across x 5 tiers) of 50 rows x 40 seats,
ranked by distance to a stage point in front of the middle (ties by y then x, as the setup
import ranks a plan). For each share of seats already taken at random (seeded: 0 %, 30 %, 60 %,
90 %), ``--calls`` requests for ``--quantity`` seats together are answered, in one loop, by:

* ``SeatIndex.best_available``: the index built once for the performance (build time and
  first call shown below the table), kept up to date by ``take`` after each sale, so a call
  re-examines the rows the previous sale changed; and the same call **cold**, right after
  ``SeatIndex.forget()``, searching afresh from the row bounds (the worst case of the index);
* ``best_available(seats)``: the plain function, given the list of free seats;
* the same **plus building that list** from the venue's free flags (``itertools.compress`` over
  the plan kept in rank order, as the ``ix_performance_seat_pick`` index returns it);
* a **naive baseline** that scores every window of every row (brute force), on every
  ``--baseline-every``-th call only, because it is slow.

Every answer is compared across the implementations (a mismatch aborts the run with exit code 1),
then sold: the chosen seats are taken, so successive calls see the venue fill up. The target is
p99 <= 5 ms; a missed target is printed as FAIL and the script still exits 0.

    .venv/bin/python bench/best_available.py
    .venv/bin/python bench/best_available.py --calls 2000 --baseline-every 50
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import compress
from typing import TypeVar

from rich.console import Console
from rich.table import Table

from billetterie.inventory.seating import FreeSeat, PlanSeat, SeatIndex, best_available

BLOCKS_ACROSS, TIERS = 8, 5
ROWS, SEATS_PER_ROW = 50, 40
SEAT_SPACING, ROW_SPACING, AISLE = 0.5, 0.9, 2.0
TAKEN_SHARES = (0.0, 0.3, 0.6, 0.9)
TARGET_P99_MS = 5.0

T = TypeVar("T")

console = Console(width=None if sys.stdout.isatty() else 130)


def venue() -> list[FreeSeat]:
    """Every seat of the venue, in rank order (rank 1 is closest to the stage)."""
    places = []
    block_width = SEATS_PER_ROW * SEAT_SPACING + AISLE
    block_depth = ROWS * ROW_SPACING + AISLE
    for tier in range(TIERS):
        for across in range(BLOCKS_ACROSS):
            block_id = tier * BLOCKS_ACROSS + across + 1
            for row_order in range(ROWS):
                for position in range(SEATS_PER_ROW):
                    x = across * block_width + position * SEAT_SPACING
                    y = tier * block_depth + row_order * ROW_SPACING
                    places.append((x, y, block_id, row_order, position))
    stage_x, stage_y = BLOCKS_ACROSS * block_width / 2, -5.0
    places.sort(key=lambda p: (math.hypot(p[0] - stage_x, p[1] - stage_y), p[1], p[0]))
    # ids in plan order, unrelated to ranks
    ids = {
        (b, r, p): i + 1 for i, (_, _, b, r, p) in enumerate(sorted(places, key=lambda p: p[2:]))
    }
    return [FreeSeat(ids[b, r, p], b, r, p, rank) for rank, (_, _, b, r, p) in enumerate(places, 1)]


def naive(seats: Sequence[FreeSeat], quantity: int) -> list[int] | None:
    """Score every window of every row: the brute force the pruning is measured against."""
    at = {(s.block_id, s.row_order, s.position): s for s in seats}
    best: tuple[tuple[int, int, int, int, int], list[int]] | None = None
    for s in seats:
        b, r, p = s.block_id, s.row_order, s.position
        window = []
        for k in range(quantity):
            seat = at.get((b, r, p + k))
            if seat is None:
                break
            window.append(seat)
        else:
            if (b, r, p - 1) in at and (b, r, p - 2) not in at:
                continue
            if (b, r, p + quantity) in at and (b, r, p + quantity + 1) not in at:
                continue
            ranks = [w.rank for w in window]
            key = (sum(ranks), min(ranks), b, r, p)
            if best is None or key < best[0]:
                best = (key, [w.id for w in window])
    return None if best is None else best[1]


@dataclass
class Timings:
    label: str
    wall: list[float] = field(default_factory=list)  # seconds, perf_counter
    cpu: list[float] = field(default_factory=list)  # seconds, thread CPU time

    def quantile(self, q: float, *, cpu: bool = False) -> float:
        """The q-quantile in milliseconds (nearest rank)."""
        ordered = sorted(self.cpu if cpu else self.wall)
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000

    def timed(self, call: Callable[[], T]) -> T:
        cpu, wall = time.thread_time(), time.perf_counter()
        result = call()
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.thread_time() - cpu)
        return result

    def add(self, other: Timings) -> None:
        """Add `other`'s last sample to this one's (the input built, then the call)."""
        self.wall[-1] += other.wall[-1]
        self.cpu[-1] += other.cpu[-1]


class WrongAnswer(Exception):
    pass


def run_level(
    plan: list[FreeSeat], taken_share: float, args: argparse.Namespace
) -> tuple[list[Timings], dict[str, str]]:
    rng = random.Random(args.seed)
    taken = set(rng.sample([s.id for s in plan], round(taken_share * len(plan))))
    flags = bytearray(0 if s.id in taken else 1 for s in plan)  # per seat of `plan`, free?
    slot = {s.id: i for i, s in enumerate(plan)}

    q = args.quantity
    build = Timings("build")
    index = build.timed(
        lambda: SeatIndex(
            PlanSeat(s.id, s.block_id, s.row_order, s.position, s.rank, s.id not in taken)
            for s in plan
        )
    )
    free_at_start = index.free_count()
    gc.collect()  # the garbage of the build, not the first call's doing
    first = Timings("first call")  # also computes the rows' bounds for q, once per index
    first_answer = first.timed(lambda: index.best_available(q))
    if first_answer != best_available(compress(plan, flags), q):
        raise WrongAnswer(f"first call: index {first_answer} != function")

    by_index_t = Timings("SeatIndex.best_available")
    cold = Timings("  cold: after SeatIndex.forget()")
    function_t = Timings("best_available(free seats)")
    with_input_t = Timings("  + building the input")
    naive_t = Timings(f"naive baseline (1 call in {args.baseline_every})")
    found = 0
    gc.collect()
    for call in range(args.calls):
        seats = with_input_t.timed(lambda: list(compress(plan, flags)))
        by_function = function_t.timed(partial(best_available, seats, q))
        with_input_t.add(function_t)
        by_index = by_index_t.timed(lambda: index.best_available(q))
        if by_index != by_function:
            raise WrongAnswer(f"call {call}: index {by_index} != function {by_function}")
        index.forget()  # the same call again, with nothing remembered from the previous ones
        by_cold = cold.timed(lambda: index.best_available(q))
        if by_cold != by_function:
            raise WrongAnswer(f"call {call}: cold index {by_cold} != function {by_function}")
        if call % args.baseline_every == 0:
            by_naive = naive_t.timed(partial(naive, seats, q))
            if by_naive != by_function:
                raise WrongAnswer(f"call {call}: naive {by_naive} != function {by_function}")
        if by_index is not None:  # sold
            found += 1
            index.take(by_index)
            for seat_id in by_index:
                flags[slot[seat_id]] = 0
    info = {
        "free": f"{free_at_start:,}",
        "build": f"{build.wall[0] * 1000:,.0f} ms",
        "first": f"{first.wall[0] * 1000:.1f} ms",
        "found": f"{found}/{args.calls}",
    }
    return [by_index_t, cold, function_t, with_input_t, naive_t], info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=500, help="calls per taken share")
    parser.add_argument("--baseline-every", type=int, default=25, help="naive baseline period")
    parser.add_argument("--quantity", type=int, default=4)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()

    plan = venue()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    console.print(
        f"venue: {len(plan):,} seats ({TIERS * BLOCKS_ACROSS} blocks x {ROWS} rows x "
        f"{SEATS_PER_ROW} seats), quantity {args.quantity}, {args.calls} calls per level"
    )
    console.print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}")
    table = Table(title="best-available, together, no orphan (times in ms)")
    for column in ("taken", "free", "implementation", "calls", "p50", "p99", "max", "p99 CPU"):
        table.add_column(column, justify="left" if column == "implementation" else "right")
    table.add_column("vs naive", justify="right")
    table.add_column(f"p99 <= {TARGET_P99_MS:g}")
    notes = []
    try:
        for share in TAKEN_SHARES:
            timings, info = run_level(plan, share, args)
            baseline = timings[-1].quantile(0.5)
            for i, t in enumerate(timings):
                p99 = t.quantile(0.99)
                passed = p99 <= TARGET_P99_MS
                table.add_row(
                    f"{share:.0%}" if i == 0 else "",
                    info["free"] if i == 0 else "",
                    t.label,
                    str(len(t.wall)),
                    f"{t.quantile(0.5):.3f}",
                    f"{p99:.3f}",
                    f"{max(t.wall) * 1000:.3f}",
                    f"{t.quantile(0.99, cpu=True):.3f}",
                    f"x{baseline / t.quantile(0.5):,.0f}" if t is not timings[-1] else "",
                    "[green]PASS[/]" if passed else "[bold red]FAIL[/]",
                    end_section=i == len(timings) - 1,
                )
            notes.append(
                f"{share:.0%} taken: SeatIndex built in {info['build']}, first call "
                f"{info['first']}; {info['found']} calls found seats together (then sold)"
            )
    except WrongAnswer as error:
        console.print(f"[bold red]wrong answer[/]: {error}")
        return 1
    console.print(table)
    for note in notes:
        console.print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
