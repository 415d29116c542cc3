"""What partners read of the demo: catalogService and setupService checked against demo.yaml.

Expectations come from the demo file itself (loaded with yaml), so the file and the catalog
cannot drift apart unnoticed.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog import db
from billetterie.shared.db import read
from tests.conftest import Api, demo_document_data

PARIS = ZoneInfo("Europe/Paris")
DEMO: dict[str, Any] = demo_document_data()
PRODUCTS: dict[str, dict[str, Any]] = {p["code"]: p for p in DEMO["products"]}
CHANNEL_OF = {"b2c": "WEB", "reseller": "RESELL1", "box": "BOX"}
POS_OF = {"b2c": "WEBSHOP", "reseller": "RES1POS", "box": "BOXPOS"}
# the demo's event durations, in seconds
DURATIONS = {"2h45": 2 * 3600 + 45 * 60, "1h55": 3600 + 55 * 60, "2h10": 2 * 3600 + 10 * 60}


def tr(text: dict[str, str] | None) -> dict[str, Any] | None:
    """A file text as the wire's translation object."""
    if text is None:
        return None
    return {"translations": [{"locale": k, "value": v} for k, v in sorted(text.items())]}


def thousandths(amount: str) -> int:
    return int(Decimal(amount) * 1000)


def instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def sold_on(
    channel: str, *, states: frozenset[str] = frozenset({"RUNNING", "SUSPENDED"})
) -> list[str]:
    """The file's products a channel's catalog shows, in file order."""
    return [
        p["code"]
        for p in DEMO["products"]
        if p.get("state", "RUNNING") in states
        and any(s["salesChannel"] == channel for s in p["salesPeriods"])
    ]


def pos_spec(who: str) -> dict[str, Any]:
    [pos] = [
        p for c in DEMO["salesChannels"] for p in c["pointsOfSale"] if p["code"] == POS_OF[who]
    ]
    return pos


