"""The setup file's validation: every broken document is refused with the exact path and message.

Pure parsing (``parse_document`` and its helpers): no database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from billetterie.catalog.setupfile import (
    BlockSpec,
    ScheduleSpec,
    SetupFileError,
    block_rows,
    expand_labels,
    parse_document,
    parse_selector,
    schedule_slots,
)
from tests.conftest import demo_document_data
from tests.factories import setup_document, text

PARIS = ZoneInfo("Europe/Paris")
Doc = dict[str, Any]


def problems_of(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(SetupFileError) as caught:
        parse_document(data)
    return caught.value.problems


def broken(change: Callable[[Doc], None], **factory: Any) -> Doc:
    doc = setup_document(**factory)
    change(doc)
    return doc


def show(doc: Doc) -> Doc:
    product: Doc = doc["products"][0]
    return product


def pass_item(doc: Doc) -> Doc:
    item: Doc = doc["products"][1]["items"][0]
    return item


def plan(doc: Doc) -> Doc:
    configuration: Doc = doc["venues"][0]["spaces"][0]["configurations"][0]
    return configuration


def seat_categories(doc: Doc) -> list[Doc]:
    categories: list[Doc] = plan(doc)["logicalConfigurations"][0]["seatCategories"]
    return categories


def block_a(doc: Doc) -> Doc:
    block: Doc = plan(doc)["areas"][0]["blocks"][0]
    return block


def timeslot_schedule(**overrides: Any) -> Doc:
    schedule = {
        "firstDay": "2027-01-04",
        "lastDay": "2027-01-10",
        "opens": "10:00",
        "closes": "12:00",
        "everyMinutes": 30,
        "quota": 20,
    }
    schedule.update(overrides)
    return schedule


SELECTOR = "venues[0].spaces[0].configurations[0].logicalConfigurations[0].seatCategories"
BLOCK = "venues[0].spaces[0].configurations[0].areas[0].blocks[0]"


# --- the factory document itself ---------------------------------------------------------


def test_factory_document_is_valid() -> None:
    document = parse_document(setup_document())

    assert [p.code for p in document.products] == ["SHOW", "PASS"]
    event = document.products[0].event
    assert event is not None
    assert [p.code for p in event.performances] == ["SH01", "SH02"]
    assert event.performances[1].start == datetime(
        2027, 1, 3, 20, 0, tzinfo=timezone(timedelta(hours=1))
    )
    assert event.duration == 7200
    assert event.prices == {
        "C1": {"FULL": 50000, "RED": 40000},
        "C2": {"FULL": 30000, "RED": 25500},
    }
    assert document.products[1].items is not None
    assert document.products[1].items[0].prices == {"FULL": 12000}


def test_demo_document_is_valid() -> None:
    document = parse_document(demo_document_data())

    assert [p.code for p in document.products] == [
        "HAMLET",
        "FCDEMO1",
        "MUSVISIT",
        "OPENPASS",
        "THSUB5",
        "FRIENDS",
        "PARKING",
        "TARTUFFE",
    ]


# --- one problem each ----------------------------------------------------------------------


def _set(path: list[Any], value: Any) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        node: Any = doc
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return change


def _delete(path: list[Any]) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        node: Any = doc
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return change


SHOW_PRICES = ["products", 0, "event", "prices"]

CASES = [
    # shape
    pytest.param(
        _set(["products", 0, "event", "performances", 1, "start"], "next tuesday"),
        [("products[0].event.performances[1].start", "not an ISO date")],
        id="performance-start-not-iso",
    ),
    pytest.param(
        _set(["seasons", 0, "start"], "2026-13-01T00:00:00+02:00"),
        [("seasons[0].start", "not an ISO date")],
        id="season-start-month-13",
    ),
    pytest.param(
        _set(["products", 0, "colour"], "red"),
        [("products[0].colour", "unknown field")],
        id="unknown-product-field",
    ),
    pytest.param(
        _set(["settings"], {"x": 1}),
        [("settings", "unknown field")],
        id="unknown-top-level-field",
    ),
    pytest.param(
        _delete(["products", 0, "vatCode"]),
        [("products[0].vatCode", "required")],
        id="missing-vat-code",
    ),
    pytest.param(
        _delete(["institution"]),
        [("institution", "required")],
        id="missing-institution",
    ),
    pytest.param(
        _delete(["venues", 0, "spaces", 0, "configurations", 0, "areas", 0, "blocks", 1, "code"]),
        [("venues[0].spaces[0].configurations[0].areas[0].blocks[1].code", "required")],
        id="missing-block-code",
    ),
    pytest.param(
        _set(["products", 0, "family"], "CONCERT"),
        [
            (
                "products[0].family",
                "must be one of SINGLE_ENTRY, SEASONTICKET, PASS, PACKAGE, MEMBERSHIP, SERVICE, "
                "GOODS, TRANSPORT or HOSPITALITY",
            )
        ],
        id="wrong-family",
    ),
    pytest.param(
        _set(["salesChannels", 0, "type"], "WEB"),
        [
            (
                "salesChannels[0].type",
                "must be one of INTERNET_B2C, INTERNET_B2B, RESELLER, BOX_OFFICE, CALL_CENTER "
                "or KIOSK",
            )
        ],
        id="wrong-channel-type",
    ),
    pytest.param(
        _set(["products", 1, "items", 0, "kind"], "VISIT"),
        [("products[1].items[0].kind", "must be one of OPEN or TIMESLOT")],
        id="wrong-item-kind",
    ),
    pytest.param(
        _set(["products", 0, "code"], "show"),
        [("products[0].code", "does not match ^[A-Z0-9][A-Z0-9_\\-]{0,15}$")],
        id="lowercase-code",
    ),
    pytest.param(
        _set(["institution", "currency"], "euro"),
        [("institution.currency", "does not match ^[A-Z]{3}$")],
        id="bad-currency",
    ),
    pytest.param(
        _set(["products", 0, "alertRatio"], 150),
        [("products[0].alertRatio", "input should be less than or equal to 100")],
        id="alert-ratio-over-100",
    ),
    pytest.param(
        _set(["products", 0, "event", "duration"], "soon"),
        [("products[0].event.duration", "not a duration (seconds, '2h30', '90min' or 'PT2H30M')")],
        id="bad-duration",
    ),
    pytest.param(
        _set(["products"], "SHOW"),
        [("products", "not a list")],
        id="products-not-a-list",
    ),
    pytest.param(
        _set(["institution"], "ACME"),
        [("institution", "not a mapping")],
        id="institution-not-a-mapping",
    ),
    pytest.param(
        _set([*SHOW_PRICES, "C1"], "50.00"),
        [("products[0].event.prices.C1", "not a mapping")],
        id="seat-category-prices-not-a-mapping",
    ),
    # amounts
    pytest.param(
        _set([*SHOW_PRICES, "C1", "FULL"], "12.3456"),
        [("products[0].event.prices.C1.FULL", "not an amount (more than three decimals)")],
        id="amount-four-decimals",
    ),
    pytest.param(
        _set([*SHOW_PRICES, "C1", "FULL"], "-1"),
        [("products[0].event.prices.C1.FULL", "not an amount (negative amount)")],
        id="amount-negative",
    ),
    pytest.param(
        _set([*SHOW_PRICES, "C1", "FULL"], "abc"),
        [("products[0].event.prices.C1.FULL", "not an amount")],
        id="amount-text",
    ),
    pytest.param(
        _set([*SHOW_PRICES, "C1", "FULL"], True),
        [("products[0].event.prices.C1.FULL", "not an amount")],
        id="amount-boolean",
    ),
    pytest.param(
        _set(["products", 1, "items", 0, "prices", "FULL"], "12,00"),
        [("products[1].items[0].prices.FULL", "not an amount")],
        id="item-amount-comma",
    ),
    pytest.param(
        _set([*SHOW_PRICES, "C1", "FULL"], {"EARLY": "abc"}),
        [("products[0].event.prices.C1.FULL.EARLY", "not an amount")],
        id="price-level-amount-text",
    ),
    # references
    pytest.param(
        _set(["products", 0, "season"], "S9"),
        [("products[0].season", "unknown season S9")],
        id="unknown-product-season",
    ),
    pytest.param(
        _set(["priceLevels"], [{"code": "EARLY", "season": "S9", "name": text("Early")}]),
        [("priceLevels[0].season", "unknown season S9")],
        id="unknown-price-level-season",
    ),
    pytest.param(
        _set([*SHOW_PRICES, "C1", "KID"], "1.00"),
        [("products[0].event.prices.C1.KID", "unknown tariff KID in season S1")],
        id="unknown-tariff-reported-once",
    ),
    pytest.param(
        _set(["products", 1, "items", 0, "prices", "KID"], "1.00"),
        [("products[1].items[0].prices.KID", "unknown tariff KID in season S1")],
        id="unknown-item-tariff",
    ),
    pytest.param(
        _set(["audienceCategories", 0, "tariffs", 1, "requires"], ["KID"]),
        [("audienceCategories[0].tariffs[1].requires[0]", "unknown tariff KID")],
        id="unknown-required-tariff",
    ),
    pytest.param(
        _set([*SHOW_PRICES, "C9"], {"FULL": "1.00"}),
        [("products[0].event.prices.C9", "unknown seat category C9")],
        id="unknown-seat-category-in-prices",
    ),
    pytest.param(
        _set(["products", 0, "event", "allocations", 0, "seatCategory"], "C9"),
        [("products[0].event.allocations[0].seatCategory", "unknown seat category C9")],
        id="unknown-seat-category-in-allocation",
    ),
    pytest.param(
        _set([*SHOW_PRICES, "C1", "FULL"], {"EARLY": "45.00"}),
        [("products[0].event.prices.C1.FULL.EARLY", "unknown price level EARLY")],
        id="unknown-price-level",
    ),
    pytest.param(
        _set(["products", 0, "event", "configuration"], "NOPE"),
        [("products[0].event.configuration", "unknown configuration NOPE")],
        id="unknown-event-configuration",
    ),
    pytest.param(
        _set(["products", 0, "event", "performances", 1, "configuration"], "NOPE"),
        [("products[0].event.performances[1].configuration", "unknown configuration NOPE")],
        id="unknown-performance-configuration",
    ),
    pytest.param(
        _set(["products", 0, "salesPeriods", 1, "salesChannel"], "BOX"),
        [("products[0].salesPeriods[1].salesChannel", "unknown sales channel BOX")],
        id="unknown-sales-period-channel",
    ),
    pytest.param(
        _set(["contingents", 0, "salesChannels"], ["RES", "BOX"]),
        [("contingents[0].salesChannels[1]", "unknown sales channel BOX")],
        id="unknown-contingent-channel",
    ),
    pytest.param(
        _set(["products", 0, "event", "allocations", 0, "contingent"], "BOXQ"),
        [("products[0].event.allocations[0].contingent", "unknown contingent BOXQ")],
        id="unknown-contingent-reported-once",
    ),
    pytest.param(
        _set(
            ["products", 0, "event", "performances", 0, "allocations"],
            [{"contingent": "BOXQ", "seatCategory": "C1", "quantity": 2}],
        ),
        [
            (
                "products[0].event.performances[0].allocations[0].contingent",
                "unknown contingent BOXQ",
            )
        ],
        id="unknown-contingent-on-performance",
    ),
    pytest.param(
        _set(["products", 1, "vatCode"], "VAT20"),
        [("products[1].vatCode", "unknown VAT code VAT20")],
        id="unknown-vat-code",
    ),
    pytest.param(
        _set(["products", 0, "theme"], "OPERA"),
        [("products[0].theme", "unknown theme OPERA")],
        id="unknown-theme",
    ),
    pytest.param(
        _set(["salesChannels", 1, "pointsOfSale", 0, "paymentMethods"], ["PENDING", "CASH"]),
        [("salesChannels[1].pointsOfSale[0].paymentMethods[1]", "unknown payment method CASH")],
        id="unknown-payment-method",
    ),
    pytest.param(
        _set(
            ["venues", 0, "spaces", 0, "configurations", 0, "logicalConfigurations", 0, "zones"],
            [{"code": "PIT", "name": {"en": "Pit"}, "seatCategory": "C1", "capacity": 50}],
        ),
        [
            (
                "venues[0].spaces[0].configurations[0].logicalConfigurations[0].zones[0]"
                ".seatCategory",
                "C1 has numbered seats; a zone needs a seat category of its own",
            )
        ],
        id="zone-in-a-numbered-category",
    ),
    pytest.param(
        _set(["operators", 1, "pointOfSale"], "BOXPOS"),
        [("operators[1].pointOfSale", "unknown point of sale BOXPOS")],
        id="unknown-operator-point-of-sale",
    ),
    pytest.param(
        _set(["operators", 0, "login"], "DEMO_WEB"),
        [("operators[0].login", "must start with ACME_")],
        id="operator-of-another-institution",
    ),
    pytest.param(
        _set(["organization", "timeZone"], "Mars/Olympus"),
        [("organization.timeZone", "not an IANA time zone")],
        id="unknown-time-zone",
    ),
    pytest.param(
        _set(["organization", "mainLanguage"], "de"),
        [("organization.mainLanguage", "not one of organization.languages")],
        id="main-language-not-listed",
    ),
    # duplicates
    pytest.param(
        _set(["products", 1, "code"], "SHOW"),
        [("products", "code SHOW is used twice")],
        id="duplicate-product",
    ),
    pytest.param(
        _set(["products", 0, "event", "performances", 1, "code"], "SH01"),
        [("products[0].event.performances[1].code", "code SH01 is used twice")],
        id="duplicate-performance",
    ),
    pytest.param(
        lambda doc: doc["contingents"].append(dict(doc["contingents"][0])),
        [("contingents", "code RESQ is used twice")],
        id="duplicate-contingent",
    ),
    pytest.param(
        _set(["salesChannels", 1, "pointsOfSale", 0, "number"], 1),
        [("salesChannels.pointsOfSale.number", "code 1 is used twice")],
        id="duplicate-point-of-sale-number",
    ),
    pytest.param(
        _set(["products", 0, "salesPeriods", 1, "salesChannel"], "WEB"),
        [("products[0].salesPeriods", "code WEB is used twice")],
        id="duplicate-sales-period",
    ),
    pytest.param(
        lambda doc: doc["audienceCategories"].append(
            {
                "code": "GRP",
                "season": "S1",
                "name": text("Groups"),
                "tariffs": [{"code": "FULL", "name": text("Group"), "kind": "FULL"}],
            }
        ),
        [("audienceCategories[1].tariffs", "tariff FULL is already in season S1")],
        id="tariff-twice-in-season",
    ),
    pytest.param(
        _set(["audienceCategories", 0, "tariffs", 1, "code"], "FULL"),
        [
            ("audienceCategories[0].tariffs", "code FULL is used twice"),
            ("products[0].event.prices.C1.RED", "unknown tariff RED in season S1"),
            ("products[0].event.prices.C2.RED", "unknown tariff RED in season S1"),
        ],
        id="tariff-twice-in-category",
    ),
    # seats
    pytest.param(
        lambda doc: seat_categories(doc)[0].update(seats=["floor a"]),
        [
            (
                f"{SELECTOR}[0].seats[0]",
                'not a seat selector ("AREA/BLOCK" or "AREA/BLOCK rows 1-8")',
            )
        ],
        id="selector-lowercase",
    ),
    pytest.param(
        lambda doc: seat_categories(doc)[0].update(seats=["FLOOR/Z"]),
        [(f"{SELECTOR}[0].seats[0]", "unknown block FLOOR/Z")],
        id="selector-unknown-block",
    ),
    pytest.param(
        lambda doc: seat_categories(doc)[0].update(seats=["FLOOR/A rows 1-5"]),
        [(f"{SELECTOR}[0].seats[0]", "block FLOOR/A has no row 4")],
        id="selector-unknown-row",
    ),
    pytest.param(
        lambda doc: seat_categories(doc)[0].update(seats=["FLOOR/A rows 3-1"]),
        [(f"{SELECTOR}[0].seats[0]", "range runs backwards: '3-1'")],
        id="selector-backwards-rows",
    ),
    pytest.param(
        lambda doc: seat_categories(doc)[1].update(seats=["FLOOR/B", "FLOOR/A rows 2"]),
        [(f"{SELECTOR}[1].seats[1]", "row 2 of FLOOR/A is already in C1")],
        id="row-in-two-categories",
    ),
    pytest.param(
        lambda doc: block_a(doc).update(rows="3-1"),
        [(BLOCK, "range runs backwards: '3-1'")],
        id="block-rows-backwards",
    ),
    pytest.param(
        lambda doc: block_a(doc).update(rows="1-3,2"),
        [(BLOCK, "repeated labels in '1-3,2'")],
        id="block-rows-repeated",
    ),
    pytest.param(
        lambda doc: block_a(doc).update(seats="1-A"),
        [(BLOCK, "not a range: '1-A'")],
        id="block-seats-mixed-range",
    ),
    pytest.param(
        lambda doc: block_a(doc).update(seats="1-5,,7"),
        [(BLOCK, "empty range in '1-5,,7'")],
        id="block-seats-empty-part",
    ),
    pytest.param(
        lambda doc: block_a(doc).pop("seats"),
        [(BLOCK, "give rows and seats, or rowSeats")],
        id="block-without-seats",
    ),
    # families, items, timeslots
    pytest.param(
        lambda doc: pass_item(doc).update(kind="TIMESLOT"),
        [("products[1].items[0]", "a TIMESLOT item needs a schedule or timeslots")],
        id="timeslot-item-without-schedule",
    ),
    pytest.param(
        lambda doc: pass_item(doc).update(schedule=timeslot_schedule()),
        [("products[1].items[0]", "an OPEN item has no timeslots")],
        id="open-item-with-schedule",
    ),
    pytest.param(
        lambda doc: pass_item(doc).update(
            kind="TIMESLOT", schedule=timeslot_schedule(opens="25:00")
        ),
        [("products[1].items[0].schedule.opens", "not a time of day (HH:MM)")],
        id="schedule-opens-25h",
    ),
    pytest.param(
        lambda doc: pass_item(doc).update(
            kind="TIMESLOT", schedule=timeslot_schedule(opens="10:00", closes="10:20")
        ),
        [("products[1].items[0].schedule", "describes no timeslot")],
        id="schedule-without-slot",
    ),
    pytest.param(
        lambda doc: pass_item(doc).update(
            kind="TIMESLOT", schedule=timeslot_schedule(firstDay="2027-01-10", lastDay="2027-01-04")
        ),
        [("products[1].items[0].schedule.lastDay", "must not be before firstDay")],
        id="schedule-last-day-first",
    ),
    pytest.param(
        lambda doc: pass_item(doc).update(
            kind="TIMESLOT",
            timeslots=[{"start": "2027-01-04T10:00:00", "end": "2027-01-04T09:00:00", "quota": 5}],
        ),
        [("products[1].items[0].timeslots[0].end", "must be after start")],
        id="timeslot-end-before-start",
    ),
    pytest.param(
        _set(["seasons", 0, "end"], "2026-08-31T00:00:00+02:00"),
        [("seasons[0].end", "must be after start")],
        id="season-end-before-start",
    ),
    pytest.param(
        _set(["products", 0, "salesPeriods", 0, "end"], "2026-09-01T00:00:00+02:00"),
        [("products[0].salesPeriods[0].end", "must be after start")],
        id="sales-period-ends-at-start",
    ),
    pytest.param(
        _set(["products", 0, "family"], "PASS"),
        [
            ("products[0].event", "not allowed for a PASS product"),
            ("products[0].items", "required for a PASS product"),
        ],
        id="pass-with-an-event",
    ),
    pytest.param(
        lambda doc: doc["products"].append(
            {
                "code": "SUB",
                "family": "SEASONTICKET",
                "season": "S1",
                "name": text("Sub"),
                "vatCode": "VAT",
                "composed": {"performances": ["SH01", "SH09"], "prices": {"C1": {"FULL": "90.00"}}},
            }
        ),
        [("products[2].composed.performances[1]", "unknown performance SH09")],
        id="composed-unknown-performance",
    ),
    pytest.param(
        _set(
            ["products", 0, "media"],
            [
                {"url": "javascript:alert(1)", "alt": "x"},
                {"url": "//evil.example/x.png", "alt": "x"},
                {"url": "https://www.acme.example/a.png"},
                {"url": "/ok.png", "alt": {"english": "x"}},
            ],
        ),
        [
            ("products[0].media[0].url", "not an http(s) URL"),
            ("products[0].media[1].url", "not an http(s) URL"),
            ("products[0].media[2].alt", "required"),
            (
                "products[0].media[3].alt",
                "not a text (a string, or a mapping of ISO 639-1 codes to strings)",
            ),
        ],
        id="media-url-and-alt",
    ),
]


@pytest.mark.parametrize(("change", "expected"), CASES)
def test_broken_document(change: Callable[[Doc], None], expected: list[tuple[str, str]]) -> None:
    assert problems_of(broken(change)) == expected


def test_the_message_joins_path_and_problem() -> None:
    doc = broken(_set(["products", 0, "event", "performances", 1, "start"], "next tuesday"))

    with pytest.raises(SetupFileError) as caught:
        parse_document(doc)

    assert str(caught.value) == "products[0].event.performances[1].start: not an ISO date"
    assert caught.value.code == "error.setup.invalid"


@pytest.mark.parametrize("data", [None, [], [setup_document()], "institution: ACME", 42])
def test_a_document_must_be_a_mapping(data: Any) -> None:
    assert problems_of(data) == [("(document)", "not a mapping")]


def test_composed_prices_use_the_first_performances_seat_categories() -> None:
    """The import stores a season ticket's prices against its first performance's plan: a seat
    category only another performance's plan has is refused here, not a crash at import."""
    doc = setup_document(performances=2)
    plan(doc)["logicalConfigurations"].append(
        {
            "code": "HALF",
            "name": text("Half"),
            "seatCategories": [{"code": "C3", "name": text("Cat 3"), "seats": ["FLOOR/A"]}],
        }
    )
    show(doc)["event"]["performances"][1].update(
        configuration="HALF", prices={"C3": {"FULL": "10.00"}}, allocations=[]
    )
    doc["products"].append(
        {
            "code": "SUB",
            "family": "SEASONTICKET",
            "season": "S1",
            "name": text("Sub"),
            "vatCode": "VAT",
            "composed": {"performances": ["SH01", "SH02"], "prices": {"C3": {"FULL": "90.00"}}},
        }
    )

    assert problems_of(doc) == [("products[2].composed.prices.C3", "unknown seat category C3")]


