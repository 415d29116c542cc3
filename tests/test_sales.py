"""Sales through the wire surface: carts, closing with every payment method, tickets with signed
barcodes, cancellation and refunds, history — and bad input that changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.inventory import db as inventory
from billetterie.sales import db as sales
from billetterie.sales.accounts import add_credit, issue_voucher
from billetterie.sales.barcode_keys import verification_keys
from billetterie.sales.barcodes import verify
from billetterie.shared.audit import audit_entry
from billetterie.shared.db import metadata, read
from tests.conftest import NOW, Backend
from tests.factories import import_document
from tests.sales_kit import Kit, open_kit, sales_document

FACADE, ORDERS, HISTORY = (
    "externalOrderFacade",
    "externalOrderService",
    "externalOrderHistoryService",
)


@pytest.fixture
async def kit(scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path) -> AsyncIterator[Kit]:
    async with open_kit(scratch_engine, backend.scratch_url, tmp_path) as kit:
        yield kit


async def availability(kit: Kit, category: str, performance: str = "SH01") -> dict[str, int]:
    """The category's counters in the database (the sale path's truth; the board follows it)."""
    st = inventory.stock.c
    async with read(kit.engine) as conn:
        held, sold = (
            await conn.execute(
                sa.select(sa.func.sum(st.held), sa.func.sum(st.sold)).where(
                    st.performance_id == kit.shop.performances[performance],
                    st.seat_category_id == kit.shop.categories[category],
                )
            )
        ).one()
    return {"held": int(held), "sold": int(sold)}


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    async with read(engine) as conn:
        return {
            t.name: (await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar_one()
            for t in metadata.sorted_tables
            if t.name not in {"audit_entry"}
        }


# --- the happy paths, one per product family and payment method ---------------------------


async def test_best_available_seats_sold_for_cash_get_verifiable_tickets(kit: Kit) -> None:
    body = await kit.cart(kit.seats("C1", 2), kit.seats("C1", 1, tariff="RED"))
    assert body["statusCode"] == "success", body
    cart = body["orderUpdateData"]
    assert cart["orderState"] == "RUNNING"
    assert cart["totalAmount"] == 2 * 50_000 + 40_000
    assert cart["expirationDate"] == (NOW + timedelta(minutes=20)).isoformat()
    assert len(cart["operationDataUpdates"]) == 2
    movements = cart["movementDataUpdates"]
    assert [m["amount"] for m in movements] == [50_000, 50_000, 40_000]
    assert all(m["state"] == "RESERVED" and m["seat"]["row"] for m in movements)
    assert len(cart["orderSecretId"]) >= 24
    # two seats side by side in one row
    first = [m["seat"] for m in movements[:2]]
    assert first[0]["row"] == first[1]["row"]
    assert abs(int(first[0]["number"]) - int(first[1]["number"])) == 1
    assert (await availability(kit, "C1"))["held"] == 3

    closed = await kit.close(cart["orderId"], [("CASH", 140_000)])
    assert closed["statusCode"] == "success", closed
    order = closed["orderData"]
    assert order["orderState"] == "CLOSED"
    assert order["paidAmount"] == 140_000 and order["expirationDate"] is None
    tickets = [m["ticket"] for op in order["operations"] for m in op["movements"]]
    assert len(tickets) == 3 and all(t["ticketState"] == "NOT_PRINTED" for t in tickets)
    assert len({t["barcode"] for t in tickets}) == 3
    seen = await availability(kit, "C1")
    assert (seen["held"], seen["sold"]) == (0, 3)

    async with read(kit.engine) as conn:
        keys = await verification_keys(conn, institution_id=kit.shop.institution_id)
    for ticket in tickets:
        payload = verify(ticket["barcode"], keys, kit.clock.now())
        assert payload.ticket_id == ticket["ticketId"]
        assert payload.performance_id == kit.shop.performances["SH01"]

    details = await kit.rpc(ORDERS, "getOrderDetails", {"orderId": cart["orderId"]})
    assert details["orderData"] == order
    by_secret = await kit.rpc(
        ORDERS, "getFileDetailsFromOrderSecretId", {"orderSecretId": cart["orderSecretId"]}
    )
    assert by_secret["orderData"] == order


async def test_a_sale_after_a_setup_change_is_priced_at_the_new_setup(kit: Kit) -> None:
    before = await kit.cart(kit.seats("C1", 1))  # the process now remembers the point of sale
    assert before["orderUpdateData"]["totalAmount"] == 50_000, before
    document = sales_document()
    assert document["products"][0]["code"] == "SHOW"
    document["products"][0]["event"]["prices"]["C1"]["FULL"] = "55.00"
    await import_document(kit.engine, document)

    # the sale finds the new setup version in its transaction, reads the point of sale again
    after = await kit.cart(kit.seats("C1", 1))
    assert after["statusCode"] == "success", after
    assert after["orderUpdateData"]["totalAmount"] == 55_000
    # a cart made before the change keeps its price
    closed = await kit.close(before["orderUpdateData"]["orderId"], [("CASH", 50_000)])
    assert closed["statusCode"] == "success", closed
    assert closed["orderData"]["totalAmount"] == 50_000


async def test_chosen_seats_are_held_and_refused_to_a_second_cart(kit: Kit) -> None:
    seats = await kit.rpc(
        "availabilityService",
        "getSeatsAvailability",
        {"performanceId": kit.shop.performances["SH01"]},
    )
    free = [
        s["id"]
        for s in seats["seats"]
        if s["state"] == "FREE" and s["seatCategoryId"] == kit.shop.categories["C1"]
    ][:2]
    first = await kit.cart(kit.seats("C1", 2, seat_ids=free))
    assert first["statusCode"] == "success", first
    assert sorted(m["seat"]["id"] for m in first["orderUpdateData"]["movementDataUpdates"]) == (
        sorted(free)
    )
    before = await row_counts(kit.engine)
    second = await kit.cart(kit.seats("C1", 1, seat_ids=free[:1]))
    assert second["statusCode"] == "error.order.availability"
    assert await row_counts(kit.engine) == before


async def test_preferred_areas_reach_the_seat_choice(kit: Kit) -> None:
    """``preferedAreas`` reaches the seat choice (which seats it prefers is
    tests/test_seat_indexes.py's and tests/test_seating.py's); an area that is not the
    institution's is refused and changes nothing."""
    from billetterie.catalog import db as catalog

    async with read(kit.engine) as conn:
        blocks = {
            r.id: r.area_id
            for r in await conn.execute(
                sa.select(catalog.block.c.id, catalog.block.c.area_id).where(
                    catalog.block.c.institution_id == kit.shop.institution_id
                )
            )
        }

    async def areas_of(body: dict[str, Any]) -> set[int]:
        seat_ids = [m["seat"]["id"] for m in body["orderUpdateData"]["movementDataUpdates"]]
        async with read(kit.engine) as conn:
            rows = await conn.execute(
                sa.select(inventory.performance_seat.c.block_id).where(
                    inventory.performance_seat.c.id.in_(seat_ids)
                )
            )
            return {blocks[r.block_id] for r in rows}

    plain = await kit.cart(kit.seats("C1", 2))
    assert plain["statusCode"] == "success", plain
    c1_areas = await areas_of(plain)
    (c1_area,) = c1_areas
    preferring = {**kit.seats("C1", 2), "preferedAreas": [c1_area]}
    within = await kit.cart(preferring)
    assert within["statusCode"] == "success", within
    assert await areas_of(within) == {c1_area}
    before = await row_counts(kit.engine)
    unknown = await kit.cart({**kit.seats("C1", 1), "preferedAreas": [max(blocks.values()) + 99]})
    assert unknown["statusCode"] == "error.order.unknown_product"
    assert await row_counts(kit.engine) == before


