"""Best-available seat allocation (``billetterie.inventory.seating``): pure, no database.

Hand-made rows pin the exact choices; hypothesis checks generated plans against a brute-force
reference that scores every window of every row. The same for :func:`best_common`, the same plan
seats at several performances (a season ticket).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billetterie.inventory.seating import (
    FreeSeat,
    PlanSeat,
    SeatIndex,
    best_available,
    best_common,
    best_common_of,
)

# -- helpers -----------------------------------------------------------------------------------


def row(
    ranks: Sequence[int | None], *, block: int = 1, row_order: int = 1, first: int = 0
) -> list[FreeSeat]:
    """Free seats of one row from left to right; None is a seat that is not free."""
    return [
        FreeSeat(block * 10_000 + row_order * 100 + first + i, block, row_order, first + i, rank)
        for i, rank in enumerate(ranks)
        if rank is not None
    ]


def ids_at(seats: Sequence[FreeSeat], *positions: int) -> list[int]:
    by_position = {seat.position: seat.id for seat in seats}
    return [by_position[p] for p in positions]


Key = tuple[int, int, int, int, int]


def windows(seats: Sequence[FreeSeat], quantity: int) -> list[tuple[Key, list[int]]]:
    """Brute force: every window of `quantity` free seats together that leaves no orphan."""
    at = {(s.block_id, s.row_order, s.position): s for s in seats}
    found = []
    for s in seats:
        b, r, p = s.block_id, s.row_order, s.position
        window = [at.get((b, r, p + k)) for k in range(quantity)]
        if any(w is None for w in window):
            continue
        left_orphan = (b, r, p - 1) in at and (b, r, p - 2) not in at
        right_orphan = (b, r, p + quantity) in at and (b, r, p + quantity + 1) not in at
        if left_orphan or right_orphan:
            continue
        ranks = [w.rank for w in window if w is not None]
        key = (sum(ranks), min(ranks), b, r, p)
        found.append((key, [w.id for w in window if w is not None]))
    return found


def reference(seats: Sequence[FreeSeat], quantity: int, split_allowed: bool) -> list[int] | None:
    if len(seats) < quantity:
        return None
    found = windows(seats, quantity)
    if found:
        return min(found)[1]
    if split_allowed:
        return [s.id for s in sorted(seats, key=lambda s: s.rank)[:quantity]]
    return None


def assert_together_without_orphan(seats: Sequence[FreeSeat], chosen: list[int], q: int) -> None:
    by_id = {s.id: s for s in seats}
    assert len(chosen) == q
    assert len(set(chosen)) == q, "distinct"
    assert all(i in by_id for i in chosen), "free"
    picked = [by_id[i] for i in chosen]
    first = picked[0]
    assert {(s.block_id, s.row_order) for s in picked} == {(first.block_id, first.row_order)}
    assert [s.position for s in picked] == list(range(first.position, first.position + q))
    taken = {(s.block_id, s.row_order, s.position) for s in seats}
    b, r, p = first.block_id, first.row_order, first.position
    assert not ((b, r, p - 1) in taken and (b, r, p - 2) not in taken), "orphan on the left"
    assert not ((b, r, p + q) in taken and (b, r, p + q + 1) not in taken), "orphan on the right"


# -- the function on hand-made rows ------------------------------------------------------------


def test_best_ranks_win() -> None:
    front = row([10, 11, 12, 13], row_order=1)
    back = row([1, 2, 30, 31], row_order=2)
    assert best_available(front + back, 2) == ids_at(back, 0, 1)


def test_orphan_is_avoided() -> None:
    seats = row([50, 1, 2, 3, 60])  # [1, 2, 3] would leave one seat on each side
    assert best_available(seats, 3) == ids_at(seats, 0, 1, 2)


def test_leaving_two_seats_is_fine() -> None:
    seats = row([1, 2, 3, 4])
    assert best_available(seats, 2) == ids_at(seats, 0, 1)


def test_a_run_of_three_has_no_pair() -> None:
    seats = row([1, 2, 3])
    assert best_available(seats, 2) is None
    assert best_available(seats, 3) == ids_at(seats, 0, 1, 2)


def test_gaps_split_runs() -> None:
    # position 2 is taken: (3, 4) would be better but leaves 5 alone, and (4, 5) leaves 3 alone
    seats = row([10, 1, None, 2, 3, 4])
    assert best_available(seats, 2) == ids_at(seats, 0, 1)
    assert best_available(row([1, None, 2]), 2) is None


def test_single_seats_follow_the_orphan_rule_too() -> None:
    assert best_available(row([1, 2]), 1) is None  # either seat leaves the other alone
    assert best_available(row([5]), 1) == ids_at(row([5]), 0)
    seats = row([6, 1, 5])  # the middle seat would leave two orphans
    assert best_available(seats, 1) == ids_at(seats, 2)


def test_ids_come_in_position_order() -> None:
    seats = row([4, 3, 2, 1])
    assert best_available(reversed(seats), 4) == ids_at(seats, 0, 1, 2, 3)


def test_equal_sums_go_to_the_lowest_rank() -> None:
    a = row([1, 10], row_order=1)
    b = row([5, 6], row_order=2)
    assert best_available(b + a, 2) == ids_at(a, 0, 1)


def test_equal_sums_and_lowest_rank_go_to_the_first_position() -> None:
    seats = row([5, 6, 1, 4, 7])  # (5, 6, 1) and (1, 4, 7) both sum to 12 around rank 1
    assert best_available(seats, 3) == ids_at(seats, 0, 1, 2)


def test_ties_are_deterministic_even_with_equal_ranks() -> None:
    a = row([1, 2], block=2, row_order=1)
    b = row([1, 2], block=1, row_order=3)
    c = row([1, 2], block=1, row_order=2)
    for order in (a + b + c, c + b + a, b + a + c):
        assert best_available(order, 2) == ids_at(c, 0, 1)


def test_split_fallback_returns_the_best_ranks_in_rank_order() -> None:
    seats = row([2, 3, 1])
    assert best_available(seats, 2) is None
    assert best_available(seats, 2, split_allowed=True) == ids_at(seats, 2, 0)


def test_split_is_only_a_fallback() -> None:
    seats = row([1, None, 2, 3, 4, 5])
    assert best_available(seats, 2, split_allowed=True) == ids_at(seats, 2, 3)


def test_too_few_seats() -> None:
    assert best_available([], 1) is None
    assert best_available(row([1]), 2, split_allowed=True) is None
    assert best_available(row([1, None, 2]), 3, split_allowed=True) is None


@pytest.mark.parametrize("quantity", [0, -1])
def test_quantity_must_be_positive(quantity: int) -> None:
    with pytest.raises(ValueError):
        best_available(row([1, 2]), quantity)
    with pytest.raises(ValueError):
        SeatIndex([]).best_available(quantity)


def test_two_seats_at_one_position_are_refused() -> None:
    seats = [*row([1, 2]), FreeSeat(99, 1, 1, 1, 3)]
    with pytest.raises(ValueError, match="position"):
        best_available(seats, 2)


def test_accepts_a_generator() -> None:
    seats = row([3, 1, 2, 9, 8])
    assert best_available((s for s in seats), 2) == ids_at(seats, 0, 1)


# -- the index ---------------------------------------------------------------------------------


def plan_of(seats: Sequence[FreeSeat], group: int = 0) -> list[PlanSeat]:
    return [PlanSeat(s.id, s.block_id, s.row_order, s.position, s.rank, True, group) for s in seats]


def test_index_follows_take_and_free() -> None:
    seats = row([1, 2, 3, 4, 5, 6])
    index = SeatIndex(plan_of(seats))
    assert len(index) == 6 and seats[0].id in index and 12345 not in index
    first = index.best_available(2)
    assert first == ids_at(seats, 0, 1)
    index.take(first)
    assert not index.is_free(first[0]) and index.free_count() == 4
    assert index.best_available(2) == ids_at(seats, 2, 3)
    index.free(first)
    assert index.best_available(2) == first and index.free_count() == 6


def test_index_changes_are_all_or_nothing() -> None:
    seats = row([1, 2, 3, 4])
    index = SeatIndex(plan_of(seats))
    index.take([seats[0].id])
    with pytest.raises(ValueError, match="already taken"):
        index.take([seats[1].id, seats[0].id])
    with pytest.raises(KeyError):
        index.take([seats[2].id, 777])
    with pytest.raises(ValueError, match="twice"):
        index.take([seats[3].id, seats[3].id])
    with pytest.raises(ValueError, match="already free"):
        index.free([seats[0].id, seats[1].id])
    assert [index.is_free(s.id) for s in seats] == [False, True, True, True]
    with pytest.raises(KeyError):
        index.is_free(777)


def test_index_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="twice"):
        SeatIndex([PlanSeat(1, 1, 1, 0, 1), PlanSeat(1, 1, 1, 1, 2)])
    with pytest.raises(ValueError, match="position"):
        SeatIndex([PlanSeat(1, 1, 1, 0, 1), PlanSeat(2, 1, 1, 0, 2)])


def test_index_allowed_groups_shape_the_runs() -> None:
    # positions 0-1 in group 1, 2-5 in group 2: for group 2 alone, (2, 3) leaves two seats
    seats = row([5, 6, 1, 2, 3, 4])
    plan = [PlanSeat(*s[:5], True, 1 if s[3] < 2 else 2) for s in plan_of(seats)]
    index = SeatIndex(plan)
    assert index.best_available(2) == ids_at(seats, 2, 3)  # leaves (0, 1) and (4, 5)
    assert index.best_available(2, allowed={2}) == ids_at(seats, 2, 3)
    assert index.best_available(2, allowed=[1]) == ids_at(seats, 0, 1)
    assert index.best_available(3, allowed={1}) is None
    assert index.best_available(3, allowed={1}, split_allowed=True) is None
    assert index.best_available(3, allowed={2}) is None  # a run of 4 has no trio
    assert index.best_available(3, allowed={2}, split_allowed=True) == ids_at(seats, 2, 3, 4)
    assert index.best_available(1, allowed=set()) is None
    assert index.free_count({1}) == 2 and index.free_count({2, 3}) == 4


def test_index_accepts_plain_tuples() -> None:
    index = SeatIndex([(1, 1, 1, 0, 1, True, 0), (2, 1, 1, 1, 2, False, 0)])
    assert index.best_available(1) == [1]
    assert index.best_available(2, split_allowed=True) is None


# -- properties on generated plans -------------------------------------------------------------


@st.composite
def plans(draw: st.DrawFn) -> list[PlanSeat]:
    """A plan of a few blocks and rows, with gaps, taken seats, groups and permuted ranks."""
    places = []
    for block in draw(st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True)):
        for row_order in draw(st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True)):
            if draw(st.booleans()):  # a full row
                positions = list(range(draw(st.integers(0, 12))))
            else:
                positions = draw(st.lists(st.integers(-3, 14), max_size=14, unique=True))
            places.extend((block, row_order, p) for p in positions)
    n = len(places)
    offset = draw(st.integers(-20, 20))
    free_share = draw(st.sampled_from([0.3, 0.6, 0.9, 1.0]))
    rng = random.Random(draw(st.integers(0, 2**32)))  # cheaper than st.randoms() per call
    ranks = rng.sample(range(n), n)  # a permutation: ranks are unique per performance
    ids = rng.sample(range(1000, 1000 + n), n)
    return [
        PlanSeat(ids[i], b, r, p, ranks[i] + offset, rng.random() < free_share, rng.randrange(3))
        for i, (b, r, p) in enumerate(places)
    ]


def free_seats(plan: Sequence[PlanSeat], allowed: set[int] | None = None) -> list[FreeSeat]:
    return [
        FreeSeat(s.id, s.block_id, s.row_order, s.position, s.rank)
        for s in plan
        if s.free and (allowed is None or s.group in allowed)
    ]


@settings(max_examples=200, deadline=None)
@given(plans(), st.integers(1, 5), st.booleans(), st.integers(0, 2**32))
def test_function_matches_brute_force(
    plan: list[PlanSeat], quantity: int, split: bool, seed: int
) -> None:
    seats = free_seats(plan)
    random.Random(seed).shuffle(seats)  # any input order
    chosen = best_available(seats, quantity, split_allowed=split)
    found = windows(seats, quantity)
    if chosen is None:
        assert not found, "None although a window qualifies"
        assert not split or len(seats) < quantity
        return
    if found:
        assert_together_without_orphan(seats, chosen, quantity)
        keys = {tuple(ids): key for key, ids in found}
        assert min(found)[0] == keys[tuple(chosen)], "a qualifying window scores better"
    else:
        assert split
        assert chosen == [s.id for s in sorted(seats, key=lambda s: s.rank)[:quantity]]
    assert chosen == reference(seats, quantity, split)


@settings(max_examples=200, deadline=None)
@given(
    plans(),
    st.integers(1, 5),
    st.booleans(),
    st.none() | st.sets(st.integers(0, 3), max_size=3),
)
def test_index_matches_the_function(
    plan: list[PlanSeat], quantity: int, split: bool, allowed: set[int] | None
) -> None:
    index = SeatIndex(plan)
    seats = free_seats(plan, allowed)
    expected = reference(seats, quantity, split)
    assert index.best_available(quantity, split_allowed=split, allowed=allowed) == expected
    assert best_available(seats, quantity, split_allowed=split) == expected
    assert index.free_count(allowed) == len(seats)


@settings(max_examples=200, deadline=None)
@given(
    plans(),
    st.integers(1, 5),
    st.booleans(),
    st.none() | st.sets(st.integers(0, 3), max_size=3),
    st.sets(st.integers(0, 9), max_size=3),
)
def test_index_within_blocks_matches_the_function_on_those_blocks(
    plan: list[PlanSeat], quantity: int, split: bool, allowed: set[int] | None, blocks: set[int]
) -> None:
    """A buyer's preferred areas: seats outside the blocks count as unavailable, for runs and
    orphans too, exactly as if the plan had only those blocks' seats free."""
    index = SeatIndex(plan)
    seats = [s for s in free_seats(plan, allowed) if s.block_id in blocks]
    expected = reference(seats, quantity, split)
    chosen = index.best_available(quantity, split_allowed=split, allowed=allowed, blocks=blocks)
    assert chosen == expected
    # the same search without blocks is unaffected by the one with them (separate caches)
    everywhere = reference(free_seats(plan, allowed), quantity, split)
    assert index.best_available(quantity, split_allowed=split, allowed=allowed) == everywhere