async def detailed(api: Api, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await api.rpc("catalogService", "getCatalogDetailed", body or {}, token=token)
    assert response.status_code == 200
    payload: dict[str, Any] = response.json()
    assert payload["statusCode"] == "success", payload
    return payload


def products_of(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["code"]: p for s in payload["catalogData"]["seasons"] for p in s["products"]}


def codes_of(payload: dict[str, Any]) -> list[str]:
    return [p["code"] for s in payload["catalogData"]["seasons"] for p in s["products"]]


@pytest.fixture
async def catalog(demo_api: Api, tokens: dict[str, str]) -> dict[str, Any]:
    return await detailed(demo_api, tokens["b2c"])


async def demo_ids(engine: AsyncEngine, table: sa.Table) -> dict[str, int]:
    """Ids by code in the demo institution (its database also holds another one)."""
    async with read(engine) as conn:
        result = await conn.execute(
            sa.select(table.c.code, table.c.id)
            .join(db.institution, db.institution.c.id == table.c.institution_id)
            .where(db.institution.c.code == "DEMO")
        )
        return {code: id_ for code, id_ in result.all()}


# --- which products each channel sees -----------------------------------------------------


@pytest.mark.parametrize("who", ["b2c", "reseller", "box"])
async def test_each_channel_sees_its_running_products(
    demo_api: Api, tokens: dict[str, str], who: str
) -> None:
    payload = await detailed(demo_api, tokens[who])

    assert codes_of(payload) == sold_on(CHANNEL_OF[who])


def test_the_expected_products_per_channel() -> None:
    """The demo file says what the tests above derive from it."""
    assert sold_on("WEB") == [
        "HAMLET",
        "FCDEMO1",
        "MUSVISIT",
        "OPENPASS",
        "THSUB5",
        "FRIENDS",
        "PARKING",
    ]
    assert sold_on("RESELL1") == ["HAMLET", "FCDEMO1", "MUSVISIT"]


async def test_the_extended_scope_adds_the_closed_product(
    demo_api: Api, tokens: dict[str, str]
) -> None:
    extended = await detailed(demo_api, tokens["b2c"], {"scope": "EXTENDED"})

    assert codes_of(extended) == [*sold_on("WEB"), "TARTUFFE"]
    tartuffe = products_of(extended)["TARTUFFE"]
    assert tartuffe["state"] == "CLOSED"
    assert [
        (p["code"], p["state"], instant(p["start"])) for p in tartuffe["event"]["performances"]
    ] == [("TAR01", "CLOSED", instant("2026-10-17T20:00:00+02:00"))]
    reseller = await detailed(demo_api, tokens["reseller"], {"scope": "EXTENDED"})
    assert codes_of(reseller) == ["HAMLET", "FCDEMO1", "MUSVISIT"]


async def test_the_requested_id_is_echoed(demo_api: Api, tokens: dict[str, str]) -> None:
    payload = await detailed(demo_api, tokens["b2c"], {"requestId": "catalog-1"})

    assert (payload["statusCode"], payload["statusDetail"], payload["requestId"]) == (
        "success",
        "OK",
        "catalog-1",
    )


# --- seasons, tariffs, price levels -------------------------------------------------------


async def test_the_season(catalog: dict[str, Any]) -> None:
    [season] = catalog["catalogData"]["seasons"]
    [spec] = DEMO["seasons"]

    assert (season["code"], season["state"], season["externalName"]) == (
        spec["code"],
        spec["state"],
        tr(spec["name"]),
    )
    assert (instant(season["start"]), instant(season["end"])) == (
        instant(spec["start"]),
        instant(spec["end"]),
    )


async def test_audience_categories_and_tariffs(catalog: dict[str, Any]) -> None:
    [season] = catalog["catalogData"]["seasons"]

    assert [
        (
            c["code"],
            c["mainCategory"],
            c["secondaryCategory"],
            c["externalName"],
            [
                (
                    t["code"],
                    t["audienceCategoryKind"],
                    t["externalName"],
                    t["requiredAudienceSubCategoryIds"],
                    t["crossSeatCategory"],
                )
                for t in c["audienceSubCategories"]
            ],
        )
        for c in season["audienceCategories"]
    ] == [
        (
            c["code"],
            c["mainCategory"],
            c["secondaryCategory"],
            tr(c["name"]),
            [(t["code"], t["kind"], tr(t["name"]), [], False) for t in c["tariffs"]],
        )
        for c in DEMO["audienceCategories"]
    ]


async def test_price_levels(catalog: dict[str, Any]) -> None:
    [season] = catalog["catalogData"]["seasons"]

    assert [(lv["code"], lv["externalName"], lv["rank"]) for lv in season["priceLevels"]] == [
        (lv["code"], tr(lv["name"]), rank) for rank, lv in enumerate(DEMO["priceLevels"], start=1)
    ]


# --- products -------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sold_on("WEB"))
async def test_product_fields(catalog: dict[str, Any], code: str) -> None:
    product = products_of(catalog)[code]
    spec = PRODUCTS[code]

    assert {
        "productFamilyType": product["productFamilyType"],
        "productFamilySubType": product["productFamilySubType"],
        "state": product["state"],
        "alertRatio": product["alertRatio"],
        "externalName": product["externalName"],
        "externalDescription": product["externalDescription"],
        "contactRequired": product["contactRequired"],
        "externalUrl": product["externalUrl"],
    } == {
        "productFamilyType": spec["family"],
        "productFamilySubType": spec.get("subType"),
        "state": spec["state"],
        "alertRatio": spec.get("alertRatio", 10),
        "externalName": tr(spec["name"]),
        "externalDescription": tr(spec["description"]),
        "contactRequired": spec.get("contactRequired", False),
        "externalUrl": spec["externalUrl"],
    }
    [web] = [s for s in spec["salesPeriods"] if s["salesChannel"] == "WEB"]
    [period] = product["salesPeriods"]
    assert (instant(period["start"]), instant(period["end"])) == (
        instant(web["start"]),
        instant(web["end"]),
    )


async def test_names_in_three_languages(catalog: dict[str, Any]) -> None:
    assert products_of(catalog)["FCDEMO1"]["externalName"] == {
        "translations": [
            {"locale": "de", "value": "FC Demo gegen Olympique Exemple"},
            {"locale": "en", "value": "FC Demo vs Olympique Exemple"},
            {"locale": "fr", "value": "FC Demo \u2013 Olympique Exemple"},
        ]
    }


async def test_sales_periods_name_the_operators_channel(
    demo_api: Api, tokens: dict[str, str], catalog: dict[str, Any]
) -> None:
    channel_id = (
        await demo_api.rpc("catalogService", "getPOSConfig", {}, token=tokens["b2c"])
    ).json()["posConfigData"]["salesChannelId"]

    assert {p["salesPeriods"][0]["salesChannelId"] for p in products_of(catalog).values()} == {
        channel_id
    }
    reseller = products_of(await detailed(demo_api, tokens["reseller"]))["HAMLET"]
    [period] = reseller["salesPeriods"]
    assert period["salesChannelId"] != channel_id
    assert instant(period["end"]) == instant("2027-02-05T18:00:00+01:00")


async def test_themes(catalog: dict[str, Any]) -> None:
    names = {t["code"]: t["name"] for t in DEMO["themes"]} | {
        s["code"]: s["name"] for t in DEMO["themes"] for s in t["subThemes"]
    }

    for code, product in products_of(catalog).items():
        spec = PRODUCTS[code]
        rendered = [
            None if product[key] is None else (product[key]["code"], product[key]["externalName"])
            for key in ("theme", "subTheme")
        ]
        expected = [
            None if spec.get(key) is None else (spec[key], tr(names[spec[key]]))
            for key in ("theme", "subTheme")
        ]
        assert rendered == expected, code
    assert products_of(catalog)["FRIENDS"]["theme"] is None
    assert (
        products_of(catalog)["MUSVISIT"]["theme"]["id"],
        products_of(catalog)["MUSVISIT"]["subTheme"]["id"],
    ) == (
        products_of(catalog)["OPENPASS"]["theme"]["id"],
        products_of(catalog)["OPENPASS"]["subTheme"]["id"],
    )


async def test_vat_codes_match_list_vat_codes(
    demo_api: Api, tokens: dict[str, str], catalog: dict[str, Any]
) -> None:
    response = await demo_api.rpc("setupService", "listVatCodes", {}, token=tokens["b2c"])
    vat_codes = response.json()["vatCodes"]

    assert [(v["code"], v["currentRate"], v["country"], v["externalName"]) for v in vat_codes] == [
        (v["code"], v["rate"], v["country"], tr(v["name"])) for v in DEMO["vatCodes"]
    ]
    by_id = {v["id"]: v for v in vat_codes}
    rate_of = {v["code"]: v["rate"] for v in DEMO["vatCodes"]}
    for code, product in products_of(catalog).items():
        vat = by_id[product["vatCodeId"]]
        assert (vat["code"], vat["currentRate"]) == (
            PRODUCTS[code]["vatCode"],
            rate_of[PRODUCTS[code]["vatCode"]],
        )


# --- performances and prices -------------------------------------------------------------


@pytest.mark.parametrize("code", ["HAMLET", "FCDEMO1"])
async def test_performances(catalog: dict[str, Any], code: str) -> None:
    spec = PRODUCTS[code]
    duration = DURATIONS[spec["event"]["duration"]]
    performances = products_of(catalog)[code]["event"]["performances"]

    assert [
        (
            p["code"],
            instant(p["start"]),
            p["duration"],
            instant(p["end"]) - instant(p["start"]),
            p["state"],
            p["externalName"],
        )
        for p in performances
    ] == [
        (
            p["code"],
            instant(p["start"]),
            duration,
            timedelta(seconds=duration),
            "RUNNING",
            tr(p.get("name")),
        )
        for p in spec["event"]["performances"]
    ]
    assert products_of(catalog)[code]["event"]["id"] == products_of(catalog)[code]["id"]


async def test_performance_venue(catalog: dict[str, Any]) -> None:
    [theatre] = [v for v in DEMO["venues"] if v["code"] == "THEATRE"]
    venues = [p["venue"] for p in products_of(catalog)["HAMLET"]["event"]["performances"]]

    assert len({str(v) for v in venues}) == 1
    venue = venues[0]
    assert (
        venue["siteCode"],
        venue["siteName"],
        venue["address"],
        venue["spaceCode"],
        venue["spaceName"],
    ) == (
        "THEATRE",
        tr(theatre["name"]),
        theatre["address"],
        "MAINHALL",
        tr(theatre["spaces"][0]["name"]),
    )


def resolve(
    season: dict[str, Any], seat_categories: list[dict[str, Any]], prices: list[dict[str, Any]]
) -> dict[tuple[str | None, str, str | None], int]:
    """Prices by (seat category code, tariff code, price level code), through the response's ids."""
    tariffs = {
        t["id"]: t["code"] for c in season["audienceCategories"] for t in c["audienceSubCategories"]
    }
    levels = {lv["id"]: lv["code"] for lv in season["priceLevels"]}
    categories = {c["id"]: c["code"] for c in seat_categories}
    resolved = {}
    for price in prices:
        key = (
            categories[price["seatCatId"]] if "seatCatId" in price else None,
            tariffs[price["audSubCatId"]],
            levels[price["priceLevelId"]] if "priceLevelId" in price else None,
        )
        assert key not in resolved, key
        resolved[key] = price["amount"]
    return resolved


def file_grid(
    grid: dict[str, Any], with_categories: bool = True
) -> dict[tuple[str | None, str, str | None], int]:
    rows = grid.items() if with_categories else [(None, grid)]
    expected = {}
    for category, tariffs in rows:
        for tariff, amount in tariffs.items():
            if isinstance(amount, dict):
                expected |= {
                    (category, tariff, level): thousandths(a) for level, a in amount.items()
                }
            else:
                expected[(category, tariff, None)] = thousandths(amount)
    return expected


@pytest.mark.parametrize("code", ["HAMLET", "FCDEMO1"])
async def test_performance_prices(catalog: dict[str, Any], code: str) -> None:
    [season] = catalog["catalogData"]["seasons"]
    expected = file_grid(PRODUCTS[code]["event"]["prices"])

    for performance in products_of(catalog)[code]["event"]["performances"]:
        assert resolve(season, performance["seatCategories"], performance["prices"]) == expected, (
            performance["code"]
        )


async def test_price_examples(catalog: dict[str, Any]) -> None:
    [season] = catalog["catalogData"]["seasons"]
    [match] = products_of(catalog)["FCDEMO1"]["event"]["performances"]
    prices = resolve(season, match["seatCategories"], match["prices"])

    assert prices[("CAT1", "FULL", "STANDARD")] == 65000
    assert prices[("CAT1", "FULL", "EARLY")] == 55000
    assert prices[("CAT1", "REDUCED", None)] == 50000
    assert prices[("CAT4", "CHILD", None)] == 0
    assert len(prices) == 3 * 3 + 3


async def test_seat_categories_of_a_performance(catalog: dict[str, Any]) -> None:
    [theatre_plan] = [
        lc
        for v in DEMO["venues"]
        for s in v["spaces"]
        for pc in s["configurations"]
        for lc in pc["logicalConfigurations"]
        if lc["code"] == "THFULL"
    ]
    performance = products_of(catalog)["HAMLET"]["event"]["performances"][0]

    assert [(c["code"], c["externalName"], c["rank"]) for c in performance["seatCategories"]] == [
        (c["code"], tr(c["name"]), rank)
        for rank, c in enumerate(theatre_plan["seatCategories"], start=1)
    ]


async def test_contingents_are_shown_to_their_channel_only(
    demo_api: Api, tokens: dict[str, str], demo_engine: AsyncEngine
) -> None:
    contingents = await demo_ids(demo_engine, db.contingent)

    for who, expected in (
        ("b2c", []),
        ("reseller", [contingents["RESELL1Q"]]),
        ("box", [contingents["BOXQ"]]),
    ):
        products = products_of(await detailed(demo_api, tokens[who]))
        for code in ("HAMLET", "FCDEMO1"):
            performances = products[code]["event"]["performances"]
            assert [p["contingentIds"] for p in performances] == [expected] * len(performances), (
                who,
                code,
            )


async def test_the_season_ticket(catalog: dict[str, Any]) -> None:
    [season] = catalog["catalogData"]["seasons"]
    products = products_of(catalog)
    composed = products["THSUB5"]["composedProduct"]
    hamlet = {p["code"]: p for p in products["HAMLET"]["event"]["performances"]}
    members = PRODUCTS["THSUB5"]["composed"]["performances"]

    assert members == ["HAM01", "HAM03", "HAM05", "HAM07", "HAM09"]
    assert [(p["code"], p["productId"], p["start"]) for p in composed["performances"]] == [
        (code, products["HAMLET"]["id"], hamlet[code]["start"]) for code in members
    ]
    assert composed["performanceIds"] == [hamlet[code]["id"] for code in members]
    assert resolve(season, hamlet["HAM01"]["seatCategories"], composed["prices"]) == file_grid(
        PRODUCTS["THSUB5"]["composed"]["prices"]
    )
    assert "event" not in products["THSUB5"]


# --- items and timeslots -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "key"),
    [
        ("MUSVISIT", "pass"),
        ("OPENPASS", "pass"),
        ("FRIENDS", "membership"),
        ("PARKING", "simpleProduct"),
    ],
)
async def test_items(catalog: dict[str, Any], code: str, key: str) -> None:
    [season] = catalog["catalogData"]["seasons"]
    items = products_of(catalog)[code][key]["items"]

    assert [
        (
            i["code"],
            i["externalName"],
            i["itemType"],
            i["capacity"],
            i["validityDays"],
            resolve(season, [], i["itemPrices"]),
        )
        for i in items
    ] == [
        (
            i["code"],
            tr(i["name"]),
            i["kind"],
            i.get("capacity"),
            i.get("validityDays"),
            file_grid(i["prices"], False),
        )
        for i in PRODUCTS[code]["items"]
    ]
    assert all(("timeslots" in i) == (i["itemType"] == "TIMESLOT") for i in items)


