"""availabilityService and the availability GET mirrors: counts, levels, filters, the change
feed, conditional GETs, on the demo (read-only) and on a scratch institution (with holds)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.inventory import db as inventory_db
from billetterie.inventory.services import PlaceRequest, confirm_hold, hold_places, release_hold
from billetterie.shared.db import read
from tests.conftest import NOW, Api, set_secrets
from tests.factories import import_document, setup_document

AVAILABILITY = "availabilityService"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def catalog_ids(api: Api, token: str) -> dict[str, Any]:
    """Codes -> ids of products, performances and seat categories in the caller's catalog."""
    response = await api.rpc(
        "catalogService", "getCatalogDetailed", {"scope": "EXTENDED"}, token=token
    )
    ids: dict[str, Any] = {"products": {}, "performances": {}, "categories": {}}
    for season in response.json()["catalogData"]["seasons"]:
        for product in season["products"]:
            ids["products"][product["code"]] = product["id"]
            for performance in (product.get("event") or {}).get("performances", []):
                ids["performances"][performance["code"]] = performance["id"]
                for category in performance["seatCategories"]:
                    ids["categories"][(performance["code"], category["code"])] = category["id"]
    return ids


async def performance(api: Api, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.rpc(AVAILABILITY, "getPerformanceAvailability", body, token=token)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# --- demo (read only) ------------------------------------------------------------------------


async def test_performance_counts_by_channel(demo_api: Api, tokens: dict[str, str]) -> None:
    ids = await catalog_ids(demo_api, tokens["b2c"])
    ham01 = ids["performances"]["HAM01"]
    b2c = await performance(demo_api, tokens["b2c"], {"performanceIds": [ham01]})
    [row] = b2c["performanceAvailabilities"]
    # 806 seats; the reseller's contingent holds 40 of them and the box office's 10, which the
    # web channel does not see
    assert (row["capacity"], row["free"], row["held"], row["sold"]) == (756, 756, 0, 0)
    assert (row["availabilityLevel"], row["availabilityLevelName"]) == (1, "GOOD")
    assert row["details"] == [
        {k: row[k] for k in row if k not in {"performanceId", "productId", "details"}}
    ]
    reseller = await performance(
        demo_api, tokens["reseller"], {"performanceIds": [ham01], "contingentIds": [-1]}
    )
    [row] = reseller["performanceAvailabilities"]
    assert row["capacity"] == 796
    by_contingent = {d["contingentId"]: d["capacity"] for d in row["details"]}
    assert by_contingent[0] == 756
    assert sorted(by_contingent.values()) == [40, 756]


async def test_seat_category_filter_semantics(demo_api: Api, tokens: dict[str, str]) -> None:
    ids = await catalog_ids(demo_api, tokens["b2c"])
    ham01 = ids["performances"]["HAM01"]
    each = await performance(
        demo_api, tokens["b2c"], {"performanceIds": [ham01], "seatCategoryIds": [-1]}
    )
    [row] = each["performanceAvailabilities"]
    capacities = {d["seatCategoryId"]: d["capacity"] for d in row["details"]}
    cat1, cat2, cat3 = (ids["categories"][("HAM01", c)] for c in ("CAT1", "CAT2", "CAT3"))
    # less the reseller's 40 in CAT2 and the box office's 10 in CAT1
    assert capacities == {cat1: 190, cat2: 300, cat3: 266}
    assert sum(capacities.values()) == row["capacity"] == 756
    listed = await performance(
        demo_api, tokens["b2c"], {"performanceIds": [ham01], "seatCategoryIds": [cat3, cat1]}
    )
    [row] = listed["performanceAvailabilities"]
    assert [(d["seatCategoryId"], d["capacity"]) for d in row["details"]] == [
        (cat3, 266),
        (cat1, 190),
    ]
    assert row["capacity"] == 456


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"performanceIds": [99999999]}, "error.availability.unknown_performance"),
        (
            {"performanceIds": ["HAM01"], "seatCategoryIds": [99999999]},
            "error.availability.invalid_filter",
        ),
        (
            {"performanceIds": ["HAM01"], "contingentIds": ["BOXQ"]},
            "error.availability.invalid_filter",
        ),
        (
            {"performanceIds": ["HAM01"], "pointOfSalesId": 99999},
            "error.availability.invalid_filter",
        ),
    ],
)
async def test_refused_filters(
    demo_api: Api, tokens: dict[str, str], body: dict[str, Any], code: str
) -> None:
    ids = await catalog_ids(demo_api, tokens["b2c"])
    contingents = await demo_api.rpc(
        AVAILABILITY,
        "getPerformanceAvailability",
        {"performanceIds": [ids["performances"]["HAM01"]], "contingentIds": [-1]},
        token=tokens["box"],
    )
    box_contingent = max(
        d["contingentId"] for d in contingents.json()["performanceAvailabilities"][0]["details"]
    )
    resolved = {
        key: [
            ids["performances"]["HAM01"] if v == "HAM01" else box_contingent if v == "BOXQ" else v
            for v in value
        ]
        if isinstance(value, list)
        else value
        for key, value in body.items()
    }
    if code == "error.availability.invalid_filter" and resolved == {
        "performanceIds": [ids["performances"]["HAM01"]]
    }:
        pytest.skip("no refusal without a filter")
    response = await demo_api.rpc(
        AVAILABILITY, "getPerformanceAvailability", resolved, token=tokens["b2c"]
    )
    assert response.status_code == 200
    assert response.json()["statusCode"] == code