ALLOWED_CHOICES: list[set[int] | None] = [None, {0}, {0, 1}, {1, 2}]


@settings(max_examples=200, deadline=None)
@given(
    plans(),
    st.lists(
        st.tuples(st.integers(1, 4), st.booleans(), st.sampled_from(ALLOWED_CHOICES)), max_size=8
    ),
    st.data(),
)
def test_index_stays_right_through_sales_and_returns(
    plan: list[PlanSeat], steps: list[tuple[int, bool, set[int] | None]], data: st.DataObject
) -> None:
    """Row results are remembered per (quantity, allowed): take and free must forget them."""
    index = SeatIndex(plan)
    free = {s.id: s.free for s in plan}
    for quantity, sell_best, allowed in steps:
        current = [s._replace(free=free[s.id]) for s in plan]
        for q, groups in ((quantity, allowed), (quantity, None), (1, {0})):
            expected = reference(free_seats(current, groups), q, True)
            assert index.best_available(q, split_allowed=True, allowed=groups) == expected
        chosen = index.best_available(quantity, split_allowed=True, allowed=allowed)
        if sell_best and chosen is not None:
            index.take(chosen)
            for seat_id in chosen:
                free[seat_id] = False
        else:  # a return: some taken seats are free again
            taken = sorted(i for i, f in free.items() if not f)
            back = data.draw(st.lists(st.sampled_from(taken), unique=True)) if taken else []
            index.free(back)
            for seat_id in back:
                free[seat_id] = True
        assert index.free_count() == sum(free.values())