async def test_museum_timeslots(catalog: dict[str, Any]) -> None:
    schedule = PRODUCTS["MUSVISIT"]["items"][0]["schedule"]
    [item] = products_of(catalog)["MUSVISIT"]["pass"]["items"]
    slots = item["timeslots"]

    first_day, last_day = (
        date.fromisoformat(schedule["firstDay"]),
        date.fromisoformat(schedule["lastDay"]),
    )
    days = [first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1)]
    open_days = [d for d in days if d.isoweekday() in schedule["weekdays"]]
    opens, closes = (datetime.strptime(schedule[k], "%H:%M") for k in ("opens", "closes"))
    per_day = (closes - opens) // timedelta(minutes=schedule["everyMinutes"])
    assert (len(open_days), per_day) == (260, 16)
    assert len(slots) == per_day * len(open_days)

    local = [
        (instant(s["start"]).astimezone(PARIS), instant(s["end"]).astimezone(PARIS)) for s in slots
    ]
    assert (local[0][0].date(), local[0][0].strftime("%H:%M"), local[0][1].strftime("%H:%M")) == (
        first_day,
        "10:00",
        "10:30",
    )
    assert (
        local[-1][0].date(),
        local[-1][0].strftime("%H:%M"),
        local[-1][1].strftime("%H:%M"),
    ) == (last_day, "17:30", "18:00")
    assert {s["quota"] for s in slots} == {schedule["quota"]}
    assert {start.strftime("%H:%M") for start, _ in local} == {
        f"{h:02d}:{m:02d}" for h in range(10, 18) for m in (0, 30)
    }
    assert {start.date() for start, _ in local} == set(open_days)
    assert len({s["id"] for s in slots}) == len(slots)
    assert [s["start"] for s in slots] == sorted(s["start"] for s in slots)


