"""The setup import: rows by code, ids kept across re-imports, versions, export round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog import db
from billetterie.catalog.setupfile import SetupFileError, block_rows, parse_document
from billetterie.setup import export_institution, import_institution
from billetterie.shared.db import metadata, read, transaction
from tests.conftest import NOW, Api, demo_document_data, set_secrets
from tests.factories import import_document, setup_document, text

Doc = dict[str, Any]

COUNTED = [t.name for t in metadata.sorted_tables]


async def counts(engine: AsyncEngine) -> dict[str, int]:
    """Rows of every table (every institution)."""
    result = {}
    async with read(engine) as conn:
        for name in COUNTED:
            table = metadata.tables[name]
            result[name] = (
                await conn.execute(sa.select(sa.func.count()).select_from(table))
            ).scalar_one()
    return result


async def rows(engine: AsyncEngine, table: sa.Table, *order: str) -> list[Any]:
    async with read(engine) as conn:
        query = sa.select(table).order_by(*(table.c[o] for o in order or ("id",)))
        return list((await conn.execute(query)).all())


async def ids_by_code(engine: AsyncEngine) -> dict[str, dict[Any, int]]:
    """The ids partners cache, by business key."""
    seats = await rows(engine, db.seat)
    blocks = {b.id: b.code for b in await rows(engine, db.block)}
    return {
        "product": {p.code: p.id for p in await rows(engine, db.product)},
        "performance": {p.code: p.id for p in await rows(engine, db.performance)},
        "tariff": {t.code: t.id for t in await rows(engine, db.audience_sub_category)},
        "seat_category": {c.code: c.id for c in await rows(engine, db.seat_category)},
        "seat": {(blocks[s.block_id], s.row, s.number): s.id for s in seats},
        "product_item": {i.code: i.id for i in await rows(engine, db.product_item)},
        "season": {s.code: s.id for s in await rows(engine, db.season)},
        "sales_channel": {c.code: c.id for c in await rows(engine, db.sales_channel)},
        "point_of_sale": {p.code: p.id for p in await rows(engine, db.point_of_sale)},
    }


async def setup_version(engine: AsyncEngine, code: str = "ACME") -> tuple[int, datetime | None]:
    async with read(engine) as conn:
        row = (
            await conn.execute(
                sa.select(db.institution.c.setup_version, db.institution.c.setup_updated_at).where(
                    db.institution.c.code == code
                )
            )
        ).one()
    return row.setup_version, row.setup_updated_at


async def snapshot_versions(engine: AsyncEngine) -> dict[tuple[str, str], tuple[int, datetime]]:
    channel = {c.id: c.code for c in await rows(engine, db.sales_channel)}
    return {
        (channel[s.sales_channel_id], s.scope): (s.version, s.updated_at)
        for s in await rows(engine, db.catalog_snapshot)
    }


async def export(engine: AsyncEngine, code: str = "ACME") -> Doc:
    async with read(engine) as conn:
        return await export_institution(conn, code)


async def import_at(engine: AsyncEngine, data: Doc, at: datetime) -> Any:
    return await import_institution(engine, parse_document(data), now=at, actor="test")


def with_visit_pass(doc: Doc) -> Doc:
    """The factory document plus a timed-entry pass: a schedule of one week (Monday 4 to Sunday
    10 January 2027, closed on Mondays) and two explicit timeslots."""
    doc["products"].append(
        {
            "code": "VISIT",
            "family": "PASS",
            "subType": "VISIT",
            "season": "S1",
            "name": text("Visit"),
            "vatCode": "VAT",
            "salesPeriods": [
                {
                    "salesChannel": "WEB",
                    "start": "2026-09-01T00:00:00+02:00",
                    "end": "2027-06-30T00:00:00+02:00",
                }
            ],
            "items": [
                {
                    "code": "SLOT",
                    "name": text("Timed entry"),
                    "kind": "TIMESLOT",
                    "prices": {"FULL": "15.00", "RED": "9.50"},
                    "schedule": {
                        "firstDay": "2027-01-04",
                        "lastDay": "2027-01-10",
                        "weekdays": [2, 3, 4, 5, 6, 7],
                        "opens": "10:00",
                        "closes": "12:00",
                        "everyMinutes": 30,
                        "quota": 25,
                    },
                },
                {
                    "code": "NIGHT",
                    "name": text("Night visit"),
                    "kind": "TIMESLOT",
                    "prices": {"FULL": "20.00"},
                    "timeslots": [
                        {"start": "2027-01-08T20:00:00", "end": "2027-01-08T22:00:00", "quota": 15},
                        {
                            "start": "2027-01-15T20:00:00+01:00",
                            "end": "2027-01-15T22:00:00+01:00",
                            "quota": 12,
                        },
                    ],
                },
            ],
        }
    )
    return doc


# --- a first import -----------------------------------------------------------------------


async def test_import_creates_the_rows(scratch_engine: AsyncEngine) -> None:
    result = await import_document(scratch_engine, setup_document())

    assert (result.changes, result.setup_version, result.channels_changed) == (166, 1, 4)
    assert await counts(scratch_engine) == {
        "institution": 1,
        "audit_entry": 1,
        "contingent": 1,
        "organization": 1,
        "payment_method": 2,
        "season": 1,
        "site": 1,
        "theme": 0,
        "vat_code": 1,
        "audience_category": 1,
        "price_level": 0,
        "product": 2,
        "sales_channel": 2,
        "space": 1,
        "audience_sub_category": 2,
        "catalog_snapshot": 4,
        "contingent_sales_channel": 1,
        "physical_configuration": 1,
        "point_of_sale": 2,
        "product_item": 1,
        "sales_period": 3,
        "area": 1,
        "logical_configuration": 1,
        "operator": 2,
        "point_of_sale_payment_method": 2,
        "timeslot": 0,
        "block": 2,
        "performance": 2,
        "seat_category": 2,
        "composed_product_performance": 0,
        "contingent_allocation": 2,
        "price": 2 * 4 + 1,
        # the inventory the catalog calls for: per performance C1 pool, C2 pool, C2 reseller
        # quota, and the pass item's unlimited stock
        "stock": 7,
        "performance_seat": 120,
        "hold": 0,
        "hold_line": 0,
        "inventory_change": 7,  # provisioning logs every new stock
        "inventory_sequence": 1,
        "seat": 60,
        "zone": 0,
        "seat_assignment": 60,
        # sales, barcodes and payments: nothing sold yet, no barcode key until the first ticket
        **dict.fromkeys(
            [
                "sales_order",
                "operation",
                "movement",
                "ticket",
                "payment",
                "account",
                "account_entry",
                "barcode_key",
                "barcode_revocation",
                "barcode_revocation_sequence",
                "payment_intent",
                "payment_event",
                "payment_refund",
                "payment_test_ledger",
            ],
            0,
        ),
        # delivery: nothing is queued, no webhook in this file
        "outbox": 0,
        "idempotency_key": 0,
        "webhook_subscription": 0,
        "webhook_attempt": 0,
        # contacts and identity: this setup file has no criteria nor sign-in settings
        **dict.fromkeys(
            [
                "contact",
                "contact_address",
                "contact_authorization",
                "contact_authorization_type",
                "contact_criterion",
                "contact_criterion_choice",
                "contact_external_identity",
                "ticket_holder",
                "account_session",
                "account_token",
                "identity_key",
                "login_failure",
                "mail_message",
                "oidc_code",
                "point_of_sale_identity",
                "remember_token",
                "saml_request",
                # printing: this setup file has no printing interface
                "printing_interface",
                "printing_schedule",
                "printing_ticket",
                "printing_ticket_history",
                "printing_execution",
                # the shop: nobody waits in a queue
                "shop_queue_ticket",
                # applied and deleted by each commit that writes it
                "commit_work",
            ],
            0,
        ),
    }
    assert await setup_version(scratch_engine) == (1, NOW)


async def test_import_writes_what_the_file_says(scratch_engine: AsyncEngine) -> None:
    await import_document(scratch_engine, setup_document())
    ids = await ids_by_code(scratch_engine)

    [institution] = await rows(scratch_engine, db.institution)
    assert (institution.code, institution.name, institution.currency) == (
        "ACME",
        {"en": "ACME institution", "fr": "ACME institution (fr)"},
        "EUR",
    )
    performances = await rows(scratch_engine, db.performance, "code")
    assert [(p.code, p.start, p.duration, p.state, p.product_id) for p in performances] == [
        ("SH01", datetime(2027, 1, 2, 19, 0, tzinfo=UTC), 7200, "RUNNING", ids["product"]["SHOW"]),
        ("SH02", datetime(2027, 1, 3, 19, 0, tzinfo=UTC), 7200, "RUNNING", ids["product"]["SHOW"]),
    ]
    category = {v: k for k, v in ids["seat_category"].items()}
    tariff = {v: k for k, v in ids["tariff"].items()}
    performance = {v: k for k, v in ids["performance"].items()}
    prices = {
        (
            performance.get(p.performance_id),
            category.get(p.seat_category_id),
            tariff[p.audience_sub_category_id],
        ): p.amount
        for p in await rows(scratch_engine, db.price)
    }
    assert prices == {
        ("SH01", "C1", "FULL"): 50000,
        ("SH01", "C1", "RED"): 40000,
        ("SH01", "C2", "FULL"): 30000,
        ("SH01", "C2", "RED"): 25500,
        ("SH02", "C1", "FULL"): 50000,
        ("SH02", "C1", "RED"): 40000,
        ("SH02", "C2", "FULL"): 30000,
        ("SH02", "C2", "RED"): 25500,
        (None, None, "FULL"): 12000,
    }
    allocations = await rows(scratch_engine, db.contingent_allocation)
    assert sorted(
        (performance[a.performance_id], category[a.seat_category_id], a.quantity)
        for a in allocations
    ) == [("SH01", "C2", 5), ("SH02", "C2", 5)]
    # seats: 2 blocks x 3 rows x 10; the nearest to the stage (5, -2) ranks first
    seats = await rows(scratch_engine, db.seat, "rank")
    block = {b.id: b.code for b in await rows(scratch_engine, db.block)}
    assert [(block[s.block_id], s.row, s.number, s.x, s.y) for s in seats[:2]] == [
        ("A", "1", "6", 5.0, 0.0),
        ("A", "1", "5", 4.0, 0.0),
    ]
    assert [s.rank for s in seats] == list(range(1, 61))
    by_key = {(block[s.block_id], s.row, s.number): s for s in seats}
    assert (by_key[("B", "3", "10")].x, by_key[("B", "3", "10")].y) == (21.0, 2.0)
    assignments = await rows(scratch_engine, db.seat_assignment)
    seat_block = {s.id: block[s.block_id] for s in seats}
    assert sorted({(seat_block[a.seat_id], category[a.seat_category_id]) for a in assignments}) == [
        ("A", "C1"),
        ("B", "C2"),
    ]
    periods = await rows(scratch_engine, db.sales_period)
    channel = {v: k for k, v in ids["sales_channel"].items()}
    product = {v: k for k, v in ids["product"].items()}
    assert sorted((product[p.product_id], channel[p.sales_channel_id]) for p in periods) == [
        ("PASS", "WEB"),
        ("SHOW", "RES"),
        ("SHOW", "WEB"),
    ]
    assert periods[0].start == datetime(2026, 8, 31, 22, 0, tzinfo=UTC)


async def test_import_writes_timeslots(scratch_engine: AsyncEngine) -> None:
    result = await import_document(scratch_engine, with_visit_pass(setup_document()))

    assert result.changes == 166 + 1 + 1 + 2 + 3 + 6 * 4 + 2
    ids = await ids_by_code(scratch_engine)
    slots = await rows(scratch_engine, db.timeslot, "start")
    day_slots = [s for s in slots if s.product_item_id == ids["product_item"]["SLOT"]]
    assert len(day_slots) == 6 * 4  # Tuesday to Sunday, 10:00 to 12:00 every 30 minutes
    assert [(s.start, s.end, s.quota) for s in day_slots[:5]] == [
        (datetime(2027, 1, 5, 9, 0, tzinfo=UTC), datetime(2027, 1, 5, 9, 30, tzinfo=UTC), 25),
        (datetime(2027, 1, 5, 9, 30, tzinfo=UTC), datetime(2027, 1, 5, 10, 0, tzinfo=UTC), 25),
        (datetime(2027, 1, 5, 10, 0, tzinfo=UTC), datetime(2027, 1, 5, 10, 30, tzinfo=UTC), 25),
        (datetime(2027, 1, 5, 10, 30, tzinfo=UTC), datetime(2027, 1, 5, 11, 0, tzinfo=UTC), 25),
        (datetime(2027, 1, 6, 9, 0, tzinfo=UTC), datetime(2027, 1, 6, 9, 30, tzinfo=UTC), 25),
    ]
    assert day_slots[-1].start == datetime(2027, 1, 10, 10, 30, tzinfo=UTC)
    night = [
        (s.start, s.end, s.quota)
        for s in slots
        if s.product_item_id == ids["product_item"]["NIGHT"]
    ]
    assert night == [  # the first given without offset: the organization's time (Europe/Zurich)
        (datetime(2027, 1, 8, 19, 0, tzinfo=UTC), datetime(2027, 1, 8, 21, 0, tzinfo=UTC), 15),
        (datetime(2027, 1, 15, 19, 0, tzinfo=UTC), datetime(2027, 1, 15, 21, 0, tzinfo=UTC), 12),
    ]
    [item] = [i for i in await rows(scratch_engine, db.product_item) if i.code == "SLOT"]
    assert item.schedule == {
        "firstDay": "2027-01-04",
        "lastDay": "2027-01-10",
        "weekdays": [2, 3, 4, 5, 6, 7],
        "opens": "10:00:00",
        "closes": "12:00:00",
        "everyMinutes": 30,
        "quota": 25,
    }


async def test_a_schedule_over_the_summer_time_change_imports(scratch_engine: AsyncEngine) -> None:
    """The night the clocks go forward (28 March 2027 in Europe/Zurich) 02:00 does not exist."""
    doc = setup_document()
    doc["products"][1]["items"][0] |= {
        "kind": "TIMESLOT",
        "schedule": {
            "firstDay": "2027-03-28",
            "lastDay": "2027-03-28",
            "opens": "01:00",
            "closes": "04:00",
            "everyMinutes": 60,
            "quota": 5,
        },
    }

    await import_document(scratch_engine, doc)

    slots = await rows(scratch_engine, db.timeslot, "start")
    assert [(s.start, s.end) for s in slots] == [
        (datetime(2027, 3, 28, 0, 0, tzinfo=UTC), datetime(2027, 3, 28, 1, 0, tzinfo=UTC)),
        (datetime(2027, 3, 28, 1, 0, tzinfo=UTC), datetime(2027, 3, 28, 2, 0, tzinfo=UTC)),
    ]


# --- refusals -------------------------------------------------------------------------------


async def test_a_rejected_document_writes_nothing(scratch_engine: AsyncEngine) -> None:
    doc = setup_document()
    doc["products"][0]["event"]["performances"][1]["start"] = "next tuesday"

    with pytest.raises(SetupFileError):
        await import_document(scratch_engine, doc)

    assert set((await counts(scratch_engine)).values()) == {0}


async def test_a_rejected_update_changes_nothing(scratch_engine: AsyncEngine) -> None:
    await import_document(scratch_engine, setup_document())
    before = await counts(scratch_engine)
    ids = await ids_by_code(scratch_engine)
    snapshots = await snapshot_versions(scratch_engine)
    doc = setup_document(performances=3)
    doc["products"][0]["name"] = text("Renamed")
    doc["products"][0]["event"]["prices"]["C9"] = {"FULL": "10.00"}

    with pytest.raises(SetupFileError) as caught:
        await import_document(scratch_engine, doc)

    assert caught.value.problems == [("products[0].event.prices.C9", "unknown seat category C9")]
    assert await counts(scratch_engine) == before
    assert await ids_by_code(scratch_engine) == ids
    assert await snapshot_versions(scratch_engine) == snapshots
    assert await setup_version(scratch_engine) == (1, NOW)
    assert [p.name for p in await rows(scratch_engine, db.product)] == [text("Show"), text("Pass")]


# --- re-imports -----------------------------------------------------------------------------


async def test_reimporting_the_same_document_changes_nothing(scratch_engine: AsyncEngine) -> None:
    doc = with_visit_pass(setup_document())
    await import_document(scratch_engine, doc)
    before = await counts(scratch_engine)
    ids = await ids_by_code(scratch_engine)
    snapshots = await snapshot_versions(scratch_engine)

    result = await import_at(scratch_engine, doc, NOW + timedelta(hours=1))

    assert (result.changes, result.setup_version, result.channels_changed) == (0, 1, 0)
    assert await setup_version(scratch_engine) == (1, NOW)
    assert await snapshot_versions(scratch_engine) == snapshots
    assert await ids_by_code(scratch_engine) == ids
    assert await counts(scratch_engine) == before | {"audit_entry": 2}


async def test_a_change_keeps_every_id(scratch_engine: AsyncEngine) -> None:
    await import_document(scratch_engine, setup_document())
    before = await ids_by_code(scratch_engine)
    doc = setup_document(performances=3)
    doc["products"][0]["name"] = text("Show, renamed")
    doc["products"][0]["event"]["prices"]["C1"]["FULL"] = "55.00"

    result = await import_at(scratch_engine, doc, NOW + timedelta(hours=1))

    # the product, a performance, 4 prices and an allocation for it, and C1/FULL of SH01 and SH02
    assert (result.changes, result.setup_version) == (1 + 1 + 4 + 1 + 2, 2)
    assert await setup_version(scratch_engine) == (2, NOW + timedelta(hours=1))
    after = await ids_by_code(scratch_engine)
    for kind, known in before.items():
        assert {k: after[kind][k] for k in known} == known, kind
    assert set(after["performance"]) == {"SH01", "SH02", "SH03"}
    assert after["product"] == before["product"]
    assert after["seat"] == before["seat"]
    assert after["tariff"] == before["tariff"]
    [show] = [p for p in await rows(scratch_engine, db.product) if p.code == "SHOW"]
    assert show.name == text("Show, renamed")
    full_c1 = sorted(
        (p.performance_id, p.amount)
        for p in await rows(scratch_engine, db.price)
        if p.seat_category_id == after["seat_category"]["C1"]
        and p.audience_sub_category_id == after["tariff"]["FULL"]
    )
    assert full_c1 == sorted((after["performance"][c], 55000) for c in ("SH01", "SH02", "SH03"))


async def test_snapshots_move_only_for_channels_whose_catalog_changed(
    scratch_engine: AsyncEngine,
) -> None:
    await import_document(scratch_engine, setup_document())
    first = NOW
    assert await snapshot_versions(scratch_engine) == {
        ("WEB", "STANDARD"): (1, first),
        ("WEB", "EXTENDED"): (1, first),
        ("RES", "STANDARD"): (1, first),
        ("RES", "EXTENDED"): (1, first),
    }

    # the pass is sold on WEB only
    second = NOW + timedelta(hours=1)
    doc = setup_document()
    doc["products"][1]["name"] = text("Pass, renamed")
    result = await import_at(scratch_engine, doc, second)

    assert (result.changes, result.setup_version, result.channels_changed) == (1, 2, 2)
    assert await snapshot_versions(scratch_engine) == {
        ("WEB", "STANDARD"): (2, second),
        ("WEB", "EXTENDED"): (2, second),
        ("RES", "STANDARD"): (1, first),
        ("RES", "EXTENDED"): (1, first),
    }

    # the show is sold on both
    third = NOW + timedelta(hours=2)
    doc["products"][0]["event"]["prices"]["C2"]["RED"] = "26.00"
    result = await import_at(scratch_engine, doc, third)

    assert (result.changes, result.setup_version, result.channels_changed) == (2, 3, 4)
    assert await snapshot_versions(scratch_engine) == {
        ("WEB", "STANDARD"): (3, third),
        ("WEB", "EXTENDED"): (3, third),
        ("RES", "STANDARD"): (3, third),
        ("RES", "EXTENDED"): (3, third),
    }


async def test_a_change_no_catalog_shows_moves_the_setup_version_only(
    scratch_engine: AsyncEngine,
) -> None:
    await import_document(scratch_engine, setup_document())
    snapshots = await snapshot_versions(scratch_engine)
    doc = setup_document()
    doc["salesChannels"][0]["pointsOfSale"][0]["orderAbandonDelay"] = 30

    result = await import_at(scratch_engine, doc, NOW + timedelta(hours=1))

    assert (result.changes, result.setup_version, result.channels_changed) == (1, 2, 0)
    assert await snapshot_versions(scratch_engine) == snapshots
    [web] = [p for p in await rows(scratch_engine, db.point_of_sale) if p.code == "ACMEWEB"]
    assert web.order_abandon_delay == 30


async def test_a_product_in_the_reseller_catalog_only_moves_its_snapshots(
    scratch_engine: AsyncEngine,
) -> None:
    doc = setup_document()
    del doc["products"][0]["salesPeriods"][0]  # the show is now sold by the reseller only
    await import_document(scratch_engine, doc)
    doc["products"][0]["alertRatio"] = 25

    result = await import_at(scratch_engine, doc, NOW + timedelta(hours=1))

    assert result.channels_changed == 2
    versions = {
        key: version for key, (version, _) in (await snapshot_versions(scratch_engine)).items()
    }
    assert versions == {
        ("WEB", "STANDARD"): 1,
        ("WEB", "EXTENDED"): 1,
        ("RES", "STANDARD"): 2,
        ("RES", "EXTENDED"): 2,
    }


async def test_removing_a_performance_deletes_it_and_its_prices(
    scratch_engine: AsyncEngine,
) -> None:
    await import_document(scratch_engine, setup_document(performances=3))
    before = await ids_by_code(scratch_engine)
    assert len(await rows(scratch_engine, db.price)) == 3 * 4 + 1

    result = await import_document(scratch_engine, setup_document(performances=2))

    assert (result.changes, result.setup_version, result.channels_changed) == (1 + 4 + 1, 2, 4)
    after = await ids_by_code(scratch_engine)
    assert after["performance"] == {k: before["performance"][k] for k in ("SH01", "SH02")}
    prices = await rows(scratch_engine, db.price)
    assert len(prices) == 2 * 4 + 1
    assert {p.performance_id for p in prices} == {
        after["performance"]["SH01"],
        after["performance"]["SH02"],
        None,
    }
    allocations = await rows(scratch_engine, db.contingent_allocation)
    assert sorted(a.performance_id for a in allocations) == sorted(after["performance"].values())
    assert after["seat"] == before["seat"]


async def test_removing_a_product_and_a_timeslot_item(scratch_engine: AsyncEngine) -> None:
    await import_document(scratch_engine, with_visit_pass(setup_document()))
    assert len(await rows(scratch_engine, db.timeslot)) == 26

    result = await import_document(scratch_engine, setup_document())

    assert result.changes == 1 + 1 + 2 + 3 + 6 * 4 + 2
    assert [p.code for p in await rows(scratch_engine, db.product)] == ["SHOW", "PASS"]
    assert await rows(scratch_engine, db.timeslot) == []
    assert [i.code for i in await rows(scratch_engine, db.product_item)] == ["DAY"]
    assert len(await rows(scratch_engine, db.price)) == 2 * 4 + 1


def with_box_office(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with a second point of sale on the web channel."""
    doc["salesChannels"][0]["pointsOfSale"].append(
        {"code": "ACMEBOX", "number": 3, "name": text("Box office"), "paymentMethods": ["CARD"]}
    )
    return doc