def test_index_answers_the_same_after_forgetting() -> None:
    seats = row([9, 1, 2, 3, 4, 8, 7]) + row([5, 6, 10, 11], row_order=2)
    index = SeatIndex(plan_of(seats))
    before = [index.best_available(q, split_allowed=True) for q in (1, 2, 3, 4)]
    index.take(before[1] or [])
    index.forget()
    index.free(before[1] or [])
    assert [index.best_available(q, split_allowed=True) for q in (1, 2, 3, 4)] == before


def test_index_forgets_old_combinations_and_stays_right() -> None:
    seats = row([1, 2, 3, 4, 5, 6, 7, 8])
    plan = [s._replace(group=i) for i, s in enumerate(plan_of(seats))]
    index = SeatIndex(plan)
    for i in range(150):  # more (quantity, allowed) combinations than the index remembers
        allowed = set(range(i % 8, 8))
        expected = reference(free_seats(plan, allowed), 1 + i % 3, False)
        assert index.best_available(1 + i % 3, allowed=allowed) == expected


# -- the same seats at several performances ---------------------------------------------------


def performance(free_positions: Sequence[int], number: int, size: int = 8) -> dict[int, FreeSeat]:
    """One performance of a one-row plan of ``size`` seats ranked 1.. from the left: its free
    seats by plan seat id (the position); its own seat ids are number * 100 + position."""
    return {
        p: FreeSeat(number * 100 + p, 1, 1, p, p + 1) for p in range(size) if p in free_positions
    }