async def test_timeslots_across_the_summer_time_change(catalog: dict[str, Any]) -> None:
    [item] = products_of(catalog)["MUSVISIT"]["pass"]["items"]
    firsts = {
        instant(s["start"]).astimezone(PARIS).date(): s["start"]
        for s in reversed(item["timeslots"])
    }

    assert firsts[date(2027, 3, 27)] == "2027-03-27T09:00:00+00:00"  # 10:00 +01:00
    assert firsts[date(2027, 3, 28)] == "2027-03-28T08:00:00+00:00"  # 10:00 +02:00
    assert date(2027, 3, 29) not in firsts  # a Monday


# --- getCatalog and filters ----------------------------------------------------------------


async def test_get_catalog_summary(
    demo_api: Api, tokens: dict[str, str], catalog: dict[str, Any]
) -> None:
    response = await demo_api.rpc(
        "catalogService", "getCatalog", {"requestId": "s"}, token=tokens["b2c"]
    )
    payload = response.json()
    [season] = payload["catalogData"]["seasons"]
    [full_season] = catalog["catalogData"]["seasons"]
    full = products_of(catalog)

    assert (response.status_code, payload["statusCode"], payload["requestId"]) == (
        200,
        "success",
        "s",
    )
    assert {k: v for k, v in season.items() if k != "products"} == {
        k: full_season[k] for k in ("id", "code", "state", "start", "end", "externalName")
    }
    assert [p["code"] for p in season["products"]] == sold_on("WEB")
    summaries = {p["code"]: p for p in season["products"]}
    assert summaries["HAMLET"] == {
        "id": full["HAMLET"]["id"],
        "code": "HAMLET",
        "productFamilyType": "SINGLE_ENTRY",
        "productFamilySubType": "THEATRE",
        "state": "RUNNING",
        "seasonId": full_season["id"],
        "seasonCode": "S2627",
        "externalName": tr(PRODUCTS["HAMLET"]["name"]),
        "theme": full["HAMLET"]["theme"],
        "subTheme": full["HAMLET"]["subTheme"],
        "salesPeriods": full["HAMLET"]["salesPeriods"],
        "firstPerformanceStart": "2026-12-04T19:00:00+00:00",
        "lastPerformanceStart": "2027-02-06T19:00:00+00:00",
        "performanceCount": 10,
    }
    assert [
        (
            summaries[c]["performanceCount"],
            summaries[c]["firstPerformanceStart"],
            summaries[c]["lastPerformanceStart"],
        )
        for c in ("FCDEMO1", "MUSVISIT", "THSUB5")
    ] == [
        (1, "2027-02-20T19:45:00+00:00", "2027-02-20T19:45:00+00:00"),
        (0, None, None),
        (5, "2026-12-04T19:00:00+00:00", "2027-02-05T19:00:00+00:00"),
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"seasonCode": "S2627"}, sold_on("WEB")),
        ({"productCode": "MUSVISIT"}, ["MUSVISIT"]),
        ({"seasonCode": "S2627", "productCode": "THSUB5"}, ["THSUB5"]),
        ({"productCode": "TARTUFFE", "scope": "EXTENDED"}, ["TARTUFFE"]),
    ],
)
async def test_catalog_filters(
    demo_api: Api,
    tokens: dict[str, str],
    catalog: dict[str, Any],
    body: dict[str, Any],
    expected: list[str],
) -> None:
    payload = await detailed(demo_api, tokens["b2c"], body)

    assert codes_of(payload) == expected
    summary = (await demo_api.rpc("catalogService", "getCatalog", body, token=tokens["b2c"])).json()
    if "scope" in body:  # getCatalog has no scope: products on sale only
        assert summary["statusCode"] == "error.catalog.unknown_product"
    else:
        assert [products_of(payload)[c] == products_of(catalog)[c] for c in expected] == [
            True
        ] * len(expected)
        assert codes_of(summary) == expected


