"""Sales that arrive together: on PostgreSQL a process runs the closes (and, apart, the carts) it
receives while its earlier ones are in the database as one group, one transaction for them all
(``shared.groups``: ``sales.closing.close_groups``, ``sales.carts.cart_groups``); each is still
answered as if it ran alone. SQLite runs them one at a time."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.inventory import db as inventory
from billetterie.inventory import services
from billetterie.sales import carts, closing
from billetterie.sales import db as sales
from billetterie.shared.db import read
from billetterie.shared.groups import Groups, RunAlone
from tests.conftest import Backend
from tests.sales_kit import Kit, open_kit


@pytest.fixture
async def kit(scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path) -> AsyncIterator[Kit]:
    async with open_kit(scratch_engine, backend.scratch_url, tmp_path) as kit:
        yield kit


def groups_seen(
    monkeypatch: pytest.MonkeyPatch, requests: int, groups: Groups[Any, Any] = closing.close_groups
) -> list[tuple[int, ...]]:
    """One group in the database at a time; the first is held until every one of
    ``requests`` is in it or waits for the next, which then takes all that wait. The requests
    of each group run (a run again after a refusal included), in order, by identity."""
    monkeypatch.setattr(groups, "concurrent", 1)
    runs: list[tuple[int, ...]] = []
    run: Callable[..., Awaitable[Any]] = groups.run

    async def spy(engine: AsyncEngine, group: list[Any]) -> Any:
        runs.append(tuple(id(request) for request in group))
        if len(runs) == 1 and engine.dialect.name == "postgresql":
            for _ in range(1000):
                waiting = groups.state(engine).waiting
                if len(group) + len(waiting) == requests:
                    break
                await asyncio.sleep(0.01)
        return await run(engine, group)

    monkeypatch.setattr(groups, "run", spy)
    return runs


def fresh(runs: list[tuple[int, ...]]) -> list[int]:
    """The sizes of the groups as they formed (not the runs again after a refusal)."""
    seen: set[int] = set()
    sizes = []
    for requests in runs:
        if seen.isdisjoint(requests):
            sizes.append(len(requests))
        seen.update(requests)
    return sizes


def check_grouped(kit: Kit, runs: list[tuple[int, ...]], requests: int) -> None:
    """On PostgreSQL the requests made two groups at most (the first, and all that waited for
    it); on SQLite each ran alone."""
    if kit.engine.dialect.name == "postgresql":
        assert len(fresh(runs)) <= 2 and sum(fresh(runs)) == requests, runs
    else:
        assert {len(r) for r in runs} == {1}, runs


async def cart(kit: Kit, category: str, quantity: int, who: str) -> dict[str, Any]:
    body = await kit.cart(kit.seats(category, quantity), who=who)
    assert body["statusCode"] == "success", body
    order: dict[str, Any] = body["orderUpdateData"]
    return order


async def states(kit: Kit, order_ids: list[int]) -> dict[int, tuple[str, list[str]]]:
    """Each order's state and the states of its seats."""
    o, m, ps = sales.sales_order.c, sales.movement.c, inventory.performance_seat.c
    async with read(kit.engine) as conn:
        rows = (
            await conn.execute(
                sa.select(o.id, o.state, ps.state.label("seat"))
                .join(sales.movement, m.order_id == o.id)
                .join(inventory.performance_seat, ps.id == m.performance_seat_id)
                .where(o.id.in_(order_ids))
                .order_by(o.id, ps.id)
            )
        ).all()
    found: dict[int, tuple[str, list[str]]] = {}
    for r in rows:
        found.setdefault(r.id, (r.state, []))[1].append(r.seat)
    return found


async def pending_closes(
    kit: Kit, monkeypatch: pytest.MonkeyPatch, count: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[int, ...]]]:
    """``count`` reseller carts of 60.00 (2 seats of C2), closed together on the pending
    account (200.00 allowed): the orders, the answers, the groups run."""
    orders = [await cart(kit, "C2", 2, "res") for _ in range(count)]
    runs = groups_seen(monkeypatch, count)
    answers = await asyncio.gather(
        *(kit.close(o["orderId"], [("PENDING", o["totalAmount"])], who="res") for o in orders)
    )
    check_grouped(kit, runs, count)
    return orders, list(answers), runs


