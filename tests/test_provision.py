"""Provisioning: the stock rows and performance seats the setup import writes from the catalog.

The small ACME institution (tests/factories.py): two performances SH01/SH02 of SHOW in the
configuration FULL, C1 = block A (30 seats), C2 = block B (30 seats), the reseller contingent
RESQ with 5 C2 places per performance, and the pass PASS with its unlimited item DAY.
:func:`rich_document` adds a non-numbered zone (C3, 50 places, 8 for RESQ), a capped item CAP
(20 places) and a timeslot item SLOT (two slots of 40 and 15).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog import db as catalog
from billetterie.inventory import db
from billetterie.inventory.provision import stock_key
from billetterie.inventory.services import PlaceRequest, confirm_hold, hold_places
from billetterie.shared.db import read
from tests.conftest import NOW
from tests.factories import import_document, setup_document, text

LATER = NOW + timedelta(minutes=15)


def rich_document(code: str = "ACME", **overrides: Any) -> dict[str, Any]:
    """ACME plus a non-numbered zone with a contingent share, a capped item and timeslots."""
    data = setup_document(code, **overrides)
    logical = data["venues"][0]["spaces"][0]["configurations"][0]["logicalConfigurations"][0]
    logical["seatCategories"].append({"code": "C3", "name": text("Pit")})
    logical["zones"] = [{"code": "PIT", "name": text("Pit"), "seatCategory": "C3", "capacity": 50}]
    event = data["products"][0]["event"]
    event["prices"]["C3"] = {"FULL": "20.00"}
    event["allocations"].append({"contingent": "RESQ", "seatCategory": "C3", "quantity": 8})
    items = data["products"][1]["items"]
    items.append(
        {"code": "CAP", "name": text("Capped"), "capacity": 20, "prices": {"FULL": "5.00"}}
    )
    items.append(
        {
            "code": "SLOT",
            "name": text("Timed"),
            "kind": "TIMESLOT",
            "prices": {"FULL": "5.00"},
            "timeslots": [
                {
                    "start": "2027-01-05T10:00:00+01:00",
                    "end": "2027-01-05T11:00:00+01:00",
                    "quota": 40,
                },
                {
                    "start": "2027-01-05T11:00:00+01:00",
                    "end": "2027-01-05T12:00:00+01:00",
                    "quota": 15,
                },
            ],
        }
    )
    return data


def item_spec(data: dict[str, Any], code: str) -> dict[str, Any]:
    spec: dict[str, Any] = next(i for i in data["products"][1]["items"] if i["code"] == code)
    return spec


@dataclass
class Shop:
    """The ids tests need, looked up by code."""

    institution_id: int
    channels: dict[str, int]
    performances: dict[str, int]
    categories: dict[str, int]
    contingents: dict[str, int]
    items: dict[str, int]
    timeslots: list[int]  # of SLOT, by start
    blocks: dict[int, str]  # block id -> code

    def stock_key(self, performance: str, category: str, contingent: str | None = None) -> str:
        return stock_key(
            performance_id=self.performances[performance],
            seat_category_id=self.categories[category],
            contingent_id=None if contingent is None else self.contingents[contingent],
        )


async def load_shop(engine: AsyncEngine, code: str = "ACME") -> Shop:
    async with read(engine) as conn:
        institution_id = (
            await conn.execute(
                sa.select(catalog.institution.c.id).where(catalog.institution.c.code == code)
            )
        ).scalar_one()

        async def codes(table: sa.Table) -> dict[str, int]:
            rows = await conn.execute(
                sa.select(table.c.code, table.c.id).where(table.c.institution_id == institution_id)
            )
            return {r.code: r.id for r in rows}

        t = catalog.timeslot.c
        slots = (
            await conn.execute(
                sa.select(t.id)
                .join(catalog.product_item, catalog.product_item.c.id == t.product_item_id)
                .where(t.institution_id == institution_id, catalog.product_item.c.code == "SLOT")
                .order_by(t.start)
            )
        ).all()
        return Shop(
            institution_id=institution_id,
            channels=await codes(catalog.sales_channel),
            performances=await codes(catalog.performance),
            categories=await codes(catalog.seat_category),
            contingents=await codes(catalog.contingent),
            items=await codes(catalog.product_item),
            timeslots=[r.id for r in slots],
            blocks={v: k for k, v in (await codes(catalog.block)).items()},
        )


async def stocks(engine: AsyncEngine) -> dict[str, Any]:
    """Every stock row by key."""
    async with read(engine) as conn:
        return {r.key: r for r in (await conn.execute(sa.select(db.stock))).all()}


async def seats_of(engine: AsyncEngine, stock_id: int) -> list[Any]:
    ps = db.performance_seat.c
    async with read(engine) as conn:
        return list(
            (
                await conn.execute(
                    sa.select(db.performance_seat).where(ps.stock_id == stock_id).order_by(ps.rank)
                )
            ).all()
        )


async def count_rows(engine: AsyncEngine, table: sa.Table) -> int:
    async with read(engine) as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


# --- first import --------------------------------------------------------------------------


async def test_import_provisions_the_seated_plan(scratch_engine: AsyncEngine) -> None:
    await import_document(scratch_engine, setup_document("ACME"))
    shop = await load_shop(scratch_engine)
    rows = await stocks(scratch_engine)
    expected: dict[str, int | None] = {}
    for performance in ("SH01", "SH02"):
        expected[shop.stock_key(performance, "C1")] = 30
        expected[shop.stock_key(performance, "C2")] = 25
        expected[shop.stock_key(performance, "C2", "RESQ")] = 5
    day = stock_key(product_item_id=shop.items["DAY"])
    expected[day] = None
    assert {key: row.capacity for key, row in rows.items()} == expected
    for row in rows.values():
        assert (row.held, row.sold, row.blocked) == (0, 0, 0)
        assert row.institution_id == shop.institution_id

    for performance in ("SH01", "SH02"):
        c1 = rows[shop.stock_key(performance, "C1")]
        c2 = rows[shop.stock_key(performance, "C2")]
        resq = rows[shop.stock_key(performance, "C2", "RESQ")]
        for row, category, contingent in ((c1, "C1", None), (c2, "C2", None), (resq, "C2", "RESQ")):
            assert row.numbered is True
            assert row.performance_id == shop.performances[performance]
            assert row.seat_category_id == shop.categories[category]
            assert row.contingent_id == (contingent and shop.contingents[contingent])
            assert row.product_item_id is None and row.timeslot_id is None

        c1_seats = await seats_of(scratch_engine, c1.id)
        c2_seats = await seats_of(scratch_engine, c2.id)
        resq_seats = await seats_of(scratch_engine, resq.id)
        assert (len(c1_seats), len(c2_seats), len(resq_seats)) == (30, 25, 5)
        for seat in c1_seats + c2_seats + resq_seats:
            assert seat.state == "FREE" and seat.hold_id is None
            assert seat.performance_id == shop.performances[performance]
        assert {shop.blocks[s.block_id] for s in c1_seats} == {"A"}
        assert {shop.blocks[s.block_id] for s in c2_seats + resq_seats} == {"B"}
        # the contingent takes the worst-ranked seats of its category
        assert max(s.rank for s in c2_seats) < min(s.rank for s in resq_seats)
        assert sorted((s.row, s.number) for s in resq_seats) == [
            ("1", "10"),
            ("2", "10"),
            ("2", "9"),
            ("3", "10"),
            ("3", "9"),
        ]
        # geometry: 3 rows of 10 per block, row_order and position from 0
        for block_seats in (c1_seats, c2_seats + resq_seats):
            assert {(s.row_order, s.position) for s in block_seats} == {
                (r, p) for r in range(3) for p in range(10)
            }
            for s in block_seats:
                assert s.row_order == int(s.row) - 1 and s.position == int(s.number) - 1

    item = rows[day]
    assert (item.numbered, item.performance_id, item.timeslot_id) == (False, None, None)
    assert item.product_item_id == shop.items["DAY"]
    assert await count_rows(scratch_engine, db.performance_seat) == 120
    async with read(scratch_engine) as conn:
        sequence = (await conn.execute(sa.select(db.inventory_sequence))).all()
    assert [r.institution_id for r in sequence] == [shop.institution_id]


async def test_import_provisions_zones_items_and_timeslots(scratch_engine: AsyncEngine) -> None:
    await import_document(scratch_engine, rich_document())
    shop = await load_shop(scratch_engine)
    rows = await stocks(scratch_engine)
    assert len(rows) == 2 * 5 + 4  # per performance C1, C2, C2/RESQ, C3, C3/RESQ; 4 item stocks
    for performance in ("SH01", "SH02"):
        pool = rows[shop.stock_key(performance, "C3")]
        share = rows[shop.stock_key(performance, "C3", "RESQ")]
        # the zone's 50 places split between the contingent and the pool, not numbered
        assert (pool.capacity, share.capacity) == (42, 8)
        assert pool.numbered is False and share.numbered is False
        assert share.contingent_id == shop.contingents["RESQ"]
        assert await seats_of(scratch_engine, pool.id) == []
        assert await seats_of(scratch_engine, share.id) == []
        # the seated categories are unchanged by the zone
        assert rows[shop.stock_key(performance, "C2")].capacity == 25
    cap = rows[stock_key(product_item_id=shop.items["CAP"])]
    assert (cap.capacity, cap.numbered, cap.timeslot_id) == (20, False, None)
    assert rows[stock_key(product_item_id=shop.items["DAY"])].capacity is None
    first, second = shop.timeslots
    slots = {
        r.timeslot_id: r.capacity for r in rows.values() if r.product_item_id == shop.items["SLOT"]
    }
    assert slots == {first: 40, second: 15}  # one stock per timeslot, none for the item itself
    assert await count_rows(scratch_engine, db.performance_seat) == 120


async def test_a_zone_allocation_larger_than_the_zone_takes_it_all(
    scratch_engine: AsyncEngine,
) -> None:
    data = rich_document()
    allocations = data["products"][0]["event"]["allocations"]
    allocations[-1]["quantity"] = 80  # more than the zone's 50
    await import_document(scratch_engine, data)
    shop = await load_shop(scratch_engine)
    rows = await stocks(scratch_engine)
    assert rows[shop.stock_key("SH01", "C3", "RESQ")].capacity == 50
    assert rows[shop.stock_key("SH01", "C3")].capacity == 0


# --- re-import -----------------------------------------------------------------------------


async def _hold(
    engine: AsyncEngine, shop: Shop, request: PlaceRequest, *, confirm: bool = False
) -> int:
    hold = await hold_places(
        engine,
        institution_id=shop.institution_id,
        sales_channel_id=shop.channels["WEB"],
        contingent_ids=[],
        cart="cart",
        requests=[request],
        expires_at=LATER,
        now=NOW,
    )
    if confirm:
        await confirm_hold(engine, institution_id=shop.institution_id, hold_id=hold.id, now=NOW)
    return hold.id


async def test_reimport_keeps_stock_ids_counts_and_seats(scratch_engine: AsyncEngine) -> None:
    data = rich_document()
    await import_document(scratch_engine, data)
    shop = await load_shop(scratch_engine)
    sh01 = shop.performances["SH01"]
    await _hold(
        scratch_engine,
        shop,
        PlaceRequest(2, performance_id=sh01, seat_category_id=shop.categories["C1"]),
    )
    await _hold(
        scratch_engine,
        shop,
        PlaceRequest(3, performance_id=sh01, seat_category_id=shop.categories["C2"]),
        confirm=True,
    )
    await _hold(
        scratch_engine,
        shop,
        PlaceRequest(4, performance_id=sh01, seat_category_id=shop.categories["C3"]),
        confirm=True,
    )
    await _hold(scratch_engine, shop, PlaceRequest(6, product_item_id=shop.items["CAP"]))
    await _hold(
        scratch_engine,
        shop,
        PlaceRequest(7, product_item_id=shop.items["SLOT"], timeslot_id=shop.timeslots[1]),
        confirm=True,
    )
    before = await stocks(scratch_engine)
    async with read(scratch_engine) as conn:
        seats_before = set((await conn.execute(sa.select(db.performance_seat))).all())

    await import_document(scratch_engine, data)

    after = await stocks(scratch_engine)
    assert after == before  # same ids, capacities and counts
    async with read(scratch_engine) as conn:
        seats_after = set((await conn.execute(sa.select(db.performance_seat))).all())
    assert seats_after == seats_before  # same ids, stocks and states
    counts = {key: (r.held, r.sold) for key, r in after.items() if r.held or r.sold}
    assert counts == {
        shop.stock_key("SH01", "C1"): (2, 0),
        shop.stock_key("SH01", "C2"): (0, 3),
        shop.stock_key("SH01", "C3"): (0, 4),
        stock_key(product_item_id=shop.items["CAP"]): (6, 0),
        stock_key(product_item_id=shop.items["SLOT"], timeslot_id=shop.timeslots[1]): (0, 7),
    }


async def test_lowering_a_capacity_never_goes_below_held_and_sold(
    scratch_engine: AsyncEngine,
) -> None:
    data = rich_document()
    await import_document(scratch_engine, data)
    shop = await load_shop(scratch_engine)
    cap_key = stock_key(product_item_id=shop.items["CAP"])
    slot_key = stock_key(product_item_id=shop.items["SLOT"], timeslot_id=shop.timeslots[0])
    pit_key = shop.stock_key("SH01", "C3")
    await _hold(scratch_engine, shop, PlaceRequest(5, product_item_id=shop.items["CAP"]))
    await _hold(
        scratch_engine, shop, PlaceRequest(3, product_item_id=shop.items["CAP"]), confirm=True
    )
    await _hold(
        scratch_engine,
        shop,
        PlaceRequest(12, product_item_id=shop.items["SLOT"], timeslot_id=shop.timeslots[0]),
        confirm=True,
    )
    await _hold(
        scratch_engine,
        shop,
        PlaceRequest(
            30, performance_id=shop.performances["SH01"], seat_category_id=shop.categories["C3"]
        ),
    )
    before = await stocks(scratch_engine)

    item_spec(data, "CAP")["capacity"] = 4  # held 5 + sold 3 = 8
    item_spec(data, "SLOT")["timeslots"][0]["quota"] = 10  # sold 12
    logical = data["venues"][0]["spaces"][0]["configurations"][0]["logicalConfigurations"][0]
    logical["zones"][0]["capacity"] = 20  # pool 12 wanted, 30 held
    await import_document(scratch_engine, data)
    after = await stocks(scratch_engine)
    assert after[cap_key].capacity == 8
    assert after[slot_key].capacity == 12
    assert after[pit_key].capacity == 30
    assert after[shop.stock_key("SH01", "C3", "RESQ")].capacity == 8
    assert after[shop.stock_key("SH02", "C3")].capacity == 12  # nothing held there
    for key in (cap_key, slot_key, pit_key):
        assert after[key].id == before[key].id
        assert (after[key].held, after[key].sold) == (before[key].held, before[key].sold)

    # raised again: the catalog's figure applies, above the floor
    item_spec(data, "CAP")["capacity"] = 12
    await import_document(scratch_engine, data)
    assert (await stocks(scratch_engine))[cap_key].capacity == 12
    # unlimited: no capacity at all
    del item_spec(data, "CAP")["capacity"]
    await import_document(scratch_engine, data)
    assert (await stocks(scratch_engine))[cap_key].capacity is None


async def test_a_removed_performance_loses_its_stock_and_seats(
    scratch_engine: AsyncEngine,
) -> None:
    await import_document(scratch_engine, rich_document())
    shop = await load_shop(scratch_engine)
    before = await stocks(scratch_engine)
    await import_document(scratch_engine, rich_document(performances=1))
    after = await stocks(scratch_engine)
    sh02 = shop.performances["SH02"]
    assert {k: r for k, r in before.items() if r.performance_id != sh02} == after
    async with read(scratch_engine) as conn:
        performances = {
            r.performance_id
            for r in (await conn.execute(sa.select(db.performance_seat.c.performance_id))).all()
        }
    assert performances == {shop.performances["SH01"]}
    assert await count_rows(scratch_engine, db.performance_seat) == 60


async def assert_seats_match_counters(engine: AsyncEngine) -> None:
    """Numbered stock: capacity, held and sold are its seats, in all and by state."""
    ps = db.performance_seat.c
    async with read(engine) as conn:
        rows = (
            await conn.execute(
                sa.select(ps.stock_id, ps.state, sa.func.count()).group_by(ps.stock_id, ps.state)
            )
        ).all()
    by_state: dict[tuple[int, str], int] = {(r[0], r[1]): r[2] for r in rows}
    for row in (await stocks(engine)).values():
        if not row.numbered:
            continue
        total = sum(n for (stock_id, _), n in by_state.items() if stock_id == row.id)
        assert (row.capacity, row.held, row.sold) == (
            total,
            by_state.get((row.id, "HELD"), 0),
            by_state.get((row.id, "SOLD"), 0),
        ), row


async def test_a_smaller_allocation_gives_its_free_seats_back_to_the_pool(
    scratch_engine: AsyncEngine,
) -> None:
    data = setup_document("ACME")
    await import_document(scratch_engine, data)
    shop = await load_shop(scratch_engine)
    before = await stocks(scratch_engine)
    data["products"][0]["event"]["allocations"][0]["quantity"] = 3
    await import_document(scratch_engine, data)
    rows = await stocks(scratch_engine)
    assert {k: r.id for k, r in rows.items()} == {k: r.id for k, r in before.items()}
    for performance in ("SH01", "SH02"):
        pool = rows[shop.stock_key(performance, "C2")]
        share = rows[shop.stock_key(performance, "C2", "RESQ")]
        assert (pool.capacity, share.capacity) == (27, 3)
        pool_seats = await seats_of(scratch_engine, pool.id)
        share_seats = await seats_of(scratch_engine, share.id)
        assert (len(pool_seats), len(share_seats)) == (27, 3)
        assert max(s.rank for s in pool_seats) < min(s.rank for s in share_seats)
    await assert_seats_match_counters(scratch_engine)

    # and back: the contingent takes the worst seats again
    data["products"][0]["event"]["allocations"][0]["quantity"] = 5
    await import_document(scratch_engine, data)
    rows = await stocks(scratch_engine)
    assert {k: r.capacity for k, r in rows.items()} == {k: r.capacity for k, r in before.items()}
    await assert_seats_match_counters(scratch_engine)


async def test_a_removed_allocation_leaves_an_empty_contingent(
    scratch_engine: AsyncEngine,
) -> None:
    data = rich_document()
    await import_document(scratch_engine, data)
    shop = await load_shop(scratch_engine)
    data["products"][0]["event"]["allocations"] = []
    await import_document(scratch_engine, data)
    rows = await stocks(scratch_engine)
    for performance in ("SH01", "SH02"):
        assert rows[shop.stock_key(performance, "C2")].capacity == 30
        assert rows[shop.stock_key(performance, "C2", "RESQ")].capacity == 0
        assert rows[shop.stock_key(performance, "C3")].capacity == 50
        assert rows[shop.stock_key(performance, "C3", "RESQ")].capacity == 0
    await assert_seats_match_counters(scratch_engine)


async def test_sold_contingent_seats_stay_in_their_stock(scratch_engine: AsyncEngine) -> None:
    data = setup_document("ACME")
    await import_document(scratch_engine, data)
    shop = await load_shop(scratch_engine)
    share_id = (await stocks(scratch_engine))[shop.stock_key("SH01", "C2", "RESQ")].id
    best = (await seats_of(scratch_engine, share_id))[0]  # row 2 seat 9: the first to go
    hold = await hold_places(
        scratch_engine,
        institution_id=shop.institution_id,
        sales_channel_id=shop.channels["RES"],
        contingent_ids=[shop.contingents["RESQ"]],
        cart="cart",
        requests=[
            PlaceRequest(
                1,
                performance_id=shop.performances["SH01"],
                seat_category_id=shop.categories["C2"],
                seat_ids=(best.id,),
            )
        ],
        expires_at=LATER,
        now=NOW,
    )
    await confirm_hold(scratch_engine, institution_id=shop.institution_id, hold_id=hold.id, now=NOW)
    data["products"][0]["event"]["allocations"][0]["quantity"] = 3
    await import_document(scratch_engine, data)
    rows = await stocks(scratch_engine)
    share = rows[shop.stock_key("SH01", "C2", "RESQ")]
    pool = rows[shop.stock_key("SH01", "C2")]
    # the sold seat stays with its counter: the contingent keeps 3 seats plus the sold one
    assert (share.capacity, share.sold, pool.capacity, pool.sold) == (4, 1, 26, 0)
    assert best.id in {s.id for s in await seats_of(scratch_engine, share.id)}
    assert rows[shop.stock_key("SH02", "C2", "RESQ")].capacity == 3
    await assert_seats_match_counters(scratch_engine)


async def test_stock_the_catalog_drops_keeps_only_what_is_taken(
    scratch_engine: AsyncEngine,
) -> None:
    data = rich_document()
    await import_document(scratch_engine, data)
    shop = await load_shop(scratch_engine)
    await _hold(scratch_engine, shop, PlaceRequest(3, product_item_id=shop.items["CAP"]))
    # CAP becomes a timeslot item: its untimed stock is no longer sold
    spec = item_spec(data, "CAP")
    del spec["capacity"]
    spec["kind"] = "TIMESLOT"
    spec["timeslots"] = [
        {"start": "2027-01-06T10:00:00+01:00", "end": "2027-01-06T11:00:00+01:00", "quota": 9}
    ]
    await import_document(scratch_engine, data)
    rows = await stocks(scratch_engine)
    untimed = rows[stock_key(product_item_id=shop.items["CAP"])]
    assert (untimed.capacity, untimed.held) == (3, 3)
    [timed] = [r for r in rows.values() if r.product_item_id == shop.items["CAP"] and r.timeslot_id]
    assert timed.capacity == 9