def plan_ids(chosen: list[list[int]] | None) -> list[list[int]] | None:
    return None if chosen is None else [[i % 100 for i in ids] for ids in chosen]


@pytest.mark.parametrize(
    ("free", "quantity", "expected"),
    [
        # taken differently at each performance: the best pair free at both
        ([[2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 5, 6, 7]], 2, [2, 3]),
        # a window that leaves a lonely seat at one performance only is not offered
        ([[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 4, 5, 6, 7]], 2, [4, 5]),
        ([[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 4, 5, 6, 7], [0, 1, 4, 5, 6, 7]], 2, [4, 5]),
        ([[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7]], 3, [3, 4, 5]),
        # one seat: the best one free at all three that leaves no lonely seat at any (2 would at
        # the second, 3 at the third)
        ([[0, 1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7], [0, 2, 3, 4, 5, 6, 7]], 1, [4]),
        # free seats everywhere, but none free at both
        ([[0, 1, 2, 3], [4, 5, 6, 7]], 1, None),
        # common seats, but not together
        ([[0, 1, 3, 4, 6, 7], [0, 2, 3, 5, 6]], 2, None),
        ([[0, 1, 2, 3, 4, 5, 6, 7]], 3, [0, 1, 2]),
    ],
)
def test_common_seats_table(
    free: list[list[int]], quantity: int, expected: list[int] | None
) -> None:
    performances = [performance(positions, n + 1) for n, positions in enumerate(free)]
    chosen = best_common(performances, quantity)
    if expected is None:
        assert chosen is None
        return
    assert plan_ids(chosen) == [expected] * len(free)
    assert chosen == [[(n + 1) * 100 + p for p in expected] for n in range(len(free))]