async def test_a_cart_grows_and_gives_movements_back(kit: Kit) -> None:
    cart = (await kit.cart(kit.seats("C1", 2)))["orderUpdateData"]
    grown = (await kit.cart(kit.seats("C2", 1), order_id=cart["orderId"]))["orderUpdateData"]
    assert grown["orderId"] == cart["orderId"]
    assert grown["totalAmount"] == 2 * 50_000 + 30_000
    assert [m["seatCategoryId"] for m in grown["movementDataUpdates"]] == [
        kit.shop.categories["C2"]
    ]
    drop = cart["movementDataUpdates"][0]["movementId"]
    body = await kit.rpc(
        ORDERS, "abandonMovements", {"orderId": cart["orderId"], "movementIds": [drop]}
    )
    assert body["statusCode"] == "success", body
    assert body["orderData"]["totalAmount"] == 50_000 + 30_000
    states = {
        m["movementId"]: m["state"]
        for op in body["orderData"]["operations"]
        for m in op["movements"]
    }
    assert states[drop] == "ABANDONED"
    assert (await availability(kit, "C1"))["held"] == 1
    again = await kit.rpc(
        ORDERS, "abandonMovements", {"orderId": cart["orderId"], "movementIds": [drop]}
    )
    assert again["orderData"]["totalAmount"] == 80_000  # idempotent