async def an_order_at(engine: AsyncEngine, pos_code: str) -> None:
    """An order on the point of sale ``pos_code`` (the row, as the sale writes it)."""
    from billetterie.sales import db as sales_db

    async with transaction(engine) as conn:
        pos = (
            await conn.execute(
                sa.select(db.point_of_sale).where(db.point_of_sale.c.code == pos_code)
            )
        ).one()
        await conn.execute(
            sa.insert(sales_db.sales_order).values(
                institution_id=pos.institution_id,
                point_of_sale_id=pos.id,
                sales_channel_id=pos.sales_channel_id,
                secret_id="s-" + pos_code,
                operator="test",
                order_type="SALE",
                state="CLOSED",
                currency="EUR",
                total=0,
                paid=0,
                language="en",
                purchaser={},
                created_at=NOW,
                updated_at=NOW,
            )
        )


async def test_a_point_of_sale_or_channel_with_orders_is_not_removed(
    scratch_engine: AsyncEngine,
) -> None:
    from billetterie.sales import db as sales_db
    from billetterie.shared.errors import InUse

    await import_document(scratch_engine, with_box_office(setup_document()))
    await an_order_at(scratch_engine, "ACMEBOX")
    before = await counts(scratch_engine)
    ids = await ids_by_code(scratch_engine)

    with pytest.raises(InUse) as refused:
        await import_document(scratch_engine, setup_document())  # without ACMEBOX
    assert refused.value.code == "error.setup.in_use"
    assert "point of sale ACMEBOX has orders (1)" in refused.value.detail
    web = setup_document()
    web["salesChannels"] = web["salesChannels"][1:]
    web["operators"] = [o for o in web["operators"] if o["pointOfSale"] != "ACMEWEB"]
    for product in web["products"]:
        product["salesPeriods"] = [p for p in product["salesPeriods"] if p["salesChannel"] != "WEB"]
    for contingent in web.get("contingents", []):
        contingent["salesChannels"] = [c for c in contingent["salesChannels"] if c != "WEB"]
    with pytest.raises(InUse, match="sales channel WEB has orders"):
        await import_document(scratch_engine, web)
    assert await counts(scratch_engine) == before and await ids_by_code(scratch_engine) == ids
    assert len(await rows(scratch_engine, sales_db.sales_order)) == 1

    # a point of sale without orders goes
    async with transaction(scratch_engine) as conn:
        await conn.execute(sa.delete(sales_db.sales_order))
    result = await import_document(scratch_engine, setup_document())
    assert result.changes >= 1
    assert "ACMEBOX" not in (await ids_by_code(scratch_engine))["point_of_sale"]