def test_common_seats_refuse_bad_input() -> None:
    with pytest.raises(ValueError):
        best_common([performance([0, 1], 1)], 0)
    with pytest.raises(ValueError):
        best_common([], 1)
    assert best_common([performance([0], 1), performance([0], 2)], 2) is None


def common_reference(
    performances: Sequence[dict[int, FreeSeat]], quantity: int
) -> list[list[int]] | None:
    """Brute force: every window of the first performance's free seats whose plan seats are
    free at every performance, together and leaving no orphan at each."""
    first = performances[0]
    at = {(s.block_id, s.row_order, s.position): plan_id for plan_id, s in first.items()}
    found = []
    for s in first.values():
        b, r, p = s.block_id, s.row_order, s.position
        window = [at.get((b, r, p + k)) for k in range(quantity)]
        if any(w is None or any(w not in perf for perf in performances) for w in window):
            continue
        plan = [w for w in window if w is not None]
        fits = True
        for perf in performances:
            places = {(x.block_id, x.row_order, x.position) for x in perf.values()}
            seats = [perf[w] for w in plan]
            b2, r2, p2 = seats[0].block_id, seats[0].row_order, seats[0].position
            if [(x.block_id, x.row_order, x.position) for x in seats] != [
                (b2, r2, p2 + k) for k in range(quantity)
            ]:
                fits = False
            if (b2, r2, p2 - 1) in places and (b2, r2, p2 - 2) not in places:
                fits = False
            if (b2, r2, p2 + quantity) in places and (b2, r2, p2 + quantity + 1) not in places:
                fits = False
        if not fits:
            continue
        ranks = [sum(perf[w].rank for perf in performances) for w in plan]
        found.append(
            (
                (sum(ranks), min(ranks), b, r, p),
                [[perf[w].id for w in plan] for perf in performances],
            )
        )
    return min(found)[1] if found else None


@st.composite
def seasons(draw: st.DrawFn) -> list[dict[int, FreeSeat]]:
    """One to three performances of one generated plan, each with its own free seats (and,
    sometimes, its own ranks); performance seat ids differ from one performance to the next."""
    plan = draw(plans())
    rng = random.Random(draw(st.integers(0, 2**32)))
    same_ranks = draw(st.booleans())
    performances = []
    for number in range(draw(st.integers(1, 3))):
        share = rng.choice((0.5, 0.8, 1.0))
        ranks = [s.rank for s in plan] if same_ranks else rng.sample(range(len(plan)), len(plan))
        performances.append(
            {
                s.id: FreeSeat(
                    s.id + 10_000 * (number + 1), s.block_id, s.row_order, s.position, rank
                )
                for s, rank in zip(plan, ranks, strict=True)
                if (s.free if number == 0 else rng.random() < share)
            }
        )
    return performances