async def test_product_availability_timeslots_and_unlimited(
    demo_api: Api, tokens: dict[str, str]
) -> None:
    ids = await catalog_ids(demo_api, tokens["b2c"])
    response = await demo_api.rpc(
        AVAILABILITY,
        "getProductAvailability",
        {
            "productIds": [
                ids["products"]["MUSVISIT"],
                ids["products"]["OPENPASS"],
                ids["products"]["PARKING"],
            ],
            "startDate": "2026-12-01T00:00:00+01:00",
            "endDate": "2026-12-02T00:00:00+01:00",
        },
        token=tokens["b2c"],
    )
    museum, open_pass, parking = response.json()["productAvailabilities"]
    [item] = museum["items"]
    assert len(item["timeslots"]) == 16  # a Tuesday, 10:00 to 18:00 every 30 minutes
    assert item["timeslots"][0]["start"] == "2026-12-01T09:00:00+00:00"
    assert {t["capacity"] for t in item["timeslots"]} == {40}
    assert open_pass["capacity"] is None and open_pass["availabilityLevelName"] == "GOOD"
    assert parking["capacity"] == 300


async def test_products_of_other_channels_are_unknown(
    demo_api: Api, tokens: dict[str, str]
) -> None:
    ids = await catalog_ids(demo_api, tokens["b2c"])
    response = await demo_api.rpc(
        AVAILABILITY,
        "getProductAvailability",
        {"productIds": [ids["products"]["PARKING"]]},
        token=tokens["reseller"],
    )
    assert response.json()["statusCode"] == "error.availability.unknown_product"
    response = await demo_api.rpc(
        AVAILABILITY,
        "getProductAvailability",
        {"productIds": [ids["products"]["PARKING"]]},
        token=tokens["other"],
    )
    assert response.json()["statusCode"] == "error.availability.unknown_product"


async def test_seat_map(demo_api: Api, tokens: dict[str, str]) -> None:
    ids = await catalog_ids(demo_api, tokens["b2c"])
    response = await demo_api.rpc(
        AVAILABILITY,
        "getSeatsAvailability",
        {"performanceId": ids["performances"]["HAM01"]},
        token=tokens["b2c"],
    )
    seats = response.json()["seats"]
    assert len(seats) == 806
    states: dict[str, int] = {}
    for seat in seats:
        states[seat["state"]] = states.get(seat["state"], 0) + 1
    assert states == {"FREE": 756, "NOT_FOR_SALE": 50}
    assert {"x", "y", "row", "number", "seatCategoryId", "blockId"} <= set(seats[0])


# --- scratch: availability follows holds and sales --------------------------------------------


async def acme(engine: AsyncEngine, api: Api, **overrides: Any) -> dict[str, Any]:
    document = setup_document("ACME")
    document["products"][0]["alertRatio"] = 20
    await import_document(engine, document)
    await set_secrets(
        engine, "ACME", [("ACME_WEB", "ACMEWEB", "web"), ("ACME_RES", "ACMERES", "res")]
    )
    token = await api.token("ACME_WEB", "web")
    ids = await catalog_ids(api, token)
    async with read(engine) as conn:
        institution_id = (await conn.execute(sa.text("SELECT id FROM institution"))).scalar_one()
        channel_id = (
            await conn.execute(sa.text("SELECT id FROM sales_channel WHERE code = 'WEB'"))
        ).scalar_one()
    return {"token": token, "ids": ids, "institution": institution_id, "channel": channel_id}