async def test_a_product_that_order_lines_name_is_not_removed(
    scratch_engine: AsyncEngine,
) -> None:
    from billetterie.sales import db as sales_db
    from billetterie.shared.errors import InUse

    await import_document(scratch_engine, with_visit_pass(setup_document()))
    await an_order_at(scratch_engine, "ACMEWEB")
    [order] = await rows(scratch_engine, sales_db.sales_order)
    visit = (await ids_by_code(scratch_engine))["product"]["VISIT"]
    async with transaction(scratch_engine) as conn:
        await conn.execute(
            sa.insert(sales_db.operation).values(
                institution_id=order.institution_id,
                order_id=order.id,
                kind="SIMPLE_PRODUCT",
                product_id=visit,
                state="SOLD",
                quantity=1,
                created_at=NOW,
            )
        )
    before = await counts(scratch_engine)
    with pytest.raises(InUse, match=r"product VISIT has order lines \(1\): keep it in the setup"):
        await import_document(scratch_engine, setup_document())
    assert await counts(scratch_engine) == before
    assert "VISIT" in (await ids_by_code(scratch_engine))["product"]


async def test_a_performance_with_places_held_sold_or_in_orders_is_not_removed(
    scratch_engine: AsyncEngine,
) -> None:
    from billetterie.inventory import db as inventory_db
    from billetterie.inventory.services import PlaceRequest, hold_places, release_hold
    from billetterie.sales import db as sales_db
    from billetterie.shared.errors import InUse

    await import_document(scratch_engine, setup_document(performances=2))
    ids = await ids_by_code(scratch_engine)
    sh02, c1 = ids["performance"]["SH02"], ids["seat_category"]["C1"]
    [institution] = await rows(scratch_engine, db.institution)
    hold = await hold_places(
        scratch_engine,
        institution_id=institution.id,
        sales_channel_id=ids["sales_channel"]["WEB"],
        contingent_ids=[],
        cart="cart-1",
        requests=[PlaceRequest(2, performance_id=sh02, seat_category_id=c1)],
        expires_at=NOW + timedelta(minutes=20),
        now=NOW,
    )
    before = await counts(scratch_engine)
    seats = len(await rows(scratch_engine, inventory_db.performance_seat))

    without_sh02 = setup_document(performances=1)
    with pytest.raises(InUse) as refused:
        await import_document(scratch_engine, without_sh02)
    assert refused.value.code == "error.setup.in_use"
    assert refused.value.detail == (
        "performance SH02 has held or sold places (2): keep it in the setup"
    )
    assert await counts(scratch_engine) == before
    assert len(await rows(scratch_engine, inventory_db.performance_seat)) == seats

    # released, its places are free again; a place an order names still keeps it
    await release_hold(scratch_engine, institution_id=institution.id, hold_id=hold.id, now=NOW)
    await an_order_at(scratch_engine, "ACMEWEB")
    [order] = await rows(scratch_engine, sales_db.sales_order)
    async with transaction(scratch_engine) as conn:
        operation = await conn.scalar(
            sa.insert(sales_db.operation)
            .values(
                institution_id=order.institution_id,
                order_id=order.id,
                kind="SINGLE_ENTRY",
                product_id=ids["product"]["SHOW"],
                state="ABANDONED",
                quantity=1,
                created_at=NOW,
            )
            .returning(sales_db.operation.c.id)
        )
        await conn.execute(
            sa.insert(sales_db.movement).values(
                institution_id=order.institution_id,
                order_id=order.id,
                operation_id=operation,
                product_id=ids["product"]["SHOW"],
                performance_id=sh02,
                seat_category_id=c1,
                audience_sub_category_id=ids["tariff"]["FULL"],
                stock_id=0,
                amount=0,
                vat_rate=0,
                state="ABANDONED",
                labels={},
                created_at=NOW,
            )
        )
    with pytest.raises(InUse, match=r"performance SH02 has places in orders \(1\)"):
        await import_document(scratch_engine, without_sh02)
    assert "SH02" in (await ids_by_code(scratch_engine))["performance"]

    async with transaction(scratch_engine) as conn:
        await conn.execute(sa.delete(sales_db.movement))
    await import_document(scratch_engine, without_sh02)
    assert "SH02" not in (await ids_by_code(scratch_engine))["performance"]