# --- several problems at once -------------------------------------------------------------


def test_shape_problems_are_reported_together_in_document_order() -> None:
    doc = setup_document()
    doc["institution"]["currency"] = "euro"
    del doc["vatCodes"][0]["rate"]
    doc["seasons"][0]["bogus"] = 1
    doc["products"][0]["event"]["performances"][1]["start"] = "next tuesday"
    doc["products"][0]["event"]["prices"]["C2"]["RED"] = "-1"
    doc["products"][1]["items"][0]["prices"]["FULL"] = "abc"

    assert problems_of(doc) == [
        ("institution.currency", "does not match ^[A-Z]{3}$"),
        ("vatCodes[0].rate", "required"),
        ("seasons[0].bogus", "unknown field"),
        ("products[0].event.prices.C2.RED", "not an amount (negative amount)"),
        ("products[0].event.performances[1].start", "not an ISO date"),
        ("products[1].items[0].prices.FULL", "not an amount"),
    ]


def test_list_items_are_reported_in_index_order() -> None:
    doc = setup_document(performances=12)
    for index in (11, 2, 10):
        doc["products"][0]["event"]["performances"][index]["start"] = "later"

    assert problems_of(doc) == [
        ("products[0].event.performances[2].start", "not an ISO date"),
        ("products[0].event.performances[10].start", "not an ISO date"),
        ("products[0].event.performances[11].start", "not an ISO date"),
    ]