@pytest.mark.parametrize("method", ["getCatalogDetailed", "getCatalog"])
@pytest.mark.parametrize(
    ("who", "body", "status", "detail"),
    [
        (
            "b2c",
            {"seasonCode": "S2526"},
            "error.catalog.unknown_season",
            "no season S2526 in this catalog",
        ),
        (
            "b2c",
            {"productCode": "NOPE"},
            "error.catalog.unknown_product",
            "no product NOPE in this catalog",
        ),
        (
            "b2c",
            {"productCode": "TARTUFFE"},
            "error.catalog.unknown_product",
            "no product TARTUFFE in this catalog",
        ),
        (
            "reseller",
            {"productCode": "PARKING"},
            "error.catalog.unknown_product",
            "no product PARKING in this catalog",
        ),
        (
            "b2c",
            {"seasonCode": "S9", "productCode": "HAMLET"},
            "error.catalog.unknown_season",
            "no season S9 in this catalog",
        ),
    ],
)
async def test_unknown_codes_are_business_errors(
    demo_api: Api,
    tokens: dict[str, str],
    method: str,
    who: str,
    body: dict[str, Any],
    status: str,
    detail: str,
) -> None:
    response = await demo_api.rpc(
        "catalogService", method, body | {"requestId": "f"}, token=tokens[who]
    )

    assert response.status_code == 200
    assert response.json() == {"statusCode": status, "statusDetail": detail, "requestId": "f"}