async def test_an_operator_change_is_a_change(scratch_engine: AsyncEngine) -> None:
    await import_document(scratch_engine, setup_document())
    [before] = [
        o for o in await rows(scratch_engine, metadata.tables["operator"]) if o.login == "ACME_RES"
    ]
    doc = setup_document()
    doc["operators"][1] |= {"partner": "reseller", "callsPerMinute": 120}

    result = await import_at(scratch_engine, doc, NOW + timedelta(hours=1))
    again = await import_at(scratch_engine, doc, NOW + timedelta(hours=2))

    assert (result.changes, result.setup_version, result.channels_changed) == (1, 2, 0)
    assert (again.changes, again.setup_version) == (0, 2)
    [after] = [
        o for o in await rows(scratch_engine, metadata.tables["operator"]) if o.login == "ACME_RES"
    ]
    assert (after.id, after.partner, after.calls_per_minute, after.secret_hash) == (
        before.id,
        "reseller",
        120,
        before.secret_hash,
    )


async def test_a_theme_can_change_level(scratch_engine: AsyncEngine) -> None:
    doc = setup_document(
        themes=[
            {
                "code": "ARTS",
                "name": text("Arts"),
                "subThemes": [{"code": "DANCE", "name": text("Dance")}],
            }
        ]
    )
    doc["products"][0] |= {"theme": "ARTS", "subTheme": "DANCE"}
    await import_document(scratch_engine, doc)
    before = {t.code: t.id for t in await rows(scratch_engine, db.theme)}

    # the sub-theme becomes the theme and the other way round
    doc["themes"] = [
        {
            "code": "DANCE",
            "name": text("Dance"),
            "subThemes": [{"code": "ARTS", "name": text("Arts")}],
        }
    ]
    doc["products"][0] |= {"theme": "DANCE", "subTheme": "ARTS"}
    swapped = await import_document(scratch_engine, doc)
    # both become themes
    doc["themes"] = [
        {"code": "DANCE", "name": text("Dance")},
        {"code": "ARTS", "name": text("Arts")},
    ]
    doc["products"][0] |= {"theme": "ARTS", "subTheme": None}
    promoted = await import_document(scratch_engine, doc)

    assert (swapped.changes, swapped.setup_version) == (2 + 1, 2)
    assert (promoted.changes, promoted.setup_version) == (1 + 1, 3)
    themes = await rows(scratch_engine, db.theme)
    assert {t.code: (t.id, t.parent_id) for t in themes} == {
        "ARTS": (before["ARTS"], None),
        "DANCE": (before["DANCE"], None),
    }
    [show] = [p for p in await rows(scratch_engine, db.product) if p.code == "SHOW"]
    assert (show.theme_id, show.sub_theme_id) == (before["ARTS"], None)