def test_reference_problems_are_reported_together_in_document_order() -> None:
    doc = setup_document()
    doc["products"][1]["vatCode"] = "VAT20"
    doc["products"][0]["season"] = "S9"
    doc["contingents"][0]["salesChannels"] = ["BOX"]
    doc["operators"][1]["pointOfSale"] = "BOXPOS"

    assert problems_of(doc) == [
        ("operators[1].pointOfSale", "unknown point of sale BOXPOS"),
        ("contingents[0].salesChannels[0]", "unknown sales channel BOX"),
        ("products[0].season", "unknown season S9"),
        ("products[1].vatCode", "unknown VAT code VAT20"),
    ]


# --- compact seat descriptions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "labels"),
    [
        ("1-3", ["1", "2", "3"]),
        ("A-C", ["A", "B", "C"]),
        ("1-3,7", ["1", "2", "3", "7"]),
        (" 1 - 2 , 5 ", ["1", "2", "5"]),
        ("1\u20133", ["1", "2", "3"]),  # an en dash
        ("10", ["10"]),
        ("3,2,1", ["3", "2", "1"]),
        ("9-11", ["9", "10", "11"]),
        ("A-B,D", ["A", "B", "D"]),
    ],
)
def test_expand_labels(spec: str, labels: list[str]) -> None:
    assert expand_labels(spec) == labels


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty range in ''"),
        ("1-3,", "empty range in '1-3,'"),
        ("3-1", "range runs backwards: '3-1'"),
        ("C-A", "range runs backwards: 'C-A'"),
        ("1-A", "not a range: '1-A'"),
        ("AA-AC", "not a range: 'AA-AC'"),
        ("1 2", "not a range: '1 2'"),
        ("1-3,2", "repeated labels in '1-3,2'"),
    ],
)
def test_expand_labels_refuses(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        expand_labels(spec)
    assert str(caught.value) == message


def test_block_rows_from_rows_and_seats() -> None:
    assert block_rows(BlockSpec(code="A", rows="A-C", seats="1-2")) == [
        ("A", ["1", "2"]),
        ("B", ["1", "2"]),
        ("C", ["1", "2"]),
    ]


def test_block_rows_from_row_seats() -> None:
    rows = block_rows(BlockSpec(code="BC", rowSeats={"1-3": "1-20", "4-6": "1-22"}))

    assert [row for row, _ in rows] == ["1", "2", "3", "4", "5", "6"]
    assert [len(seats) for _, seats in rows] == [20, 20, 20, 22, 22, 22]
    assert rows[5][1][-1] == "22"


def test_block_rows_keep_the_given_row_order() -> None:
    rows = block_rows(BlockSpec(code="S1", rows="3,2,1", seats="1-2"))

    assert [row for row, _ in rows] == ["3", "2", "1"]


@pytest.mark.parametrize("block", [{"rows": "1-3"}, {"seats": "1-3"}, {}])
def test_block_rows_need_rows_and_seats(block: dict[str, str]) -> None:
    with pytest.raises(ValueError) as caught:
        block_rows(BlockSpec(code="A", **block))
    assert str(caught.value) == "give rows and seats, or rowSeats"


@pytest.mark.parametrize(
    ("selector", "parsed"),
    [
        ("STALLS/C rows A-J", ("STALLS", "C", list("ABCDEFGHIJ"))),
        ("BALCONY/BL", ("BALCONY", "BL", None)),
        ("NORTH/N3 row 21", ("NORTH", "N3", ["21"])),
        ("NORTH/N3 rows 1-3,25", ("NORTH", "N3", ["1", "2", "3", "25"])),
        ("  FLOOR / A  ", ("FLOOR", "A", None)),
    ],
)
def test_parse_selector(selector: str, parsed: tuple[str, str, list[str] | None]) -> None:
    assert parse_selector(selector) == parsed


@pytest.mark.parametrize(
    "selector", ["stalls/c", "STALLS", "STALLS/C seats 1-3", "STALLS/C rows", ""]
)
def test_parse_selector_refuses(selector: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_selector(selector)
    assert str(caught.value) == 'not a seat selector ("AREA/BLOCK" or "AREA/BLOCK rows 1-8")'


def test_parse_selector_reports_a_bad_row_range() -> None:
    with pytest.raises(ValueError) as caught:
        parse_selector("STALLS/C rows J-A")
    assert str(caught.value) == "range runs backwards: 'J-A'"


# --- schedules ---------------------------------------------------------------------------


def schedule(**values: Any) -> ScheduleSpec:
    return ScheduleSpec.model_validate(
        {"opens": "10:00", "closes": "12:00", "everyMinutes": 30, "quota": 40, **values}
    )


def local(slots: list[tuple[datetime, datetime]]) -> list[tuple[str, str]]:
    return [(s.astimezone(PARIS).isoformat(), e.astimezone(PARIS).isoformat()) for s, e in slots]


def instants(slots: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    return [(s.astimezone(UTC), e.astimezone(UTC)) for s, e in slots]


def test_schedule_slots_of_one_day() -> None:
    slots = schedule_slots(schedule(firstDay="2027-01-05", lastDay="2027-01-05"), PARIS)

    assert local(slots) == [
        ("2027-01-05T10:00:00+01:00", "2027-01-05T10:30:00+01:00"),
        ("2027-01-05T10:30:00+01:00", "2027-01-05T11:00:00+01:00"),
        ("2027-01-05T11:00:00+01:00", "2027-01-05T11:30:00+01:00"),
        ("2027-01-05T11:30:00+01:00", "2027-01-05T12:00:00+01:00"),
    ]


def test_schedule_slots_keep_to_the_weekdays() -> None:
    # Monday 22 to Sunday 28 February 2027, open Mondays and Sundays only
    slots = schedule_slots(
        schedule(firstDay="2027-02-22", lastDay="2027-02-28", weekdays=[1, 7], everyMinutes=120),
        PARIS,
    )

    assert local(slots) == [
        ("2027-02-22T10:00:00+01:00", "2027-02-22T12:00:00+01:00"),
        ("2027-02-28T10:00:00+01:00", "2027-02-28T12:00:00+01:00"),
    ]


def test_schedule_slots_stop_before_closing_time() -> None:
    slots = schedule_slots(
        schedule(firstDay="2027-01-05", lastDay="2027-01-05", everyMinutes=45), PARIS
    )

    assert [s.astimezone(PARIS).time() for s, _ in slots] == [time(10, 0), time(10, 45)]
    assert slots[-1][1].astimezone(PARIS).time() == time(11, 30)


def test_schedule_slots_follow_the_local_clock_when_summer_time_begins() -> None:
    """Europe/Paris moves to +02:00 on Sunday 28 March 2027: 10:00 stays 10:00 local."""
    slots = schedule_slots(
        schedule(firstDay="2027-03-27", lastDay="2027-03-29", closes="11:00", everyMinutes=60),
        PARIS,
    )

    assert local(slots) == [
        ("2027-03-27T10:00:00+01:00", "2027-03-27T11:00:00+01:00"),
        ("2027-03-28T10:00:00+02:00", "2027-03-28T11:00:00+02:00"),
        ("2027-03-29T10:00:00+02:00", "2027-03-29T11:00:00+02:00"),
    ]
    assert instants(slots) == [
        (datetime(2027, 3, 27, 9, tzinfo=UTC), datetime(2027, 3, 27, 10, tzinfo=UTC)),
        (datetime(2027, 3, 28, 8, tzinfo=UTC), datetime(2027, 3, 28, 9, tzinfo=UTC)),
        (datetime(2027, 3, 29, 8, tzinfo=UTC), datetime(2027, 3, 29, 9, tzinfo=UTC)),
    ]


def test_schedule_slots_skip_the_hour_that_does_not_exist() -> None:
    """On 28 March 2027 the clock jumps from 02:00 to 03:00: there is no 02:00 or 02:30 slot,
    and no two slots start at the same instant."""
    slots = schedule_slots(
        schedule(firstDay="2027-03-28", lastDay="2027-03-28", opens="01:00", closes="04:00"), PARIS
    )

    assert instants(slots) == [
        (datetime(2027, 3, 28, 0, 0, tzinfo=UTC), datetime(2027, 3, 28, 0, 30, tzinfo=UTC)),
        (datetime(2027, 3, 28, 0, 30, tzinfo=UTC), datetime(2027, 3, 28, 1, 0, tzinfo=UTC)),
        (datetime(2027, 3, 28, 1, 0, tzinfo=UTC), datetime(2027, 3, 28, 1, 30, tzinfo=UTC)),
        (datetime(2027, 3, 28, 1, 30, tzinfo=UTC), datetime(2027, 3, 28, 2, 0, tzinfo=UTC)),
    ]
    assert [s.astimezone(PARIS).strftime("%H:%M") for s, _ in slots] == [
        "01:00",
        "01:30",
        "03:00",
        "03:30",
    ]


def test_schedule_slots_when_summer_time_ends() -> None:
    """Europe/Paris goes back to +01:00 on Sunday 25 October 2026."""
    slots = schedule_slots(
        schedule(firstDay="2026-10-24", lastDay="2026-10-25", closes="11:00", everyMinutes=60),
        PARIS,
    )

    assert local(slots) == [
        ("2026-10-24T10:00:00+02:00", "2026-10-24T11:00:00+02:00"),
        ("2026-10-25T10:00:00+01:00", "2026-10-25T11:00:00+01:00"),
    ]


def test_the_demo_museum_schedule() -> None:
    document = parse_document(demo_document_data())
    [museum] = [p for p in document.products if p.code == "MUSVISIT"]
    assert museum.items is not None
    spec = museum.items[0].schedule
    assert spec is not None

    slots = schedule_slots(spec, PARIS)

    open_days = [
        date(2026, 11, 1) + timedelta(days=n)
        for n in range((date(2027, 8, 31) - date(2026, 11, 1)).days + 1)
        if (date(2026, 11, 1) + timedelta(days=n)).isoweekday() != 1  # closed on Mondays
    ]
    assert len(slots) == 16 * len(open_days)
    assert local(slots[:2]) == [
        ("2026-11-01T10:00:00+01:00", "2026-11-01T10:30:00+01:00"),
        ("2026-11-01T10:30:00+01:00", "2026-11-01T11:00:00+01:00"),
    ]
    assert local(slots[-1:]) == [("2027-08-31T17:30:00+02:00", "2027-08-31T18:00:00+02:00")]
    assert len({s for s, _ in slots}) == len(slots)


# --- YAML specifics ----------------------------------------------------------------------


def yaml_schedule(opens: str, closes: str) -> Doc:
    loaded: Doc = yaml.safe_load(
        f"""
        firstDay: 2027-01-04
        lastDay: 2027-01-04
        opens: {opens}
        closes: {closes}
        everyMinutes: 30
        quota: 10
        """
    )
    return loaded


def test_unquoted_clock_times_read_by_yaml() -> None:
    loaded = yaml_schedule("10:00", "17:30")
    assert (loaded["opens"], loaded["closes"]) == (600, 1050)  # YAML 1.1 sexagesimal numbers
    assert loaded["firstDay"] == date(2027, 1, 4)

    doc = broken(lambda d: pass_item(d).update(kind="TIMESLOT", schedule=loaded))
    item = parse_document(doc).products[1].items
    assert item is not None
    spec = item[0].schedule
    assert spec is not None

    assert (spec.opens, spec.closes) == (time(10, 0), time(17, 30))
    assert spec.firstDay == date(2027, 1, 4)
    assert len(schedule_slots(spec, PARIS)) == 15


def test_quoted_clock_times() -> None:
    spec = schedule(firstDay="2027-01-04", lastDay="2027-01-04", opens="09:15", closes="10:15")

    assert (spec.opens, spec.closes) == (time(9, 15), time(10, 15))


def test_unquoted_24_00_is_not_a_clock_time() -> None:
    loaded = yaml_schedule("10:00", "24:00")
    assert loaded["closes"] == 1440

    doc = broken(lambda d: pass_item(d).update(kind="TIMESLOT", schedule=loaded))

    assert problems_of(doc) == [
        ("products[1].items[0].schedule.closes", "not a time of day (HH:MM)")
    ]


def test_unquoted_yaml_timestamps() -> None:
    loaded = yaml.safe_load("start: 2027-01-02T20:00:00+01:00\nend: 2027-01-02 20:00:00\n")
    doc = setup_document()
    doc["products"][0]["event"]["performances"][1]["start"] = loaded["start"]
    doc["products"][0]["event"]["performances"][0]["start"] = loaded["end"]

    event = parse_document(doc).products[0].event
    assert event is not None

    assert event.performances[1].start == datetime(2027, 1, 2, 19, 0, tzinfo=UTC)
    assert event.performances[0].start == datetime(
        2027, 1, 2, 20, 0
    )  # naive: the organization's time


def test_a_whole_document_through_yaml_text() -> None:
    doc = setup_document()
    doc["products"][1]["items"][0] |= {"kind": "TIMESLOT", "schedule": timeslot_schedule()}
    text_form = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)

    parsed = parse_document(yaml.safe_load(text_form))

    assert parsed == parse_document(doc)


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [
        ("2h", 7200),
        ("2h45", 9900),
        ("2H30", 9000),
        ("90min", 5400),
        ("45m", 2700),
        ("PT2H30M", 9000),
        ("PT1H", 3600),
        ("30s", 30),
        (5400, 5400),
    ],
)
def test_durations(duration: Any, seconds: int) -> None:
    event = (
        parse_document(broken(_set(["products", 0, "event", "duration"], duration)))
        .products[0]
        .event
    )
    assert event is not None
    assert event.duration == seconds


@pytest.mark.parametrize("duration", ["0h", 0, -60, "2 hours", "", True, "h"])
def test_bad_durations(duration: Any) -> None:
    assert problems_of(broken(_set(["products", 0, "event", "duration"], duration))) == [
        ("products[0].event.duration", "not a duration (seconds, '2h30', '90min' or 'PT2H30M')")
    ]


@pytest.mark.parametrize(
    ("amount", "thousandths"), [("25.50", 25500), ("0.125", 125), (12, 12000), ("0", 0)]
)
def test_amounts(amount: Any, thousandths: int) -> None:
    event = parse_document(broken(_set([*SHOW_PRICES, "C1", "FULL"], amount))).products[0].event
    assert event is not None
    assert event.prices is not None
    assert event.prices["C1"]["FULL"] == thousandths