async def settled(api: Api, token: str, body: dict[str, Any], check: Any) -> dict[str, Any]:
    """The answer once the board caught up (it follows the log within a poll interval)."""
    for _ in range(100):
        result = await performance(api, token, body)
        if check(result):
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"the board never showed the change: {result}")


async def test_levels_follow_holds_and_sales(scratch_engine: AsyncEngine, scratch_api: Api) -> None:
    data = await acme(scratch_engine, scratch_api)
    sh01 = data["ids"]["performances"]["SH01"]
    c1 = data["ids"]["categories"][("SH01", "C1")]
    body = {"performanceIds": [sh01], "seatCategoryIds": [c1]}
    start = await performance(scratch_api, data["token"], body)
    assert start["performanceAvailabilities"][0]["details"][0]["free"] == 30
    holds = []
    for quantity in (10, 10, 4):  # 30 seats in C1, alert ratio 20 %: orange under 6 free
        holds.append(
            await hold_places(
                scratch_engine,
                institution_id=data["institution"],
                sales_channel_id=data["channel"],
                contingent_ids=[],
                cart=f"cart-{quantity}-{len(holds)}",
                requests=[PlaceRequest(quantity, performance_id=sh01, seat_category_id=c1)],
                expires_at=NOW + timedelta(minutes=20),
                now=NOW,
            )
        )
    six = await settled(
        scratch_api,
        data["token"],
        body,
        lambda r: r["performanceAvailabilities"][0]["details"][0]["free"] == 6,
    )
    assert six["performanceAvailabilities"][0]["details"][0]["availabilityLevelName"] == "GOOD"
    await confirm_hold(
        scratch_engine, institution_id=data["institution"], hold_id=holds[0].id, now=NOW
    )
    holds.append(
        await hold_places(
            scratch_engine,
            institution_id=data["institution"],
            sales_channel_id=data["channel"],
            contingent_ids=[],
            cart="last",
            requests=[PlaceRequest(1, performance_id=sh01, seat_category_id=c1)],
            expires_at=NOW + timedelta(minutes=20),
            now=NOW,
        )
    )
    five = await settled(
        scratch_api,
        data["token"],
        body,
        lambda r: r["performanceAvailabilities"][0]["details"][0]["free"] == 5,
    )
    detail = five["performanceAvailabilities"][0]["details"][0]
    assert (detail["sold"], detail["held"], detail["availabilityLevelName"]) == (10, 15, "LIMITED")
    await hold_places(
        scratch_engine,
        institution_id=data["institution"],
        sales_channel_id=data["channel"],
        contingent_ids=[],
        cart="rest",
        requests=[PlaceRequest(5, performance_id=sh01, seat_category_id=c1)],
        expires_at=NOW + timedelta(minutes=20),
        now=NOW,
        split_allowed=True,
    )
    none = await settled(
        scratch_api,
        data["token"],
        body,
        lambda r: r["performanceAvailabilities"][0]["details"][0]["free"] == 0,
    )
    assert none["performanceAvailabilities"][0]["details"][0]["availabilityLevel"] == 3
    await release_hold(
        scratch_engine, institution_id=data["institution"], hold_id=holds[1].id, now=NOW
    )
    await settled(
        scratch_api,
        data["token"],
        body,
        lambda r: r["performanceAvailabilities"][0]["details"][0]["free"] == 10,
    )