# --- export ---------------------------------------------------------------------------------


async def test_export_reimported_where_it_came_from_changes_nothing(
    scratch_engine: AsyncEngine,
) -> None:
    await import_document(scratch_engine, with_visit_pass(setup_document()))
    exported = await export(scratch_engine)

    result = await import_document(scratch_engine, exported)
    again = await import_document(
        scratch_engine,
        yaml.safe_load(yaml.safe_dump(exported, allow_unicode=True, sort_keys=False)),
    )

    assert (result.changes, result.setup_version, result.channels_changed) == (0, 1, 0)
    assert (again.changes, again.setup_version, again.channels_changed) == (0, 1, 0)


async def test_export_writes_the_document_back(scratch_engine: AsyncEngine) -> None:
    await import_document(scratch_engine, with_visit_pass(setup_document()))

    exported = await export(scratch_engine)

    show, pass_, visit = exported["products"]
    assert show["event"]["performances"][1] == {
        "code": "SH02",
        "start": "2027-01-03T20:00:00+01:00",
        "duration": 7200,
        "state": "RUNNING",
        "configuration": "FULL",
        "prices": {
            "C1": {"FULL": "50.00", "RED": "40.00"},
            "C2": {"FULL": "30.00", "RED": "25.50"},
        },
        "allocations": [{"contingent": "RESQ", "seatCategory": "C2", "quantity": 5}],
    }
    assert pass_["items"] == [
        {"code": "DAY", "name": text("Day"), "kind": "OPEN", "prices": {"FULL": "12.00"}}
    ]
    assert visit["items"][0]["schedule"]["opens"] == "10:00:00"
    assert visit["items"][1]["timeslots"] == [
        {"start": "2027-01-08T20:00:00+01:00", "end": "2027-01-08T22:00:00+01:00", "quota": 15},
        {"start": "2027-01-15T20:00:00+01:00", "end": "2027-01-15T22:00:00+01:00", "quota": 12},
    ]
    assert exported["venues"][0]["spaces"][0]["configurations"][0]["areas"][0]["blocks"][1] == {
        "code": "B",
        "name": {"en": "B"},
        "rows": "1-3",
        "seats": "1-10",
        "origin": {"x": 12.0, "y": 0.0},
        "seatSpacing": 1.0,
        "rowSpacing": 1.0,
    }
    assert exported["venues"][0]["spaces"][0]["configurations"][0]["logicalConfigurations"][0][
        "seatCategories"
    ] == [
        {"code": "C1", "name": text("Cat 1"), "seats": ["FLOOR/A"]},
        {"code": "C2", "name": text("Cat 2"), "seats": ["FLOOR/B"]},
    ]