async def test_a_timeslot_pass_paid_by_voucher_spends_its_balance(kit: Kit) -> None:
    voucher = await issue_voucher(
        kit.engine,
        institution_id=kit.shop.institution_id,
        currency="EUR",
        amount=12_000,
        now=NOW,
        actor="test",
    )
    slot = kit.shop.timeslots[1]
    body = await kit.rpc(
        FACADE,
        "createOrUpdateOrder",
        {
            "simpleProductOperations": [
                {
                    "itemId": kit.shop.items["SLOT"],
                    "timeslotId": slot,
                    "audienceSubCategoryId": kit.tariffs["FULL"],
                    "quantity": 2,
                }
            ]
        },
    )
    assert body["statusCode"] == "success", body
    cart = body["orderUpdateData"]
    assert cart["totalAmount"] == 10_000
    assert {m["timeslotId"] for m in cart["movementDataUpdates"]} == {slot}
    closed = await kit.close(cart["orderId"], [("VOUCHER", 10_000)], voucher=voucher.code)
    assert closed["statusCode"] == "success", closed
    async with read(kit.engine) as conn:
        balance = (
            await conn.execute(
                sa.select(sales.account.c.balance).where(sales.account.c.id == voucher.id)
            )
        ).scalar_one()
    assert balance == 2_000
    # 2.00 left: a second pass is refused and nothing changes
    cart2 = (
        await kit.rpc(
            FACADE,
            "createOrUpdateOrder",
            {
                "simpleProductOperations": [
                    {
                        "itemId": kit.shop.items["DAY"],
                        "audienceSubCategoryId": kit.tariffs["FULL"],
                        "quantity": 1,
                    }
                ]
            },
        )
    )["orderUpdateData"]
    before = await row_counts(kit.engine)
    refused = await kit.close(cart2["orderId"], [("VOUCHER", 12_000)], voucher=voucher.code)
    assert refused["statusCode"] == "error.payment.insufficient_funds"
    assert await row_counts(kit.engine) == before


async def season_tickets(kit: Kit, quantity: int) -> Any:
    """createOrUpdateOrder for ``quantity`` season tickets (SUB) in category C1, full price."""
    return await kit.rpc(
        FACADE,
        "createOrUpdateOrder",
        {
            "composedProductOperations": [
                {
                    "productId": kit.products["SUB"],
                    "seatCategoryId": kit.shop.categories["C1"],
                    "audienceSubCategoryId": kit.tariffs["FULL"],
                    "quantity": quantity,
                }
            ]
        },
    )


async def test_a_season_ticket_takes_one_place_in_each_performance(kit: Kit) -> None:
    body = await season_tickets(kit, 1)
    assert body["statusCode"] == "success", body
    cart = body["orderUpdateData"]
    movements = cart["movementDataUpdates"]
    assert sorted(m["performanceId"] for m in movements) == sorted(
        [kit.shop.performances["SH01"], kit.shop.performances["SH02"]]
    )
    assert sum(m["amount"] for m in movements) == cart["totalAmount"] == 90_000
    assert (await availability(kit, "C1", "SH02"))["held"] == 1
    closed = await kit.close(cart["orderId"], [("CASH", 90_000)])
    assert closed["statusCode"] == "success", closed
    assert (
        len([m for op in closed["orderData"]["operations"] for m in op["movements"] if m["ticket"]])
        == 2
    )


async def test_a_season_ticket_keeps_the_same_seats_at_every_performance(kit: Kit) -> None:
    """The best pair is held at SH01 only: a subscription for two sits elsewhere, on the same
    seats (row, numbers) at SH01 and SH02, side by side."""
    single = await kit.cart(kit.seats("C1", 2))
    assert single["statusCode"] == "success", single
    best = {
        (m["seat"]["row"], m["seat"]["number"])
        for m in single["orderUpdateData"]["movementDataUpdates"]
    }
    body = await season_tickets(kit, 2)
    assert body["statusCode"] == "success", body
    movements = body["orderUpdateData"]["movementDataUpdates"]
    seats: dict[int, set[tuple[str, str]]] = {}
    for m in movements:  # C1 is one block: row and number name a seat
        seats.setdefault(m["performanceId"], set()).add((m["seat"]["row"], m["seat"]["number"]))
    assert set(seats) == {kit.shop.performances["SH01"], kit.shop.performances["SH02"]}
    at_sh01, at_sh02 = seats.values()
    assert at_sh01 == at_sh02 and len(at_sh01) == 2 and not at_sh01 & best
    assert len({row for row, _ in at_sh01}) == 1
    assert sorted(abs(int(a[1]) - int(b[1])) for a in at_sh01 for b in at_sh01 if a < b) == [1]
    assert (await availability(kit, "C1", "SH02"))["held"] == 2