async def test_change_feed_cursor_and_conditional_get(
    scratch_engine: AsyncEngine, scratch_api: Api
) -> None:
    data = await acme(scratch_engine, scratch_api)
    headers = bearer(data["token"])
    sh01 = data["ids"]["performances"]["SH01"]
    c2 = data["ids"]["categories"][("SH01", "C2")]
    empty = await scratch_api.client.get("/api/v1/availability/changes?since=0", headers=headers)
    # provisioning is the first change: every stock the web channel sees, at sequence 1
    provisioned = empty.json()
    assert provisioned["cursor"] == "s1"
    assert [(c["sequence"], c["held"], c["free"]) for c in provisioned["changes"]] == [
        (1, 0, 30),
        (1, 0, 25),
        (1, 0, 30),
        (1, 0, 25),
        (1, 0, None),
    ]
    first = await scratch_api.client.get(
        f"/api/v1/availability/performances/{sh01}", headers=headers
    )
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag == f'W/"s1-p{sh01}"'
    again = await scratch_api.client.get(
        f"/api/v1/availability/performances/{sh01}", headers={**headers, "If-None-Match": etag}
    )
    assert again.status_code == 304
    for cart in ("a", "b"):
        await hold_places(
            scratch_engine,
            institution_id=data["institution"],
            sales_channel_id=data["channel"],
            contingent_ids=[],
            cart=cart,
            requests=[PlaceRequest(2, performance_id=sh01, seat_category_id=c2)],
            expires_at=NOW + timedelta(minutes=5),
            now=NOW + timedelta(minutes=1),
        )
    feed = await scratch_api.client.get("/api/v1/availability/changes?since=s1", headers=headers)
    changes = feed.json()["changes"]
    assert feed.json()["cursor"] == "s3"
    assert [(c["sequence"], c["held"], c["free"]) for c in changes] == [(2, 2, 23), (3, 4, 21)]
    after = await scratch_api.client.get("/api/v1/availability/changes?since=s2", headers=headers)
    assert [c["sequence"] for c in after.json()["changes"]] == [3]
    for _ in range(100):
        changed = await scratch_api.client.get(
            f"/api/v1/availability/performances/{sh01}", headers={**headers, "If-None-Match": etag}
        )
        if changed.headers["etag"].startswith('W/"s3'):
            break
        await asyncio.sleep(0.05)
    assert changed.status_code == 200
    assert changed.headers["etag"] == f'W/"s3-p{sh01}"'
    bad = await scratch_api.client.get(
        "/api/v1/availability/changes?since=yesterday", headers=headers
    )
    assert bad.status_code == 400
    assert bad.json()["code"] == "error.request.invalid"
    everything = await scratch_api.client.get(
        "/api/v1/availability/changes?since=", headers=headers
    )
    assert everything.json()["cursor"] == "s3"
    updated = await scratch_api.rpc(
        AVAILABILITY,
        "getUpdatedAvailabilities",
        {"referenceDate": NOW.isoformat()},  # after provisioning, before the holds
        token=data["token"],
    )
    assert [u["productId"] for u in updated.json()["availabilityUpdateData"]] == [
        data["ids"]["products"]["SHOW"]
    ]
    later = await scratch_api.rpc(
        AVAILABILITY,
        "getUpdatedAvailabilities",
        {"referenceDate": (NOW + timedelta(minutes=1)).isoformat()},
        token=data["token"],
    )
    assert later.json()["availabilityUpdateData"] == []
    async with read(scratch_engine) as conn:
        sequences = (
            (await conn.execute(sa.select(inventory_db.inventory_change.c.sequence)))
            .scalars()
            .all()
        )
    assert sorted(sequences) == [1] * 7 + [2, 3]  # 7 stocks provisioned, then the two holds


async def test_expired_holds_read_as_free_before_the_sweeper(
    scratch_engine: AsyncEngine, backend: Any, tmp_path: Any, clock: Any
) -> None:
    """With no sweeper running, a hold past its expiry still counts as free places on read
    (board and seat map), while the database still has it held."""
    import httpx

    from billetterie.app import build_app
    from tests.conftest import settings_for

    settings = settings_for(backend.scratch_url, tmp_path).model_copy(
        update={"background_tasks": False}
    )
    app = build_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            api = Api(client)
            data = await acme(scratch_engine, api)
            sh01 = data["ids"]["performances"]["SH01"]
            c1 = data["ids"]["categories"][("SH01", "C1")]
            await hold_places(
                scratch_engine,
                institution_id=data["institution"],
                sales_channel_id=data["channel"],
                contingent_ids=[],
                cart="late",
                requests=[PlaceRequest(4, performance_id=sh01, seat_category_id=c1)],
                expires_at=NOW - timedelta(minutes=1),
                now=NOW - timedelta(minutes=21),
            )
            body = {"performanceIds": [sh01], "seatCategoryIds": [c1]}
            detail = (await performance(api, data["token"], body))["performanceAvailabilities"][0][
                "details"
            ][0]
            assert (detail["free"], detail["held"]) == (30, 0)
            seats = (
                await api.rpc(
                    AVAILABILITY,
                    "getSeatsAvailability",
                    {"performanceId": sh01},
                    token=data["token"],
                )
            ).json()["seats"]
            assert {s["state"] for s in seats if s["seatCategoryId"] == c1} == {"FREE"}
    async with read(scratch_engine) as conn:
        held = (
            await conn.execute(
                sa.select(inventory_db.stock.c.held).where(
                    inventory_db.stock.c.performance_id == sh01,
                    inventory_db.stock.c.seat_category_id == c1,
                )
            )
        ).scalar_one()
    assert held == 4  # nobody released it: the reads alone treated it as free