async def test_a_season_ticket_keeps_its_performance_order_through_export(
    scratch_engine: AsyncEngine,
) -> None:
    doc = setup_document(performances=3)
    doc["products"].append(
        {
            "code": "SUB",
            "family": "SEASONTICKET",
            "season": "S1",
            "name": text("Subscription"),
            "vatCode": "VAT",
            "salesPeriods": [
                {
                    "salesChannel": "WEB",
                    "start": "2026-09-01T00:00:00+02:00",
                    "end": "2027-06-30T00:00:00+02:00",
                }
            ],
            "composed": {"performances": ["SH03", "SH01"], "prices": {"C1": {"FULL": "90.00"}}},
        }
    )
    await import_document(scratch_engine, doc)
    exported = await export(scratch_engine)
    catalog = without_ids(
        await catalog_body(scratch_engine, "WEB", "STANDARD"), await id_labels(scratch_engine)
    )
    await empty(scratch_engine)

    await import_document(scratch_engine, exported)

    assert await export(scratch_engine) == exported
    labels = await id_labels(scratch_engine)
    assert without_ids(await catalog_body(scratch_engine, "WEB", "STANDARD"), labels) == catalog
    [sub] = [p for p in catalog["seasons"][0]["products"] if p["code"] == "SUB"]
    assert [p["code"] for p in sub["composedProduct"]["performances"]] == ["SH03", "SH01"]