# --- getPOSConfig --------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["b2c", "reseller", "box"])
async def test_pos_config(
    demo_api: Api, tokens: dict[str, str], demo_engine: AsyncEngine, who: str
) -> None:
    response = await demo_api.rpc("catalogService", "getPOSConfig", {}, token=tokens[who])
    config = response.json()["posConfigData"]
    spec = pos_spec(who)
    [channel] = [c for c in DEMO["salesChannels"] if c["code"] == CHANNEL_OF[who]]
    methods = {m["code"]: m for m in DEMO["paymentMethods"]}
    organization = DEMO["organization"]

    assert response.status_code == 200
    assert {k: v for k, v in config.items() if k not in {"paymentMethods", "productFamilies"}} == {
        "posId": (await demo_ids(demo_engine, db.point_of_sale))[spec["code"]],
        "posCode": spec["code"],
        "posNumber": spec["number"],
        "posType": "STANDARD",
        "posName": tr(spec["name"]),
        "salesChannelId": (await demo_ids(demo_engine, db.sales_channel))[channel["code"]],
        "salesChannelCode": channel["code"],
        "salesChannelType": channel["type"],
        "institCode": "DEMO",
        "organizationId": (await demo_ids(demo_engine, db.organization))["DEMO"],
        "organizationCode": "DEMO",
        "organizationName": organization["name"]["en"],
        "organizationTimeZone": "Europe/Paris",
        "currencyCode": "EUR",
        "currencySymbol": "€",
        "mainLanguage": "en",
        "languageList": spec.get("languages", organization["languages"]),
        "seatSelectionMode": spec["seatSelectionMode"],
        "splitSeatingAllowed": spec.get("splitSeatingAllowed", False),
        "maxSeatsPerPerformance": spec["maxSeatsPerPerformance"],
        "orderAbandonDelay": spec.get("orderAbandonDelay", 20),
        "contactLoginMode": spec["contactLoginMode"],
        "guestLoginAvailable": spec.get("guestLoginAvailable", False),
        "contactAccountCreationAllowed": spec.get("contactAccountCreationAllowed", True),
        "cookieDomain": spec.get("cookieDomain"),
        "externalUrls": spec.get("externalUrls", {}),
        "posParameters": spec.get("parameters", {}),
    }
    payment_ids = await demo_ids(demo_engine, db.payment_method)
    assert config["paymentMethods"] == [
        {
            "id": payment_ids[code],
            "code": code,
            "externalName": tr(methods[code]["name"]),
            "paymentType": methods[code]["type"],
            "forPayment": True,
            "forReimbursement": True,
            "rank": rank,
        }
        for rank, code in enumerate(spec["paymentMethods"], start=1)
    ]
    families = {
        (PRODUCTS[c]["family"], PRODUCTS[c].get("subType")): PRODUCTS[c].get(
            "contactRequired", False
        )
        for c in sold_on(CHANNEL_OF[who])
    }
    assert sorted(
        ((f["productFamilyType"], f["productFamilySubType"]), f["contactRequired"])
        for f in config["productFamilies"]
    ) == sorted(families.items(), key=lambda x: (x[0][0], x[0][1] or ""))


async def test_pos_config_of_the_web_shop(demo_api: Api, tokens: dict[str, str]) -> None:
    config = (await demo_api.rpc("catalogService", "getPOSConfig", {}, token=tokens["b2c"])).json()[
        "posConfigData"
    ]

    assert [(m["code"], m["paymentType"]) for m in config["paymentMethods"]] == [
        ("CARD", "CARD"),
        ("VOUCHER", "VOUCHER"),
        ("CREDIT", "CREDIT"),
    ]
    assert (
        config["orderAbandonDelay"],
        config["maxSeatsPerPerformance"],
        config["seatSelectionMode"],
    ) == (20, 10, "BEST_AVAILABLE_AND_SEAT_MAP")
    assert config["languageList"] == ["en", "fr", "de"]
    assert (
        config["externalUrls"]["termsOfSale"]
        == "https://www.demo-arts.example/{LANGUAGE}/terms-of-sale"
    )
    assert (config["currencyCode"], config["currencySymbol"], config["organizationTimeZone"]) == (
        "EUR",
        "€",
        "Europe/Paris",
    )


async def test_pos_config_of_the_reseller(demo_api: Api, tokens: dict[str, str]) -> None:
    config = (
        await demo_api.rpc("catalogService", "getPOSConfig", {}, token=tokens["reseller"])
    ).json()["posConfigData"]

    assert [(m["code"], m["paymentType"]) for m in config["paymentMethods"]] == [
        ("PENDING", "PENDING_ACCOUNT")
    ]
    assert (
        config["orderAbandonDelay"],
        config["maxSeatsPerPerformance"],
        config["seatSelectionMode"],
    ) == (30, 20, "BEST_AVAILABLE")
    assert (config["contactLoginMode"], config["contactAccountCreationAllowed"]) == ("NONE", False)
    assert config["externalUrls"] == {}