async def test_a_reseller_pays_on_its_pending_account_within_its_limit(kit: Kit) -> None:
    async def buy(quantity: int) -> dict[str, Any]:
        cart = await kit.cart(kit.seats("C2", quantity), who="res")
        assert cart["statusCode"] == "success", cart
        order = cart["orderUpdateData"]
        return await kit.close(order["orderId"], [("PENDING", order["totalAmount"])], who="res")

    first = await buy(5)  # 150.00 of 200.00
    assert first["statusCode"] == "success", first
    cart = (await kit.cart(kit.seats("C2", 2), who="res"))["orderUpdateData"]  # 60.00
    before = await row_counts(kit.engine)
    over = await kit.close(cart["orderId"], [("PENDING", 60_000)], who="res")
    assert over["statusCode"] == "error.payment.insufficient_funds"
    assert await row_counts(kit.engine) == before
    # cancelling one seat of the first order credits the account back
    sold = first["orderData"]["operations"][0]["movements"]
    cancelled = await kit.rpc(
        ORDERS,
        "cancelOperations",
        {"orderId": first["orderData"]["orderId"], "movementIds": [sold[0]["movementId"]]},
        who="res",
    )
    assert cancelled["statusCode"] == "success", cancelled
    assert cancelled["refundOrderId"] is not None
    assert cancelled["orderData"]["totalAmount"] == 120_000
    assert (await kit.close(cart["orderId"], [("PENDING", 60_000)], who="res"))[
        "statusCode"
    ] == "success"

    response = await kit.api.client.get(
        "/api/v1/accounts/pending/statement.csv",
        params={"start": "2026-11-01T00:00:00+00:00", "end": "2026-12-01T00:00:00+00:00"},
        headers={"Authorization": f"Bearer {kit.tokens['res']}"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.strip().splitlines()
    assert lines[0] == "date,order,kind,debit,credit,balance,description"
    assert [line.split(",")[2:6] for line in lines[1:]] == [
        ["OPENING", "", "", "0.00"],
        ["DEBIT", "150.00", "", "-150.00"],
        ["CREDIT", "", "30.00", "-120.00"],
        ["DEBIT", "60.00", "", "-180.00"],
        ["CLOSING", "", "", "-180.00"],
    ]


async def test_a_membership_needs_a_contact_and_can_use_its_credit(kit: Kit) -> None:
    await add_credit(
        kit.engine,
        institution_id=kit.shop.institution_id,
        contact_number="C-1",
        currency="EUR",
        amount=100_000,
        description="goodwill",
        now=NOW,
        actor="test",
    )
    cart = (
        await kit.rpc(
            FACADE,
            "createOrUpdateOrder",
            {
                "simpleProductOperations": [
                    {
                        "itemId": kit.shop.items["CARDM"],
                        "audienceSubCategoryId": kit.tariffs["FULL"],
                        "quantity": 1,
                    }
                ]
            },
        )
    )["orderUpdateData"]
    anonymous = await kit.close(cart["orderId"], [("CASH", 60_000)])
    assert anonymous["statusCode"] == "error.order.contact_required"
    closed = await kit.close(cart["orderId"], [("CREDIT", 60_000)], contact="C-1")
    assert closed["statusCode"] == "success", closed
    assert closed["orderData"]["contactNumber"] == "C-1"


async def test_cancelling_a_sale_returns_places_cancels_tickets_and_refunds(kit: Kit) -> None:
    cart = (await kit.cart(kit.seats("C1", 2)))["orderUpdateData"]
    closed = (await kit.close(cart["orderId"], [("CASH", 100_000)]))["orderData"]
    operation = closed["operations"][0]["operationId"]
    body = await kit.rpc(
        ORDERS, "cancelOperations", {"orderId": cart["orderId"], "operationIds": [operation]}
    )
    assert body["statusCode"] == "success", body
    order = body["orderData"]
    assert order["orderState"] == "CANCELED" and order["totalAmount"] == 0
    assert all(
        m["state"] == "CANCELED" and m["ticket"]["ticketState"] == "CANCELLED"
        for m in order["operations"][0]["movements"]
    )
    seen = await availability(kit, "C1")
    assert (seen["sold"], seen["held"]) == (0, 0)
    refund = await kit.rpc(ORDERS, "getOrderDetails", {"orderId": body["refundOrderId"]})
    assert refund["orderData"]["orderType"] == "REFUND"
    assert refund["orderData"]["originOrderId"] == cart["orderId"]
    assert [p["amount"] for p in refund["orderData"]["payments"]] == [-100_000]
    # again: nothing more happens
    again = await kit.rpc(
        ORDERS, "cancelOperations", {"orderId": cart["orderId"], "operationIds": [operation]}
    )
    assert again["statusCode"] == "success" and again["refundOrderId"] is None
    response = await kit.api.client.get(
        "/api/v1/barcodes/revocations", headers={"Authorization": f"Bearer {kit.tokens['web']}"}
    )
    assert response.status_code == 200, response.text
    revoked = {r["ticketId"] for r in response.json()["revocations"]}
    assert revoked == {m["ticket"]["ticketId"] for m in order["operations"][0]["movements"]}


async def test_cancelling_in_a_cart_releases_at_once(kit: Kit) -> None:
    cart = (await kit.cart(kit.seats("C1", 3)))["orderUpdateData"]
    body = await kit.rpc(
        ORDERS,
        "cancelOperations",
        {
            "orderId": cart["orderId"],
            "operationIds": [cart["operationDataUpdates"][0]["operationId"]],
        },
    )
    assert body["statusCode"] == "success", body
    assert body["orderData"]["totalAmount"] == 0
    assert (await availability(kit, "C1"))["held"] == 0


async def test_an_expired_cart_cannot_close_and_is_abandoned(kit: Kit) -> None:
    cart = (await kit.cart(kit.seats("C1", 2)))["orderUpdateData"]
    kit.later(minutes=21)
    before = await row_counts(kit.engine)
    body = await kit.close(cart["orderId"], [("CASH", 100_000)])
    assert body["statusCode"] == "error.order.expired"
    assert await row_counts(kit.engine) == before
    grown = await kit.cart(kit.seats("C1", 1), order_id=cart["orderId"])
    assert grown["statusCode"] == "error.order.expired"
    from billetterie.sales.tasks import abandon_expired_orders

    assert await abandon_expired_orders(kit.engine, kit.clock.now()) == 1
    details = await kit.rpc(ORDERS, "getOrderDetails", {"orderId": cart["orderId"]})
    assert details["orderData"]["orderState"] == "ABANDONNED"
    assert (await availability(kit, "C1"))["held"] == 0


async def test_holders_listing_and_search(kit: Kit) -> None:
    orders = []
    for _ in range(3):
        cart = (await kit.cart(kit.seats("C2", 1), externalReference="ext-1"))["orderUpdateData"]
        orders.append((await kit.close(cart["orderId"], [("CASH", 30_000)]))["orderData"])
    movement = orders[0]["operations"][0]["movements"][0]
    body = await kit.rpc(
        ORDERS,
        "setMovementContactData",
        {
            "orderId": orders[0]["orderId"],
            "movementId": movement["movementId"],
            "contactData": {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.org"},
        },
    )
    assert body["statusCode"] == "success", body
    assert body["orderData"]["operations"][0]["movements"][0]["holder"] == {
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": "ada@example.org",
    }
    bad = await kit.rpc(
        ORDERS,
        "setMovementContactData",
        {
            "orderId": orders[0]["orderId"],
            "movementId": movement["movementId"],
            "contactData": {"firstName": "Ada"},
        },
    )
    assert bad["statusCode"] == "error.order.invalid_operation"

    page = await kit.rpc(
        HISTORY,
        "listTicketsByCriteria",
        {
            "ticketFilterCriteria": {"productId": kit.products["SHOW"]},
            "paginationParameter": {"startPosition": 0, "maxResult": 2},
        },
    )
    assert page["statusCode"] == "success", page
    assert page["truncated"] is True and len(page["ticketSummaries"]) == 2
    summary = page["ticketSummaries"][0]
    assert summary["ticketState"] == "NOT_PRINTED"
    assert summary["audienceSubCategory"] == "FULL" and summary["price"] == 30_000
    rest = await kit.rpc(
        HISTORY,
        "listTicketsByCriteria",
        {
            "ticketFilterCriteria": {"productId": kit.products["SHOW"]},
            "paginationParameter": {"startPosition": 2, "maxResult": 2},
        },
    )
    assert rest["truncated"] is False and len(rest["ticketSummaries"]) == 1
    # the reseller's channel sees none of them
    theirs = await kit.rpc(HISTORY, "listTicketsByCriteria", {}, who="res")
    assert theirs["ticketSummaries"] == []
    files = await kit.rpc(
        HISTORY,
        "searchFilesByCriteria",
        {"fileFilterCriteria": {"externalReference": "ext-1", "orderStates": ["CLOSED"]}},
    )
    assert [f["orderId"] for f in files["fileSummaries"]] == [o["orderId"] for o in orders][::-1]


# --- refusals: a clear code, nothing changed -------------------------------------------------


async def test_refusals_change_nothing(kit: Kit) -> None:
    cart = (await kit.cart(kit.seats("C1", 2)))["orderUpdateData"]
    order_id = cart["orderId"]
    before = await row_counts(kit.engine)
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        (
            ORDERS,
            "closeOrder",
            {
                "orderId": order_id,
                "payments": [{"paymentMethodId": kit.methods["CASH"], "amount": 99_000}],
            },
            "error.payment.wrong_total",
        ),
        (
            ORDERS,
            "closeOrder",
            {
                "orderId": order_id,
                "payments": [{"paymentMethodId": kit.methods["PENDING"], "amount": 100_000}],
            },
            "error.payment.method_not_allowed",
        ),
        (
            ORDERS,
            "closeOrder",
            {
                "orderId": order_id,
                "payments": [{"paymentMethodId": kit.methods["CARD"], "amount": 100_000}],
            },
            "error.payment.card_redirect_required",
        ),
        (
            ORDERS,
            "closeOrder",
            {
                "orderId": order_id,
                "payments": [
                    {
                        "paymentMethodId": kit.methods["VOUCHER"],
                        "amount": 100_000,
                        "voucherCode": "NOPE",
                    }
                ],
            },
            "error.payment.unknown_account",
        ),
        (ORDERS, "closeOrder", {"orderId": 999_999, "payments": []}, "error.order.unknown"),
        (
            FACADE,
            "createOrUpdateOrder",
            {"singleEntryAttributionOperations": [kit.seats("C1", 9)]},
            "error.order.too_many_seats",
        ),
        (
            FACADE,
            "createOrUpdateOrder",
            {"orderId": order_id, "singleEntryAttributionOperations": [kit.seats("C1", 7)]},
            "error.order.too_many_seats",
        ),
        (
            FACADE,
            "createOrUpdateOrder",
            {
                "singleEntryAttributionOperations": [
                    {
                        "operationAttributions": [
                            {
                                **kit.seats("C1", 1)["operationAttributions"][0],
                                "performanceId": 999_999,
                            }
                        ]
                    }
                ]
            },
            "error.order.unknown_product",
        ),
        (
            FACADE,
            "createOrUpdateOrder",
            {"singleEntryAttributionOperations": [kit.seats("C3", 1, tariff="RED")]},
            "error.order.no_price",
        ),
        (
            FACADE,
            "createOrUpdateOrder",
            {
                "simpleProductOperations": [
                    {
                        "itemId": kit.shop.items["SLOT"],
                        "audienceSubCategoryId": kit.tariffs["FULL"],
                        "quantity": 1,
                    }
                ]
            },
            "error.order.unknown_product",
        ),
        (
            FACADE,
            "createOrUpdateOrder",
            {"singleEntryAttributionOperations": [kit.seats("C1", 4, seat_ids=[1, 2])]},
            "error.order.invalid_operation",
        ),
        (
            ORDERS,
            "abandonMovements",
            {"orderId": order_id, "movementIds": [999_999]},
            "error.order.unknown_movement",
        ),
        (ORDERS, "cancelOperations", {"orderId": order_id}, "error.order.invalid_operation"),
    ]
    for service, method, body, code in cases:
        answer = await kit.rpc(service, method, body)
        assert answer["statusCode"] == code, (method, body, answer)
    # another channel's operator does not see the order
    for method in ("getOrderDetails", "closeOrder", "cancelOperations"):
        answer = await kit.rpc(
            ORDERS, method, {"orderId": order_id, "operationIds": [1]}, who="res"
        )
        assert answer["statusCode"] == "error.order.unknown", answer
    # wrong shapes are 400s
    for body in ({"orderId": "x"}, {"orderId": order_id, "payments": [{"amount": -1}]}):
        response = await kit.api.rpc(ORDERS, "closeOrder", body, token=kit.tokens["web"])
        assert response.status_code == 400, response.text
    assert await row_counts(kit.engine) == before


async def test_every_change_is_audited(kit: Kit) -> None:
    cart = (await kit.cart(kit.seats("C1", 1)))["orderUpdateData"]
    await kit.close(cart["orderId"], [("CASH", 50_000)])
    async with read(kit.engine) as conn:
        actions = [
            r.action
            for r in (
                await conn.execute(sa.select(audit_entry.c.action).order_by(audit_entry.c.id))
            ).all()
            if r.action.startswith(("sales.", "inventory.hold"))
        ]
    assert actions == [
        "sales.order.created",
        "inventory.hold.created",
        "sales.order.updated",
        "sales.barcode_key.created",  # the organization's first barcode
        "sales.order.closed",
        "inventory.hold.confirmed",  # last: the change sequence's lock is held until commit
    ]


# --- card: the provider's page, its webhook closes the order ---------------------------------


async def pay_on_page(kit: Kit, url: str, card_number: str) -> Any:
    path = url.split("://", 1)[-1].split("/", 1)[1]
    page = await kit.api.client.get("/" + path)
    assert page.status_code == 200, page.text
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return await kit.api.client.post(
        "/" + path,
        data={"card_number": card_number, "expiry": "12/30", "cvc": "123", "csrf_token": token},
    )


async def test_a_card_payment_closes_the_order_when_the_provider_confirms(kit: Kit) -> None:
    cart = (await kit.cart(kit.seats("C1", 2)))["orderUpdateData"]
    body = await kit.rpc(
        ORDERS,
        "createPaymentsAndCloseOrder",
        {
            "orderId": cart["orderId"],
            "returnUrl": "https://shop.example/done",
            "payments": [{"paymentMethodId": kit.methods["CARD"], "amount": 100_000}],
        },
    )
    assert body["statusCode"] == "success", body
    assert body["orderData"]["orderState"] == "RUNNING"
    assert body["orderData"]["cardPaymentPending"] is True
    # the cart is frozen while the buyer pays
    frozen = await kit.cart(kit.seats("C1", 1), order_id=cart["orderId"])
    assert frozen["statusCode"] == "error.order.not_running"
    declined = await pay_on_page(kit, body["paymentUrl"], "4000 0000 0000 0002")
    assert declined.status_code in (200, 402), declined.text
    still = await kit.rpc(ORDERS, "getOrderDetails", {"orderId": cart["orderId"]})
    assert still["orderData"]["orderState"] == "RUNNING"
    paid = await pay_on_page(kit, body["paymentUrl"], "4242 4242 4242 4242")
    assert paid.status_code == 303 and paid.headers["location"] == "https://shop.example/done"
    order = (await kit.rpc(ORDERS, "getOrderDetails", {"orderId": cart["orderId"]}))["orderData"]
    assert order["orderState"] == "CLOSED" and order["paidAmount"] == 100_000
    assert [p["paymentType"] for p in order["payments"]] == ["CARD"]
    assert all(m["ticket"]["barcode"] for m in order["operations"][0]["movements"])
    # cancelling refunds the card through the provider, by an outbox job the worker runs
    cancelled = await kit.rpc(
        ORDERS,
        "cancelOperations",
        {"orderId": cart["orderId"], "operationIds": [order["operations"][0]["operationId"]]},
    )
    assert cancelled["statusCode"] == "success", cancelled
    from billetterie.payments import db as payments
    from billetterie.shared.outbox import Dispatcher

    async def refunds() -> list[tuple[int, str]]:
        async with read(kit.engine) as conn:
            rows = (
                await conn.execute(
                    sa.select(payments.payment_refund.c.amount, payments.payment_refund.c.state)
                )
            ).all()
        return [(r.amount, r.state) for r in rows]

    assert await refunds() == [(100_000, "PENDING")]
    worker = Dispatcher(kit.engine, kit.clock, handlers=kit.api.app.state.outbox_handlers)
    assert [o.state for o in await worker.drain()] == ["DONE"]
    assert await refunds() == [(100_000, "SUCCEEDED")]


async def test_reopening_gives_the_card_payment_up(kit: Kit) -> None:
    cart = (await kit.cart(kit.seats("C1", 1)))["orderUpdateData"]
    body = await kit.rpc(
        ORDERS,
        "createPaymentsAndCloseOrder",
        {
            "orderId": cart["orderId"],
            "returnUrl": "https://shop.example/done",
            "payments": [{"paymentMethodId": kit.methods["CARD"], "amount": 50_000}],
        },
    )
    reopened = await kit.rpc(ORDERS, "reopenOrder", {"orderId": cart["orderId"]})
    assert reopened["statusCode"] == "success", reopened
    assert reopened["orderData"]["cardPaymentPending"] is False
    closed = await kit.close(cart["orderId"], [("CASH", 50_000)])
    assert closed["statusCode"] == "success", closed
    path = "/" + body["paymentUrl"].split("://", 1)[-1].split("/", 1)[1]
    late = await kit.api.client.get(path)  # the page no longer takes a card for this payment
    assert 'name="card_number"' not in late.text, late.text
    order = (await kit.rpc(ORDERS, "getOrderDetails", {"orderId": cart["orderId"]}))["orderData"]
    assert [p["paymentType"] for p in order["payments"]] == ["CASH"]


async def test_the_pdf_link_prints_every_ticket_with_a_qr_of_its_barcode(kit: Kit) -> None:
    from tests.test_pdf import decoded_qr, pages, text_of

    cart = (await kit.cart(kit.seats("C1", 2)))["orderUpdateData"]
    order = (await kit.close(cart["orderId"], [("CASH", 100_000)], generateBarCodes=False))[
        "orderData"
    ]
    movements = order["operations"][0]["movements"]
    assert all(m["ticket"]["barcode"] is None for m in movements)
    response = await kit.api.client.get(
        f"/api/v1/orders/{cart['orderSecretId']}/tickets.pdf", params={"lang": "fr"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    printed = (await kit.rpc(ORDERS, "getOrderDetails", {"orderId": cart["orderId"]}))["orderData"][
        "operations"
    ][0]["movements"]
    barcodes = [m["ticket"]["barcode"] for m in printed]
    assert all(barcodes) and all(m["ticket"]["ticketState"] == "PRINTED" for m in printed)
    rendered = pages(response.content)
    assert [decoded_qr(page) for page in rendered] == [[code] for code in barcodes]
    assert "Cat 1 (fr)" in text_of(rendered[0])
    one = await kit.api.client.get(
        f"/api/v1/orders/{cart['orderSecretId']}/tickets.pdf",
        params={"ticketId": printed[1]["ticket"]["ticketId"]},
    )
    assert [decoded_qr(page) for page in pages(one.content)] == [[barcodes[1]]]
    unknown = await kit.api.client.get("/api/v1/orders/not-a-real-secret/tickets.pdf")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "error.order.unknown"


async def test_closing_and_cancelling_send_signed_webhooks_with_the_order(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    import httpx
    import orjson

    from billetterie.shared.outbox import Dispatcher
    from billetterie.webhooks.models import verify_signature
    from billetterie.webhooks.services import TOPIC
    from billetterie.webhooks.tasks import WebhookSender
    from tests.receiver import receiving

    async with receiving() as receiver:
        hooks = [
            {
                "code": "FULL",
                "pointOfSale": "ACMEWEB",
                "events": ["order.closed", "order.cancelled"],
                "url": receiver.base + "/orders",
                "payload": "full",
                "filter": {"products": ["SHOW"]},
                "secret": "full-secret-0123456789",
            },
            {
                "code": "PING",
                "pointOfSale": "ACMEWEB",
                "events": ["order.closed"],
                "url": receiver.base + "/ping/${orderId}",
                "method": "GET",
                "secret": "ping-secret-0123456789",
            },
        ]
        async with open_kit(scratch_engine, backend.scratch_url, tmp_path, webhooks=hooks) as kit:
            cart = (await kit.cart(kit.seats("C1", 1)))["orderUpdateData"]
            await kit.close(cart["orderId"], [("CASH", 50_000)])
            order_id = cart["orderId"]
            async with httpx.AsyncClient(timeout=5) as client:
                dispatcher = Dispatcher(
                    kit.engine,
                    kit.clock,
                    handlers={TOPIC: WebhookSender(kit.engine, kit.clock, client, max_attempts=3)},
                    max_attempts=3,
                )
                assert [o.state for o in await dispatcher.drain()] == ["DONE", "DONE"]
                by_target = {r.target: r for r in receiver.requests}
                assert set(by_target) == {"/orders", f"/ping/{order_id}"}
                full = by_target["/orders"]
                assert full.headers["billetterie-event"] == "order.closed"
                assert verify_signature(
                    "full-secret-0123456789",
                    full.headers["billetterie-signature"],
                    full.body,
                    now=int(kit.clock.now().timestamp()),
                )
                document = orjson.loads(full.body)
                payload = document["data"]
                assert payload["orderData"]["orderId"] == order_id
                assert payload["orderData"]["orderState"] == "CLOSED"
                # a rolled-back close emits nothing; a cancellation emits order.cancelled
                operation = payload["orderData"]["operations"][0]["operationId"]
                await kit.rpc(
                    ORDERS, "cancelOperations", {"orderId": order_id, "operationIds": [operation]}
                )
                assert [o.state for o in await dispatcher.drain()] == ["DONE"]
                assert receiver.requests[-1].headers["billetterie-event"] == "order.cancelled"


async def test_idempotency_keys_replay_carts_and_closes(kit: Kit) -> None:
    body = {"singleEntryAttributionOperations": [kit.seats("C1", 2)]}
    key = {"Idempotency-Key": "cart-0001"}
    first = await kit.rpc(FACADE, "createOrUpdateOrder", body, headers=key)
    again = await kit.rpc(FACADE, "createOrUpdateOrder", body, headers=key)
    assert first == again and first["statusCode"] == "success"
    async with read(kit.engine) as conn:
        orders = await conn.execute(sa.select(sa.func.count()).select_from(sales.sales_order))
        assert orders.scalar_one() == 1
    assert (await availability(kit, "C1"))["held"] == 2
    other = await kit.api.rpc(
        FACADE,
        "createOrUpdateOrder",
        {"singleEntryAttributionOperations": [kit.seats("C1", 3)]},
        token=kit.tokens["web"],
        headers=key,
    )
    assert other.status_code == 422, other.text
    assert other.json()["statusCode"] == "error.request.idempotency_mismatch"
    order_id = first["orderUpdateData"]["orderId"]
    close_key = {"Idempotency-Key": "close-0001"}
    closed = await kit.close(order_id, [("CASH", 100_000)], headers=close_key)
    replayed = await kit.close(order_id, [("CASH", 100_000)], headers=close_key)
    assert closed == replayed and closed["statusCode"] == "success"
    plain = await kit.close(order_id, [("CASH", 100_000)])  # no key: a second close is refused
    assert plain["statusCode"] == "error.order.not_running"
    async with read(kit.engine) as conn:
        tickets = await conn.execute(sa.select(sa.func.count()).select_from(sales.ticket))
        assert tickets.scalar_one() == 2


async def test_a_reissued_ticket_invalidates_the_old_barcode(kit: Kit) -> None:
    cart = (await kit.cart(kit.seats("C1", 1)))["orderUpdateData"]
    order = (await kit.close(cart["orderId"], [("CASH", 50_000)]))["orderData"]
    movement = order["operations"][0]["movements"][0]
    old = movement["ticket"]
    body = await kit.rpc(
        ORDERS, "reissueTicket", {"orderId": cart["orderId"], "movementId": movement["movementId"]}
    )
    assert body["statusCode"] == "success", body
    new = body["orderData"]["operations"][0]["movements"][0]["ticket"]
    assert new["ticketId"] != old["ticketId"] and new["barcode"] != old["barcode"]
    assert new["ticketState"] == "NOT_PRINTED"
    listed = await kit.rpc(HISTORY, "listTicketsByCriteria", {})
    states = {t["ticketId"]: t["ticketState"] for t in listed["ticketSummaries"]}
    assert states == {old["ticketId"]: "INVALIDATED", new["ticketId"]: "NOT_PRINTED"}
    response = await kit.api.client.get(
        "/api/v1/barcodes/revocations", headers={"Authorization": f"Bearer {kit.tokens['web']}"}
    )
    assert [r["ticketId"] for r in response.json()["revocations"]] == [old["ticketId"]]
    missing = await kit.rpc(
        ORDERS, "reissueTicket", {"orderId": cart["orderId"], "movementId": 999}
    )
    assert missing["statusCode"] == "error.order.unknown_movement"