async def pending_ledger(kit: Kit) -> tuple[int, list[Any]]:
    """The pending account's balance, and its debits in the order they were written."""
    a, e = sales.account.c, sales.account_entry.c
    async with read(kit.engine) as conn:
        balance = (
            await conn.execute(sa.select(a.balance).where(a.kind == "PENDING_ACCOUNT"))
        ).scalar_one()
        debits = (
            await conn.execute(
                sa.select(e.order_id, e.amount, e.balance_after)
                .where(e.kind == "DEBIT")
                .order_by(e.id)
            )
        ).all()
    return int(balance), list(debits)


async def test_closes_arriving_together_close_in_one_group_and_a_refused_one_changes_nothing(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = [await cart(kit, "C1", n, "web") for n in (1, 2, 1, 3)]
    wrong = await cart(kit, "C1", 2, "web")
    foreign = await cart(kit, "C2", 1, "res")  # the reseller's: unknown to the web shop
    runs = groups_seen(monkeypatch, 6)
    answers = await asyncio.gather(
        *(kit.close(o["orderId"], [("CASH", o["totalAmount"])]) for o in good),
        kit.close(wrong["orderId"], [("CASH", wrong["totalAmount"] - 100)]),
        kit.close(foreign["orderId"], [("CASH", foreign["totalAmount"])]),
    )
    codes = [a["statusCode"] for a in answers]
    assert codes == ["success"] * 4 + ["error.payment.wrong_total", "error.order.unknown"], answers
    check_grouped(kit, runs, 6)
    for order, answer in zip(good, answers, strict=False):
        data = answer["orderData"]
        assert data["orderId"] == order["orderId"] and data["orderState"] == "CLOSED"
        movements = [mv for op in data["operations"] for mv in op["movements"]]
        assert len(movements) == len(order["movementDataUpdates"])
        assert all(mv["ticket"]["barcode"] for mv in movements), data
        assert data["payments"][0]["amount"] == order["totalAmount"]
    found = await states(kit, [o["orderId"] for o in [*good, wrong, foreign]])
    for order in good:
        assert found[order["orderId"]][0] == "CLOSED"
        assert set(found[order["orderId"]][1]) == {"SOLD"}
    for order in (wrong, foreign):  # still running carts, their seats still held
        assert found[order["orderId"]] == ("RUNNING", ["HELD"] * len(order["movementDataUpdates"]))
    t = sales.ticket.c
    async with read(kit.engine) as conn:
        tickets = (await conn.execute(sa.select(t.order_id, t.barcode))).all()
    assert sorted({r.order_id for r in tickets}) == sorted(o["orderId"] for o in good)
    assert len(tickets) == 7 and len({r.barcode for r in tickets}) == 7


async def test_a_group_whose_debits_together_pass_the_credit_limit_closes_what_fits(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 60.00 each, 200.00 allowed: however the five split in two groups, one group's debits
    # pass the limit together
    orders, answers, runs = await pending_closes(kit, monkeypatch, 5)
    codes = sorted(a["statusCode"] for a in answers)
    assert codes == ["error.payment.insufficient_funds"] * 2 + ["success"] * 3, answers
    if kit.engine.dialect.name == "postgresql":
        # a group was refused at its commit, then each of its closes ran alone
        alone = {r[0] for r in runs if len(r) == 1}
        assert any(len(r) > 1 and alone.issuperset(r) for r in runs), runs
    balance, debits = await pending_ledger(kit)
    assert balance == -180_000 and sorted(r.amount for r in debits) == [60_000] * 3
    # the ledger: each debit with the balance right after it, whether it closed in a group
    # (its debits applied together at commit) or alone
    assert [r.balance_after for r in debits] == [-60_000, -120_000, -180_000]
    refused = [
        o["orderId"]
        for o, ans in zip(orders, answers, strict=True)
        if ans["statusCode"] != "success"
    ]
    found = await states(kit, refused)
    assert [found[order_id] for order_id in refused] == [("RUNNING", ["HELD", "HELD"])] * 2


async def test_closes_together_on_one_pending_account_debit_it_with_a_running_ledger(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 60.00 each, 200.00 allowed: the three fit together
    orders, answers, _ = await pending_closes(kit, monkeypatch, 3)
    assert [a["statusCode"] for a in answers] == ["success"] * 3, answers
    balance, entries = await pending_ledger(kit)
    assert balance == -180_000
    assert sorted(r.order_id for r in entries) == sorted(o["orderId"] for o in orders)
    assert [(r.amount, r.balance_after) for r in entries] == [
        (60_000, -60_000),
        (60_000, -120_000),
        (60_000, -180_000),
    ]


async def test_carts_arriving_together_are_held_in_one_group_and_a_refused_one_holds_nothing(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = groups_seen(monkeypatch, 6, carts.cart_groups)
    answers = await asyncio.gather(
        *(kit.cart(kit.seats(category, n)) for category, n in [("C1", 2), ("C2", 1), ("C1", 3)]),
        kit.cart(kit.seats("C1", 9)),  # more than the 8 seats per performance allowed here
        kit.cart(kit.seats("C1", 1), order_id=999_999),
        kit.cart(kit.seats("C2", 2)),
    )
    codes = [a["statusCode"] for a in answers]
    assert codes == ["success"] * 3 + ["error.order.too_many_seats", "error.order.unknown"] + [
        "success"
    ], answers
    check_grouped(kit, runs, 6)
    good = [a["orderUpdateData"] for a in answers if a["statusCode"] == "success"]
    assert [len(o["movementDataUpdates"]) for o in good] == [2, 1, 3, 2]
    found = await states(kit, [o["orderId"] for o in good])
    assert [found[o["orderId"]] for o in good] == [("RUNNING", ["HELD"] * n) for n in (2, 1, 3, 2)]
    ps, h, o = inventory.performance_seat.c, inventory.hold.c, sales.sales_order.c
    async with read(kit.engine) as conn:
        held = (await conn.execute(sa.select(ps.hold_id).where(ps.state == "HELD"))).all()
        holds = (await conn.execute(sa.select(h.id).where(h.state == "ACTIVE"))).all()
        orders = (await conn.execute(sa.select(o.id))).all()
    # the refused carts' attempts left nothing: 8 seats held by 4 holds of 4 orders
    assert len(held) == 8 and len({r.hold_id for r in held}) == len(holds) == 4
    assert sorted(r.id for r in orders) == sorted(o["orderId"] for o in good)
    closed = await asyncio.gather(
        *(kit.close(o["orderId"], [("CASH", o["totalAmount"])]) for o in good)
    )
    assert [c["statusCode"] for c in closed] == ["success"] * 4, closed


async def test_a_cart_whose_seats_are_missing_is_declined_and_its_group_goes_on(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    # C1 is 3 rows of 10: one seat at a time, the web shop sells seats 3 to 8 of each row, then
    # no single seat that would leave another one alone (pairs are left at both ends)
    for _ in range(18):
        await cart(kit, "C1", 1, "web")
    assert (await kit.cart(kit.seats("C1", 1)))["statusCode"] == "error.order.availability"
    runs = groups_seen(monkeypatch, 3, carts.cart_groups)
    answers = await asyncio.gather(
        kit.cart(kit.seats("C2", 1)),
        kit.cart(kit.seats("C1", 1)),  # known before anything is written for it
        kit.cart(kit.seats("C2", 2)),
    )
    codes = [a["statusCode"] for a in answers]
    assert codes == ["success", "error.order.availability", "success"], answers
    check_grouped(kit, runs, 3)
    # declined without a rollback: no request ran twice
    ran = [request for requests in runs for request in requests]
    assert len(ran) == len(set(ran)) == 3, runs
    good = [a["orderUpdateData"] for a in answers if a["statusCode"] == "success"]
    found = await states(kit, [o["orderId"] for o in good])
    assert [found[o["orderId"]] for o in good] == [("RUNNING", ["HELD"] * n) for n in (1, 2)]
    ps = inventory.performance_seat.c
    async with read(kit.engine) as conn:
        held = (await conn.execute(sa.select(sa.func.count()).where(ps.state == "HELD"))).scalar()
        orders = (
            await conn.execute(sa.select(sa.func.count()).select_from(sales.sales_order))
        ).scalar()
    assert held == 18 + 3 and orders == 18 + 2
    # a pair still sells
    assert (await kit.cart(kit.seats("C1", 2)))["statusCode"] == "success"


async def test_a_cart_whose_seat_races_keep_being_lost_runs_alone_after_its_group(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the cart of 3 seats loses its seat races round after round the first two times it is
    # held beside other carts: its group's transaction starts again once, then goes on without it
    hold = carts._hold
    runs = groups_seen(monkeypatch, 3, carts.cart_groups)
    lost: list[int] = []

    async def losing(conn: Any, seller: Any, order: Any, planned: Any, *rest: Any) -> Any:
        if planned.requests[0].quantity == 3 and len(runs[-1]) > 1 and len(lost) < 2:
            lost.append(order.id)
            raise services.LostRace()
        return await hold(conn, seller, order, planned, *rest)

    monkeypatch.setattr(carts, "_hold", losing)
    requests = [("C1", 2), ("C1", 3), ("C2", 2)]
    # the first cart alone, the two others in the group after it
    first = asyncio.create_task(kit.cart(kit.seats(*requests[0])))
    for _ in range(1000):  # until it runs
        if runs:
            break
        await asyncio.sleep(0.005)
    answers = await asyncio.gather(first, *(kit.cart(kit.seats(c, n)) for c, n in requests[1:]))
    assert [a["statusCode"] for a in answers] == ["success"] * 3, answers
    if kit.engine.dialect.name == "postgresql":
        assert len(lost) == 2, runs
        # its group (two attempts in one run), the other cart again without it, then it alone
        assert [len(r) for r in runs] == [1, 2, 1, 1], runs
        assert set(runs[1]) == {runs[2][0], runs[3][0]}, runs
    else:  # each alone: the race is never lost
        assert not lost and [len(r) for r in runs] == [1, 1, 1], runs
    good = [a["orderUpdateData"] for a in answers]
    found = await states(kit, [o["orderId"] for o in good])
    assert [found[o["orderId"]] for o in good] == [("RUNNING", ["HELD"] * n) for _, n in requests]
    ps, o = inventory.performance_seat.c, sales.sales_order.c
    async with read(kit.engine) as conn:
        held = (await conn.execute(sa.select(sa.func.count()).where(ps.state == "HELD"))).scalar()
        orders = (await conn.execute(sa.select(o.id))).scalars().all()
    # the rolled-back attempt left nothing behind
    assert held == 7 and sorted(orders) == sorted(g["orderId"] for g in good)


class _Engine:
    """What :class:`Groups` reads of an engine: its dialect and its sync engine (a key)."""

    class dialect:
        name = "postgresql"

    class _Sync:
        pass

    def __init__(self) -> None:
        self.sync_engine = self._Sync()


async def test_a_request_to_run_alone_runs_after_the_others_and_a_broken_run_is_answered() -> None:
    engine: Any = _Engine()
    calls: list[tuple[str, ...]] = []
    started = asyncio.Event()
    go_on = asyncio.Event()

    async def run(_: Any, requests: list[str]) -> list[str]:
        calls.append(tuple(requests))
        if len(calls) == 1:  # the first group waits until the others are waiting
            started.set()
            await go_on.wait()
        if "b" in requests and len(requests) > 1:
            raise RunAlone(requests.index("b"))
        if requests == ["x"]:  # a broken run: a request alone cannot run alone
            raise RunAlone(0)
        return [r.upper() for r in requests]

    groups: Groups[str, str] = Groups(run, key=lambda _: 0, concurrent=1)
    first = asyncio.create_task(groups.submit(engine, "a"))
    await started.wait()
    others = [asyncio.create_task(groups.submit(engine, r)) for r in "bcd"]
    for _ in range(10):
        await asyncio.sleep(0)
    go_on.set()
    assert await asyncio.gather(first, *others) == ["A", "B", "C", "D"]
    assert calls == [("a",), ("b", "c", "d"), ("c", "d"), ("b",)]
    with pytest.raises(RuntimeError):
        await groups.submit(engine, "x")
    assert groups.state(engine).running == 0 and not groups.state(engine).waiting


def claims_counted(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Calls of the seat claims: a group's (``together``) and a hold's own (``alone``)."""
    counted: Counter[str] = Counter()
    for name, statement in (
        ("together", services._CLAIM_FOR_HOLDS),
        ("alone", services._CLAIM),
        ("alone", services._CLAIM_WAITING),
    ):

        def spying(original: Any, name: str = name) -> Any:
            async def rows(*args: Any, **kwargs: Any) -> Any:
                counted[name] += 1
                return await original(*args, **kwargs)

            return rows

        monkeypatch.setattr(statement, "rows", spying(statement.rows))
    return counted


async def held_seats(kit: Kit) -> dict[int, int]:
    """Seat id -> the hold holding it."""
    ps = inventory.performance_seat.c
    async with read(kit.engine) as conn:
        rows = (await conn.execute(sa.select(ps.id, ps.hold_id).where(ps.state == "HELD"))).all()
    return {row.id: row.hold_id for row in rows}


async def test_carts_together_claim_their_best_seats_in_one_statement(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = groups_seen(monkeypatch, 5, carts.cart_groups)
    counted = claims_counted(monkeypatch)
    wanted = [("C2", 1), ("C1", 2), ("C2", 2), ("C1", 1), ("C1", 3)]
    answers = await asyncio.gather(*(kit.cart(kit.seats(c, n)) for c, n in wanted))
    assert [a["statusCode"] for a in answers] == ["success"] * 5, answers
    check_grouped(kit, runs, 5)
    if kit.engine.dialect.name == "postgresql":
        # a group of several carts claims once, a cart alone claims on its own
        sizes = fresh(runs)
        assert sizes[-1] > 1, runs
        assert counted["together"] == sum(1 for n in sizes if n > 1), (counted, runs)
        assert counted["alone"] == sum(1 for n in sizes if n == 1), (counted, runs)
    else:
        assert counted == {"alone": 5}, counted
    held = await held_seats(kit)
    orders = [a["orderUpdateData"] for a in answers]
    movements = [m for o in orders for m in o["movementDataUpdates"]]
    # every cart its own seats, each seat held by its cart's hold
    assert len(held) == len(movements) == sum(n for _, n in wanted)
    assert len({m["seat"]["id"] for m in movements}) == len(movements)
    per_order = [{held[m["seat"]["id"]] for m in o["movementDataUpdates"]} for o in orders]
    assert all(len(holds) == 1 for holds in per_order)
    assert len(set().union(*per_order)) == 5
    found = await states(kit, [o["orderId"] for o in orders])
    assert [found[o["orderId"]] for o in orders] == [("RUNNING", ["HELD"] * n) for _, n in wanted]


async def test_seats_another_transaction_claimed_are_claimed_again_elsewhere(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The best seats of C1 are claimed by a transaction still running (another process's):
    a group's claim skips them, proposes the next ones, and what still loses is left to each
    hold, which claims on its own."""
    if kit.engine.dialect.name != "postgresql":
        pytest.skip("carts run one at a time on SQLite: there is no group claim")
    ps, stock = inventory.performance_seat.c, inventory.stock.c
    async with kit.engine.connect() as other:
        best = (
            (
                await other.execute(
                    sa.select(ps.id)
                    .join(inventory.stock, stock.id == ps.stock_id)
                    .where(
                        stock.seat_category_id == kit.shop.categories["C1"],
                        ps.performance_id == kit.shop.performances["SH01"],
                        ps.state == "FREE",
                    )
                    .order_by(ps.rank)
                    .limit(6)
                )
            )
            .scalars()
            .all()
        )
        await other.execute(
            sa.update(inventory.performance_seat)
            .where(ps.id.in_(best))
            .values(state="HELD")  # uncommitted: the rows stay locked
        )
        runs = groups_seen(monkeypatch, 4, carts.cart_groups)
        counted = claims_counted(monkeypatch)
        lost_before = services.indexes_of(kit.api.app.state.runtime.engine).lost_races
        # the cart of C2 first, alone (a cart of C1 alone would find the locked seats on its
        # own), the carts of C1 in the group after it
        first = asyncio.create_task(kit.cart(kit.seats("C2", 1)))
        for _ in range(1000):  # until it runs
            if runs:
                break
            await asyncio.sleep(0.005)
        answers = await asyncio.gather(first, *(kit.cart(kit.seats("C1", n)) for n in (2, 1, 2)))
        assert [a["statusCode"] for a in answers] == ["success"] * 4, answers
        groups = sum(1 for n in fresh(runs) if n > 1)
        assert groups >= 1, runs
        # both rounds of each group's claim ran, and some hold claimed on its own after them
        assert counted["together"] == 2 * groups and counted["alone"] >= 2, (counted, runs)
        assert services.indexes_of(kit.api.app.state.runtime.engine).lost_races > lost_before
        seats = {
            m["seat"]["id"] for a in answers for m in a["orderUpdateData"]["movementDataUpdates"]
        }
        assert len(seats) == 6 and seats.isdisjoint(best)
        await other.rollback()
    held = await held_seats(kit)
    # the group's seats are held, nothing else: the seats the claims got and gave back are free
    assert set(held) == seats