# --- setupService --------------------------------------------------------------------------


async def setup_call(
    api: Api, token: str, method: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await api.rpc("setupService", method, body or {}, token=token)
    assert response.status_code == 200
    payload: dict[str, Any] = response.json()
    return payload


async def test_list_seasons(demo_api: Api, tokens: dict[str, str], catalog: dict[str, Any]) -> None:
    payload = await setup_call(demo_api, tokens["b2c"], "listSeasons")
    [season] = catalog["catalogData"]["seasons"]

    assert payload == {
        "statusCode": "success",
        "statusDetail": "OK",
        "seasons": [
            {k: season[k] for k in ("id", "code", "state", "start", "end", "externalName")}
        ],
    }


async def test_list_audience_sub_categories(
    demo_api: Api, tokens: dict[str, str], catalog: dict[str, Any]
) -> None:
    [season] = catalog["catalogData"]["seasons"]
    payload = await setup_call(
        demo_api, tokens["b2c"], "listAudienceSubCategories", {"seasonId": season["id"]}
    )

    rows = {t["code"]: t for t in payload["audienceSubCategories"]}
    assert len(rows) == len(payload["audienceSubCategories"]) == 5
    expected = {}
    for category in season["audienceCategories"]:
        for tariff in category["audienceSubCategories"]:
            expected[tariff["code"]] = tariff | {
                "audienceCategoryId": category["id"],
                "audienceCategoryCode": category["code"],
                "mainCategory": category["mainCategory"],
                "secondaryCategory": category["secondaryCategory"],
                "seasonId": season["id"],
            }
    assert rows == expected


async def test_list_audience_sub_categories_by_category(
    demo_api: Api, tokens: dict[str, str], catalog: dict[str, Any]
) -> None:
    [season] = catalog["catalogData"]["seasons"]
    payload = await setup_call(
        demo_api, tokens["b2c"], "listAudienceSubCategories", {"seasonId": season["id"]}
    )

    assert [t["code"] for t in payload["audienceSubCategories"]] == [
        t["code"] for c in DEMO["audienceCategories"] for t in c["tariffs"]
    ]


async def test_list_price_levels(
    demo_api: Api, tokens: dict[str, str], catalog: dict[str, Any]
) -> None:
    [season] = catalog["catalogData"]["seasons"]
    payload = await setup_call(
        demo_api, tokens["b2c"], "listPriceLevels", {"seasonId": season["id"]}
    )

    assert payload["priceLevels"] == [
        lv | {"seasonId": season["id"]} for lv in season["priceLevels"]
    ]
    assert [lv["code"] for lv in payload["priceLevels"]] == ["STANDARD", "EARLY"]


@pytest.mark.parametrize("method", ["listAudienceSubCategories", "listPriceLevels"])
async def test_a_season_of_another_institution_is_unknown(
    demo_api: Api, tokens: dict[str, str], demo_engine: AsyncEngine, method: str
) -> None:
    async with read(demo_engine) as conn:
        other = (
            (
                await conn.execute(
                    sa.select(db.season.c.id)
                    .join(db.institution, db.institution.c.id == db.season.c.institution_id)
                    .where(db.institution.c.code != "DEMO")
                )
            )
            .scalars()
            .all()
        )
    for season_id in [*other, 999999]:
        payload = await setup_call(demo_api, tokens["b2c"], method, {"seasonId": season_id})
        assert payload == {
            "statusCode": "error.catalog.unknown_season",
            "statusDetail": f"no season {season_id}",
        }


async def test_list_vat_codes(
    demo_api: Api, tokens: dict[str, str], demo_engine: AsyncEngine
) -> None:
    payload = await setup_call(demo_api, tokens["reseller"], "listVatCodes")
    ids = await demo_ids(demo_engine, db.vat_code)

    assert payload == {
        "statusCode": "success",
        "statusDetail": "OK",
        "vatCodes": [
            {
                "id": ids[v["code"]],
                "code": v["code"],
                "currentRate": v["rate"],
                "country": v["country"],
                "externalName": tr(v["name"]),
            }
            for v in DEMO["vatCodes"]
        ],
    }


@pytest.mark.parametrize(
    ("who", "body", "expected"),
    [
        ("b2c", {}, sold_on("WEB")),
        ("b2c", {"productFamilyType": "PASS"}, ["MUSVISIT", "OPENPASS"]),
        (
            "b2c",
            {"productFamilyType": "SINGLE_ENTRY", "productFamilySubType": "MATCH"},
            ["FCDEMO1"],
        ),
        ("b2c", {"productFamilySubType": "VISIT"}, ["MUSVISIT"]),
        ("b2c", {"themeCode": "THEATRE"}, ["HAMLET", "THSUB5"]),
        ("b2c", {"themeCode": "DRAMA"}, ["HAMLET", "THSUB5"]),
        ("b2c", {"themeCode": "COMEDY"}, []),
        ("b2c", {"themeCode": "COMEDY", "states": ["CLOSED"]}, ["TARTUFFE"]),
        ("b2c", {"text": "musée"}, ["MUSVISIT", "OPENPASS"]),
        ("b2c", {"text": "MUSÉE"}, ["MUSVISIT", "OPENPASS"]),
        ("b2c", {"text": "abonnement"}, ["THSUB5"]),
        ("b2c", {"text": "ham"}, ["HAMLET"]),
        ("b2c", {"text": "opéra"}, []),
        ("b2c", {"productCodes": ["PARKING", "FRIENDS", "NOPE"]}, ["FRIENDS", "PARKING"]),
        ("b2c", {"productCodes": []}, []),
        ("b2c", {"seasonCode": "S2627", "productFamilyType": "MEMBERSHIP"}, ["FRIENDS"]),
        ("b2c", {"seasonCode": "S2526"}, []),
        ("b2c", {"states": ["CLOSED"]}, ["TARTUFFE"]),
        (
            "b2c",
            {"states": ["RUNNING", "CLOSED"], "productFamilyType": "SINGLE_ENTRY"},
            ["HAMLET", "FCDEMO1", "TARTUFFE"],
        ),
        (
            "b2c",
            {"startDate": "2027-02-06T00:00:00+01:00", "endDate": "2027-02-28T23:59:59+01:00"},
            ["HAMLET", "FCDEMO1"],
        ),
        ("b2c", {"startDate": "2027-02-07T00:00:00+01:00"}, ["FCDEMO1"]),
        # the season ticket counts through the performances it contains
        ("b2c", {"endDate": "2026-12-04T20:00:00+01:00"}, ["HAMLET", "THSUB5"]),
        ("b2c", {"endDate": "2026-12-04T19:59:59+01:00"}, []),
        ("reseller", {}, ["HAMLET", "FCDEMO1", "MUSVISIT"]),
        ("reseller", {"productFamilyType": "PASS"}, ["MUSVISIT"]),
        ("reseller", {"productCodes": ["PARKING"]}, []),
    ],
)
async def test_search_products_by_criteria(
    demo_api: Api,
    tokens: dict[str, str],
    catalog: dict[str, Any],
    who: str,
    body: dict[str, Any],
    expected: list[str],
) -> None:
    payload = await setup_call(
        demo_api, tokens[who], "searchProductsByCriteria", body | {"requestId": "q"}
    )

    assert (payload["statusCode"], payload["requestId"]) == ("success", "q")
    assert [p["code"] for p in payload["products"]] == expected


async def test_search_returns_summaries(demo_api: Api, tokens: dict[str, str]) -> None:
    found = await setup_call(
        demo_api, tokens["b2c"], "searchProductsByCriteria", {"productCodes": ["HAMLET"]}
    )
    summary = await demo_api.rpc(
        "catalogService", "getCatalog", {"productCode": "HAMLET"}, token=tokens["b2c"]
    )

    assert found["products"] == summary.json()["catalogData"]["seasons"][0]["products"]


@pytest.mark.parametrize(
    "body",
    [
        {"startDate": "tomorrow"},
        {"startDate": "2027-01-01T00:00:00"},
        {"productFamilyType": "CONCERT"},
    ],
)
async def test_search_refuses_malformed_criteria(
    demo_api: Api, tokens: dict[str, str], body: dict[str, Any]
) -> None:
    response = await demo_api.rpc(
        "setupService", "searchProductsByCriteria", body, token=tokens["b2c"]
    )

    assert response.status_code == 400
    assert response.json()["statusCode"] == "error.request.invalid"
    assert "products" not in response.json()


# --- gzip ----------------------------------------------------------------------------------


async def test_gzip(demo_api: Api, tokens: dict[str, str]) -> None:
    body = {"requestId": "zip-1"}
    plain = await demo_api.rpc(
        "catalogService",
        "getCatalogDetailed",
        body,
        token=tokens["b2c"],
        headers={"Accept-Encoding": "identity"},
    )
    zipped = await demo_api.rpc(
        "catalogService",
        "getCatalogDetailed",
        body,
        token=tokens["b2c"],
        headers={"Accept-Encoding": "gzip"},
    )

    assert (plain.status_code, zipped.status_code) == (200, 200)
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert int(zipped.headers["content-length"]) < len(zipped.content) // 4  # httpx decoded it
    assert zipped.json() == plain.json()
    assert zipped.json()["requestId"] == "zip-1"
    assert plain.content == zipped.content


async def test_gzip_without_request_id(demo_api: Api, tokens: dict[str, str]) -> None:
    zipped = await demo_api.rpc(
        "catalogService",
        "getCatalogDetailed",
        {"scope": "EXTENDED"},
        token=tokens["reseller"],
        headers={"Accept-Encoding": "gzip"},
    )
    plain = await detailed(demo_api, tokens["reseller"], {"scope": "EXTENDED"})

    assert zipped.headers["content-encoding"] == "gzip"
    assert "requestId" not in zipped.json()
    assert zipped.json() == plain