# --- the demo, round trip ---------------------------------------------------------------------


async def empty(engine: AsyncEngine) -> None:
    async with transaction(engine) as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(table.delete())


async def catalog_body(
    engine: AsyncEngine, channel: str, scope: str, institution: str = "ACME"
) -> Any:
    async with read(engine) as conn:
        body = (
            await conn.execute(
                sa.select(db.catalog_snapshot.c.body)
                .join(
                    db.sales_channel,
                    db.sales_channel.c.id == db.catalog_snapshot.c.sales_channel_id,
                )
                .join(db.institution, db.institution.c.id == db.catalog_snapshot.c.institution_id)
                .where(
                    db.institution.c.code == institution,
                    db.sales_channel.c.code == channel,
                    db.catalog_snapshot.c.scope == scope,
                )
            )
        ).scalar_one()
    return orjson.loads(body)


# which table an id names, by the key that holds it (or, for "id", the list or object it is in)
ID_KEYS = {
    "vatCodeId": "vat_code",
    "salesChannelId": "sales_channel",
    "logicalConfigurationId": "logical_configuration",
    "siteId": "site",
    "spaceId": "space",
    "seatCatId": "seat_category",
    "audSubCatId": "audience_sub_category",
    "priceLevelId": "price_level",
    "requiredAudienceSubCategoryIds": "audience_sub_category",
    "contingentIds": "contingent",
    "performanceIds": "performance",
    "productId": "product",
    "itemId": "product_item",
}
ID_OWNERS = {
    "seasons": "season",
    "audienceCategories": "audience_category",
    "audienceSubCategories": "audience_sub_category",
    "priceLevels": "price_level",
    "products": "product",
    "event": "product",
    "performances": "performance",
    "seatCategories": "seat_category",
    "theme": "theme",
    "subTheme": "theme",
    "timeslots": "timeslot",
}


async def id_labels(engine: AsyncEngine) -> dict[str, dict[int, str]]:
    """Every id of the catalog tables, as a label made of business codes."""
    simple = {
        name: {r.id: r.code for r in await rows(engine, metadata.tables[name])}
        for name in (
            "vat_code",
            "sales_channel",
            "site",
            "space",
            "season",
            "price_level",
            "product",
            "performance",
            "theme",
            "contingent",
            "logical_configuration",
        )
    }
    categories = {c.id: c.code for c in await rows(engine, db.audience_category)}
    items = await rows(engine, db.product_item)
    return simple | {
        "audience_category": categories,
        "audience_sub_category": {
            t.id: f"{categories[t.audience_category_id]}/{t.code}"
            for t in await rows(engine, db.audience_sub_category)
        },
        "seat_category": {
            c.id: f"{simple['logical_configuration'][c.logical_configuration_id]}/{c.code}"
            for c in await rows(engine, db.seat_category)
        },
        "product_item": {i.id: f"{simple['product'][i.product_id]}/{i.code}" for i in items},
        "timeslot": {t.id: t.start.isoformat() for t in await rows(engine, db.timeslot)},
    }