@settings(max_examples=300, deadline=None)
@given(seasons(), st.integers(1, 4))
def test_common_seats_match_brute_force(
    performances: list[dict[int, FreeSeat]], quantity: int
) -> None:
    chosen = best_common(performances, quantity)
    assert chosen == common_reference(performances, quantity)
    if chosen is None:
        return
    plan_of_seat = [{s.id: plan_id for plan_id, s in perf.items()} for perf in performances]
    # the same plan seats everywhere, together without orphan at each performance
    plans_chosen = {
        tuple(ids[i] for i in seats) for ids, seats in zip(plan_of_seat, chosen, strict=True)
    }
    assert len(plans_chosen) == 1
    for perf, seats in zip(performances, chosen, strict=True):
        assert_together_without_orphan(list(perf.values()), seats, quantity)


@settings(max_examples=200, deadline=None)
@given(plans(), st.integers(1, 4), st.integers(1, 3))
def test_common_seats_of_identical_performances_are_the_best_available(
    plan: list[PlanSeat], quantity: int, copies: int
) -> None:
    seats = free_seats(plan)
    performances = [
        {s.id: dataclasses.replace(s, id=s.id + 10_000 * n) for s in seats} for n in range(copies)
    ]
    expected = best_available(seats, quantity)
    chosen = best_common(performances, quantity)
    assert chosen == (
        None if expected is None else [[i + 10_000 * n for i in expected] for n in range(copies)]
    )


@settings(max_examples=100, deadline=None)
@given(
    plans(),
    st.none() | st.sets(st.integers(0, 3), max_size=3),
    st.none() | st.sets(st.integers(0, 9), max_size=3),
)
def test_index_lists_its_free_seats(
    plan: list[PlanSeat], allowed: set[int] | None, blocks: set[int] | None
) -> None:
    index = SeatIndex(plan)
    expected = [s for s in free_seats(plan, allowed) if blocks is None or s.block_id in blocks]
    assert sorted(index.free_seats(allowed, blocks), key=lambda s: s.id) == sorted(
        expected, key=lambda s: s.id
    )


@settings(max_examples=300, deadline=None)
@given(
    plans(),
    st.integers(1, 4),
    st.integers(1, 3),
    st.booleans(),
    st.none() | st.sets(st.integers(0, 9), max_size=3),
    st.integers(0, 2**32),
)
def test_common_seats_on_bitmasks_match_the_function(
    plan: list[PlanSeat],
    quantity: int,
    copies: int,
    same_ranks: bool,
    blocks: set[int] | None,
    seed: int,
) -> None:
    """Performances of one plan (own seat ids, free seats, groups and maybe ranks): the
    indexes' bitmasks answer what best_common answers over their free seats."""
    rng = random.Random(seed)
    indexes = []
    allowed: list[set[int] | None] = []
    performances = []
    for number in range(copies):
        ranks = [s.rank for s in plan] if same_ranks else rng.sample(range(len(plan)), len(plan))
        seats = [
            s._replace(
                id=s.id + 10_000 * number,
                rank=rank,
                free=s.free if number == 0 else rng.random() < 0.8,
                group=rng.randrange(3),
            )
            for s, rank in zip(plan, ranks, strict=True)
        ]
        groups = rng.choice([None, {0}, {0, 1}, {1, 2}])
        indexes.append(SeatIndex(seats))
        allowed.append(groups)
        performances.append(
            {
                s.id - 10_000 * number: FreeSeat(s.id, s.block_id, s.row_order, s.position, s.rank)
                for s in seats
                if s.free
                and (groups is None or s.group in groups)
                and (blocks is None or s.block_id in blocks)
            }
        )
    expected = best_common(performances, quantity)
    assert best_common_of(indexes, quantity, allowed=allowed, blocks=blocks) == expected


def test_common_seats_on_bitmasks_need_one_layout() -> None:
    one = SeatIndex(plan_of(row([1, 2, 3])))
    other = SeatIndex(plan_of(row([1, 2, 3], first=1)))
    with pytest.raises(ValueError):
        best_common_of([one, other], 1)
    with pytest.raises(ValueError):
        best_common_of([], 1)
    assert best_common_of([one, one], 3) == [[10_100, 10_101, 10_102]] * 2
    assert one.layout() == [((1, 1), [10_100, 10_101, 10_102])]