def without_ids(value: Any, labels: dict[str, dict[int, str]], owner: str | None = None) -> Any:
    if isinstance(value, list):
        return [without_ids(v, labels, owner) for v in value]
    if not isinstance(value, dict):
        return value
    result = {}
    for key, item in value.items():
        if key == "id":
            assert owner is not None
            result[key] = labels[owner][item]
        elif key in ID_KEYS:
            table = labels[ID_KEYS[key]]
            result[key] = (
                [table[i] for i in item]
                if isinstance(item, list)
                else (None if item is None else table[item])
            )
        else:
            result[key] = without_ids(item, labels, ID_OWNERS.get(key, owner))
    return result


async def test_demo_round_trip(demo_engine: AsyncEngine, scratch_engine: AsyncEngine) -> None:
    """The demo exported from its database and imported into an empty one exports the same
    document, re-imports without a change and gives the same catalogs (modulo ids)."""
    exported = await export(demo_engine, "DEMO")

    result = await import_document(scratch_engine, exported)

    assert (result.setup_version, result.channels_changed) == (1, 6)
    assert await export(scratch_engine, "DEMO") == exported
    demo_labels = await id_labels(demo_engine)
    scratch_labels = await id_labels(scratch_engine)
    for channel in ("WEB", "RESELL1", "BOX"):
        for scope in ("STANDARD", "EXTENDED"):
            demo = without_ids(await catalog_body(demo_engine, channel, scope, "DEMO"), demo_labels)
            scratch = without_ids(
                await catalog_body(scratch_engine, channel, scope, "DEMO"), scratch_labels
            )
            assert scratch == demo, (channel, scope)
    again = await import_document(scratch_engine, exported)
    assert (again.changes, again.setup_version, again.channels_changed) == (0, 1, 0)


async def test_demo_export_describes_the_demo_file(demo_engine: AsyncEngine) -> None:
    """What the demo file says comes back in the export (which also spells out defaults)."""
    exported = parse_document(await export(demo_engine, "DEMO"))
    original = parse_document(demo_document_data())

    assert [p.code for p in exported.products] == [p.code for p in original.products]
    for mine, theirs in zip(exported.products, original.products, strict=True):
        assert (
            mine.name,
            mine.description,
            mine.state,
            mine.family,
            mine.subType,
            mine.vatCode,
        ) == (
            theirs.name,
            theirs.description,
            theirs.state,
            theirs.family,
            theirs.subType,
            theirs.vatCode,
        )
        assert [(s.salesChannel, s.start, s.end) for s in mine.salesPeriods] == [
            (s.salesChannel, s.start, s.end) for s in theirs.salesPeriods
        ]
    assert seat_rows(exported) == seat_rows(original)
    assert exported.seasons == original.seasons
    assert exported.vatCodes == original.vatCodes
    assert exported.themes == original.themes
    assert exported.contingents == original.contingents


def seat_rows(document: Any) -> list[Any]:
    return [
        (site.code, space.code, pc.code, area.code, block.code, block_rows(block))
        for site in document.venues
        for space in site.spaces
        for pc in space.configurations
        for area in pc.areas
        for block in area.blocks
    ]


# --- getLastSetupUpdate --------------------------------------------------------------------


async def acme_operators(engine: AsyncEngine) -> None:
    await set_secrets(
        engine, "ACME", [("ACME_WEB", "ACMEWEB", "web"), ("ACME_RES", "ACMERES", "res")]
    )


async def test_last_setup_update_reports_the_new_version(
    scratch_engine: AsyncEngine, scratch_api: Api
) -> None:
    await import_document(scratch_engine, setup_document())
    await acme_operators(scratch_engine)
    web = await scratch_api.token("ACME_WEB", "web")
    res = await scratch_api.token("ACME_RES", "res")

    async def last(token: str, scope: str | None = None) -> Any:
        body = {"requestId": "r"} | ({"scope": scope} if scope else {})
        response = await scratch_api.rpc("catalogService", "getLastSetupUpdate", body, token=token)
        assert response.status_code == 200
        return response.json()

    assert await last(web) == {
        "statusCode": "success",
        "statusDetail": "OK",
        "requestId": "r",
        "lastSetupUpdate": "2026-11-23T12:00:00+00:00",
        "setupVersion": 1,
    }

    doc = setup_document()
    doc["products"][1]["name"] = text("Pass, renamed")  # sold on WEB only
    await import_at(scratch_engine, doc, NOW + timedelta(minutes=5))

    assert await last(web) == {
        "statusCode": "success",
        "statusDetail": "OK",
        "requestId": "r",
        "lastSetupUpdate": "2026-11-23T12:05:00+00:00",
        "setupVersion": 2,
    }
    assert (await last(web, "EXTENDED"))["setupVersion"] == 2
    assert await last(res) == {
        "statusCode": "success",
        "statusDetail": "OK",
        "requestId": "r",
        "lastSetupUpdate": "2026-11-23T12:00:00+00:00",
        "setupVersion": 1,
    }
    # the operators' secrets survive the re-import, and the catalog served is the new one
    response = await scratch_api.rpc(
        "catalogService",
        "getCatalogDetailed",
        {"productCode": "PASS"},
        token=await scratch_api.token("ACME_WEB", "web"),
    )
    [product] = response.json()["catalogData"]["seasons"][0]["products"]
    assert product["externalName"] == {
        "translations": [
            {"locale": "en", "value": "Pass, renamed"},
            {"locale": "fr", "value": "Pass, renamed (fr)"},
        ]
    }
