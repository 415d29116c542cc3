"""Card payments through the wire surface, beyond the whole-total card: mixed payments (a voucher,
a credit balance or a pending account pays part, the card the rest; the parts are held while the
buyer is on the card page and given back when the card payment is given up or the cart expires),
and card refunds as outbox jobs run by the worker (retried with backoff, idempotent towards the
provider, their progress shown with the order)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.payments import db as payments
from billetterie.payments.errors import ProviderUnavailable, RefundRefused
from billetterie.payments.models import (
    PaymentIntent,
    PaymentProvider,
    ProviderEvent,
    ProviderStatus,
    StartedPayment,
)
from billetterie.payments.services import get_payment, handle_webhook, payment_by_reference
from billetterie.payments.test_provider import SUCCESS_CARD, TestCardProvider, read_card
from billetterie.sales import db as sales
from billetterie.sales.accounts import add_credit, issue_voucher
from billetterie.sales.tasks import abandon_expired_orders
from billetterie.shared import outbox
from billetterie.shared.audit import audit_entry
from billetterie.shared.db import read
from tests.conftest import NOW, Backend, serve
from tests.sales_kit import Kit, open_kit, sales_document
from tests.test_sales import ORDERS, pay_on_page, row_counts


@pytest.fixture
async def kit(scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path) -> AsyncIterator[Kit]:
    async with open_kit(scratch_engine, backend.scratch_url, tmp_path) as kit:
        yield kit


async def card_close(
    kit: Kit,
    order_id: int,
    payments_: Sequence[tuple[str, int] | tuple[str, int, str]],
    *,
    voucher: str | None = None,
    contact: str | None = None,
    who: str = "web",
) -> dict[str, Any]:
    """``createPaymentsAndCloseOrder`` with ``(method, amount)`` payments, ``voucher`` the code
    of every voucher payment, or ``(method, amount, code)`` for a voucher of its own."""
    body: dict[str, Any] = {
        "orderId": order_id,
        "returnUrl": "https://shop.example/done",
        "payments": [
            {
                "paymentMethodId": kit.methods[method],
                "amount": amount,
                **(
                    {"voucherCode": code[0] if code else voucher}
                    if method == "VOUCHER" and (code or voucher)
                    else {}
                ),
            }
            for method, amount, *code in payments_
        ],
    }
    if contact:
        body["purchaserInfo"] = {"contactReference": contact}
    return await kit.rpc(ORDERS, "createPaymentsAndCloseOrder", body, who=who)


async def details(kit: Kit, order_id: int, who: str = "web") -> dict[str, Any]:
    body = await kit.rpc(ORDERS, "getOrderDetails", {"orderId": order_id}, who=who)
    assert body["statusCode"] == "success", body
    order: dict[str, Any] = body["orderData"]
    return order


async def balance(kit: Kit, account_id: int) -> int:
    async with read(kit.engine) as conn:
        value = (
            await conn.execute(
                sa.select(sales.account.c.balance).where(sales.account.c.id == account_id)
            )
        ).scalar_one()
    return int(value)


async def ledger(kit: Kit, account_id: int) -> list[tuple[str, int]]:
    e = sales.account_entry.c
    async with read(kit.engine) as conn:
        rows = (
            await conn.execute(
                sa.select(e.kind, e.amount).where(e.account_id == account_id).order_by(e.id)
            )
        ).all()
    return [(r.kind, r.amount) for r in rows]


def dispatcher(kit: Kit) -> outbox.Dispatcher:
    """A dispatcher with the app's own outbox handlers (the refund runner bound to its gateway),
    as the worker runs them."""
    handlers: Mapping[str, outbox.Handler] = kit.api.app.state.outbox_handlers
    return outbox.Dispatcher(kit.engine, kit.clock, handlers=handlers, max_attempts=5)


async def refund_jobs(kit: Kit) -> list[tuple[str, int, str | None]]:
    o = outbox.outbox.c
    async with read(kit.engine) as conn:
        rows = (
            await conn.execute(
                sa.select(o.state, o.attempts, o.last_error)
                .where(o.topic == "payments.refund")
                .order_by(o.id)
            )
        ).all()
    return [(r.state, r.attempts, r.last_error) for r in rows]


async def provider_refunds(kit: Kit) -> list[tuple[str, int]]:
    ledger_ = payments.payment_test_ledger.c
    async with read(kit.engine) as conn:
        rows = (
            await conn.execute(
                sa.select(ledger_.reference, ledger_.amount)
                .where(ledger_.kind == "REFUND")
                .order_by(ledger_.id)
            )
        ).all()
    return [(r.reference, r.amount) for r in rows]


async def voucher(kit: Kit, amount: int) -> Any:
    return await issue_voucher(
        kit.engine,
        institution_id=kit.shop.institution_id,
        currency="EUR",
        amount=amount,
        now=NOW,
        actor="test",
    )


# --- mixed payments ---------------------------------------------------------------------------


async def test_a_voucher_pays_part_and_the_card_the_rest(kit: Kit) -> None:
    gift = await voucher(kit, 30_000)
    cart = (await kit.cart(kit.seats("C1", 2)))["orderUpdateData"]  # 100.00
    body = await card_close(
        kit, cart["orderId"], [("VOUCHER", 30_000), ("CARD", 70_000)], voucher=gift.code
    )
    assert body["statusCode"] == "success", body
    order = body["orderData"]
    assert (order["orderState"], order["cardPaymentPending"], order["paidAmount"]) == (
        "RUNNING",
        True,
        0,
    )
    assert [(c["paymentState"], c["amount"]) for c in order["cardPayments"]] == [
        ("PENDING", 70_000)
    ]
    # the voucher's part is held: it cannot be spent by another cart meanwhile
    assert await balance(kit, gift.id) == 0
    other = (await kit.cart(kit.seats("C2", 1)))["orderUpdateData"]
    before = await row_counts(kit.engine)
    spent = await kit.close(other["orderId"], [("VOUCHER", 30_000)], voucher=gift.code)
    assert spent["statusCode"] == "error.payment.insufficient_funds", spent
    assert await row_counts(kit.engine) == before

    paid = await pay_on_page(kit, body["paymentUrl"], "4242 4242 4242 4242")
    assert paid.status_code == 303, paid.text
    order = await details(kit, cart["orderId"])
    assert (order["orderState"], order["paidAmount"], order["cardPaymentPending"]) == (
        "CLOSED",
        100_000,
        False,
    )
    assert [(p["paymentType"], p["amount"]) for p in order["payments"]] == [
        ("CARD", 70_000),
        ("VOUCHER", 30_000),
    ]
    assert all(m["ticket"]["barcode"] for m in order["operations"][0]["movements"])
    assert [(c["paymentState"], c["refunds"]) for c in order["cardPayments"]] == [("SUCCEEDED", [])]
    # debited once, when it was held
    assert await ledger(kit, gift.id) == [("CREDIT", 30_000), ("DEBIT", 30_000)]

    # cancelling pays both back: the voucher at once, the card by the worker's job
    cancelled = await kit.rpc(
        ORDERS,
        "cancelOperations",
        {"orderId": cart["orderId"], "operationIds": [order["operations"][0]["operationId"]]},
    )
    assert cancelled["statusCode"] == "success", cancelled
    assert await balance(kit, gift.id) == 30_000
    (card,) = cancelled["orderData"]["cardPayments"]
    assert [(r["amount"], r["state"], r["attempts"]) for r in card["refunds"]] == [
        (70_000, "PENDING", 0)
    ]
    assert await provider_refunds(kit) == []  # nothing paid back before the job runs
    assert [o.state for o in await dispatcher(kit).drain()] == ["DONE"]
    (card,) = (await details(kit, cart["orderId"]))["cardPayments"]
    assert (card["paymentState"], card["refundedAmount"]) == ("REFUNDED", 70_000)
    assert [(r["state"], r["attempts"], r["lastError"]) for r in card["refunds"]] == [
        ("SUCCEEDED", 1, None)
    ]
    assert await provider_refunds(kit) == [(card["reference"], 70_000)]


async def test_reopening_and_expiry_give_the_held_parts_back(kit: Kit) -> None:
    account = await add_credit(
        kit.engine,
        institution_id=kit.shop.institution_id,
        contact_number="C-1",
        currency="EUR",
        amount=100_000,
        description="goodwill",
        now=NOW,
        actor="test",
    )
    cart = (await kit.cart(kit.seats("C1", 1)))["orderUpdateData"]  # 50.00
    mixed = [("CREDIT", 20_000), ("CARD", 30_000)]
    first = await card_close(kit, cart["orderId"], mixed, contact="C-1")
    assert first["statusCode"] == "success", first
    assert await balance(kit, account.id) == 80_000
    reopened = await kit.rpc(ORDERS, "reopenOrder", {"orderId": cart["orderId"]})
    assert reopened["statusCode"] == "success", reopened
    assert reopened["orderData"]["cardPaymentPending"] is False
    assert await balance(kit, account.id) == 100_000

    second = await card_close(kit, cart["orderId"], mixed, contact="C-1")
    assert second["statusCode"] == "success", second
    assert await balance(kit, account.id) == 80_000
    # a declined card keeps the hold: the buyer may try another card on the same page
    declined = await pay_on_page(kit, second["paymentUrl"], "4000 0000 0000 0002")
    assert declined.status_code == 402, declined.text
    assert await balance(kit, account.id) == 80_000
    # the buyer never comes back: the cart expires (20 minutes, and the card's grace)
    kit.later(minutes=36)
    assert await abandon_expired_orders(kit.engine, kit.clock.now()) == 1
    assert await balance(kit, account.id) == 100_000
    order = await details(kit, cart["orderId"])
    assert order["orderState"] == "ABANDONNED"
    assert [c["paymentState"] for c in order["cardPayments"]] == ["CANCELLED", "CANCELLED"]

    # The provider still confirms the abandoned payment (the buyer paid in another tab, say):
    # the money is refunded by a job written with the confirmation; the hold is not given back
    # a second time.
    gateway = kit.api.app.state.payments
    provider = gateway.provider("test")
    assert isinstance(provider, TestCardProvider)
    reference = order["cardPayments"][1]["reference"]
    async with read(kit.engine) as conn:
        intent_id = (
            await conn.execute(
                sa.select(payments.payment_intent.c.id).where(
                    payments.payment_intent.c.reference == reference
                )
            )
        ).scalar_one()
        intent = await get_payment(
            conn, institution_id=kit.shop.institution_id, intent_id=intent_id
        )
    _, signed = await provider.charge(
        intent, read_card(SUCCESS_CARD, "12/30", "123", now=NOW), now=kit.clock.now()
    )
    webhook = await kit.api.client.post(
        "/payments/webhooks/test", content=signed.body, headers=signed.headers
    )
    assert webhook.status_code == 200, webhook.text
    assert webhook.json() == {"applied": True, "state": "SUCCEEDED"}
    assert await refund_jobs(kit) == [("PENDING", 0, None)]
    order = await details(kit, cart["orderId"])
    assert order["orderState"] == "ABANDONNED" and order["payments"] == []
    late = order["cardPayments"][1]
    assert (late["paymentState"], [r["state"] for r in late["refunds"]]) == (
        "SUCCEEDED",
        ["PENDING"],
    )
    assert "error.order.not_running" in late["refunds"][0]["reason"]
    assert [o.state for o in await dispatcher(kit).drain()] == ["DONE"]
    assert (await details(kit, cart["orderId"]))["cardPayments"][1]["paymentState"] == "REFUNDED"
    assert await balance(kit, account.id) == 100_000
    assert await ledger(kit, account.id) == [
        ("CREDIT", 100_000),
        ("DEBIT", 20_000),
        ("CREDIT", 20_000),  # reopened
        ("DEBIT", 20_000),
        ("CREDIT", 20_000),  # expired
    ]


async def test_every_held_part_is_given_back_or_recorded(kit: Kit) -> None:
    """Two vouchers and a credit balance beside the card: each part is held, each is given back
    by a reopen and by the cart's expiry, and each is recorded (debited once, when it was held)
    when the card is paid."""
    first, second = await voucher(kit, 30_000), await voucher(kit, 20_000)
    credit = await add_credit(
        kit.engine,
        institution_id=kit.shop.institution_id,
        contact_number="C-1",
        currency="EUR",
        amount=25_000,
        description="goodwill",
        now=NOW,
        actor="test",
    )
    full = {first.id: 30_000, second.id: 20_000, credit.id: 25_000}
    mixed = [
        ("VOUCHER", 30_000, first.code),
        ("CREDIT", 25_000),
        ("VOUCHER", 20_000, second.code),
        ("CARD", 25_000),
    ]

    async def balances() -> dict[int, int]:
        return {account_id: await balance(kit, account_id) for account_id in full}

    async def started(order_id: int) -> dict[str, Any]:
        body = await card_close(kit, order_id, mixed, contact="C-1")
        assert body["statusCode"] == "success", body
        assert await balances() == dict.fromkeys(full, 0)  # every part held
        return body

    cart = (await kit.cart(kit.seats("C1", 2)))["orderUpdateData"]  # 100.00
    await started(cart["orderId"])
    reopened = await kit.rpc(ORDERS, "reopenOrder", {"orderId": cart["orderId"]})
    assert reopened["statusCode"] == "success", reopened
    assert await balances() == full
    # held again, and the cart expires with the buyer on the card page
    await started(cart["orderId"])
    kit.later(minutes=36)
    assert await abandon_expired_orders(kit.engine, kit.clock.now()) == 1
    assert await balances() == full
    for account_id, amount in full.items():
        assert (await ledger(kit, account_id))[1:] == [("DEBIT", amount), ("CREDIT", amount)] * 2

    # the next cart is paid: every part recorded as it was held, not debited again
    cart = (await kit.cart(kit.seats("C1", 2)))["orderUpdateData"]
    body = await started(cart["orderId"])
    assert (await pay_on_page(kit, body["paymentUrl"], "4242 4242 4242 4242")).status_code == 303
    order = await details(kit, cart["orderId"])
    assert (order["orderState"], order["paidAmount"]) == ("CLOSED", 100_000)
    assert sorted((p["paymentType"], p["amount"]) for p in order["payments"]) == [
        ("CARD", 25_000),
        ("CREDIT", 25_000),
        ("VOUCHER", 20_000),
        ("VOUCHER", 30_000),
    ]
    assert await balances() == dict.fromkeys(full, 0)
    for account_id, amount in full.items():
        assert (await ledger(kit, account_id))[5:] == [("DEBIT", amount)]


async def test_a_card_confirmed_too_late_is_refunded_and_the_held_part_given_back(
    kit: Kit,
) -> None:
    gift = await voucher(kit, 30_000)
    cart = (await kit.cart(kit.seats("C1", 2)))["orderUpdateData"]
    body = await card_close(
        kit, cart["orderId"], [("VOUCHER", 30_000), ("CARD", 70_000)], voucher=gift.code
    )
    assert body["statusCode"] == "success", body
    # past the cart's expiry and the card's grace, before the sweeper abandoned the cart: the
    # places are no longer held, so the confirmation cannot close the order
    kit.later(minutes=36)
    paid = await pay_on_page(kit, body["paymentUrl"], "4242 4242 4242 4242")
    assert paid.status_code == 303, paid.text
    order = await details(kit, cart["orderId"])
    assert (order["orderState"], order["cardPaymentPending"], order["payments"]) == (
        "RUNNING",
        False,
        [],
    )
    assert await balance(kit, gift.id) == 30_000
    assert await refund_jobs(kit) == [("PENDING", 0, None)]
    a = audit_entry.c
    async with read(kit.engine) as conn:
        entries = (
            await conn.execute(
                sa.select(a.actor, a.data).where(a.action == "sales.order.card_payment_refunded")
            )
        ).all()
    assert [(e.actor, e.data["order_id"], e.data["code"]) for e in entries] == [
        ("payments", cart["orderId"], "error.order.expired")
    ]
    # the sweeper abandons the cart later and gives nothing back a second time
    assert await abandon_expired_orders(kit.engine, kit.clock.now()) == 1
    assert await balance(kit, gift.id) == 30_000
    order = await details(kit, cart["orderId"])
    assert order["orderState"] == "ABANDONNED"
    (card,) = order["cardPayments"]
    assert card["paymentState"] == "SUCCEEDED"
    assert [(r["amount"], r["state"]) for r in card["refunds"]] == [(70_000, "PENDING")]
    assert "error.order.expired" in card["refunds"][0]["reason"]
    assert await ledger(kit, gift.id) == [("CREDIT", 30_000), ("DEBIT", 30_000), ("CREDIT", 30_000)]
    assert [o.state for o in await dispatcher(kit).drain()] == ["DONE"]
    assert await provider_refunds(kit) == [(card["reference"], 70_000)]


async def test_two_carts_racing_for_one_voucher_hold_it_once(kit: Kit) -> None:
    gift = await voucher(kit, 40_000)
    carts = [(await kit.cart(kit.seats("C1", 1)))["orderUpdateData"] for _ in range(4)]  # 50.00
    answers = await asyncio.gather(
        *(
            card_close(
                kit, cart["orderId"], [("VOUCHER", 40_000), ("CARD", 10_000)], voucher=gift.code
            )
            for cart in carts
        )
    )
    codes = sorted(a["statusCode"] for a in answers)
    assert codes == ["error.payment.insufficient_funds"] * 3 + ["success"], answers
    assert await balance(kit, gift.id) == 0
    assert await ledger(kit, gift.id) == [("CREDIT", 40_000), ("DEBIT", 40_000)]
    pending = [a for a in answers if a["statusCode"] == "success"]
    assert [a["orderData"]["cardPaymentPending"] for a in pending] == [True]
    async with read(kit.engine) as conn:
        intents = (
            await conn.execute(sa.select(sa.func.count()).select_from(payments.payment_intent))
        ).scalar_one()
    assert intents == 1  # the refused carts left no payment behind


async def test_mixed_payment_refusals_change_nothing(kit: Kit) -> None:
    gift = await voucher(kit, 30_000)
    cart = (await kit.cart(kit.seats("C1", 2)))["orderUpdateData"]  # 100.00
    order_id = cart["orderId"]
    before = await row_counts(kit.engine)
    cases: list[tuple[list[tuple[str, int]], str | None, str]] = [
        ([("VOUCHER", 30_000), ("CARD", 60_000)], gift.code, "error.payment.wrong_total"),
        ([("VOUCHER", 30_000), ("CARD", 80_000)], gift.code, "error.payment.wrong_total"),
        ([("VOUCHER", 0), ("CARD", 100_000)], gift.code, "error.payment.wrong_total"),
        ([("VOUCHER", 30_000)], gift.code, "error.order.invalid_operation"),
        ([("CARD", 50_000), ("CARD", 50_000)], None, "error.order.invalid_operation"),
        ([("CASH", 50_000), ("CARD", 50_000)], None, "error.payment.method_not_allowed"),
        ([("PENDING", 50_000), ("CARD", 50_000)], None, "error.payment.method_not_allowed"),
        ([("VOUCHER", 40_000), ("CARD", 60_000)], gift.code, "error.payment.insufficient_funds"),
        (
            [("VOUCHER", 20_000), ("VOUCHER", 20_000), ("CARD", 60_000)],
            gift.code,
            "error.payment.insufficient_funds",
        ),
        ([("VOUCHER", 30_000), ("CARD", 70_000)], "NOSUCHCODE", "error.payment.unknown_account"),
        ([("CREDIT", 30_000), ("CARD", 70_000)], None, "error.payment.unknown_account"),
    ]
    for payments_, code, expected in cases:
        body = await card_close(kit, order_id, payments_, voucher=code)
        assert body["statusCode"] == expected, (payments_, body)
        assert await row_counts(kit.engine) == before, payments_
    assert await balance(kit, gift.id) == 30_000
    order = await details(kit, order_id)
    assert (order["orderState"], order["cardPaymentPending"]) == ("RUNNING", False)


# --- one lock order: the order, then its intent ------------------------------------------------


async def lock_waiters(engine: AsyncEngine) -> int:
    """Sessions of this database waiting for a lock another holds."""
    async with read(engine) as conn:
        count = (
            await conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        ).scalar_one()
    return int(count)


@pytest.mark.parametrize("rival", ["reopen", "expiry"])
async def test_a_confirmation_racing_a_reopen_or_the_expiry_waits_instead_of_deadlocking(
    kit: Kit, backend: Backend, monkeypatch: pytest.MonkeyPatch, rival: str
) -> None:
    """The webhook is held inside its transaction, just before the confirmation handler runs,
    while the rival (reopenOrder, or the sweeper on the expired cart) locks the order and then
    its intent. Both lock the order first, so the rival waits and goes on once the webhook
    commits. Were the intent locked before the order, the two would wait on each other."""
    if backend.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's (SQLite has one writer at a time)")
    gift = await voucher(kit, 30_000)
    cart = (await kit.cart(kit.seats("C1", 2)))["orderUpdateData"]  # 100.00
    order_id = cart["orderId"]
    body = await card_close(
        kit, order_id, [("VOUCHER", 30_000), ("CARD", 70_000)], voucher=gift.code
    )
    assert body["statusCode"] == "success", body
    if rival == "expiry":
        kit.later(minutes=36)  # past the cart's expiry and the card's grace
    gateway = kit.api.app.state.payments
    provider = gateway.provider("test")
    assert isinstance(provider, TestCardProvider)
    (card,) = (await details(kit, order_id))["cardPayments"]
    async with read(kit.engine) as conn:
        intent = await payment_by_reference(conn, provider="test", reference=card["reference"])
    _, signed = await provider.charge(
        intent, read_card(SUCCESS_CARD, "12/30", "123", now=NOW), now=kit.clock.now()
    )

    holding, go = asyncio.Event(), asyncio.Event()
    confirm = gateway.payment_confirmed

    async def held_confirmation(conn: AsyncConnection, paid: PaymentIntent) -> None:
        # The webhook's deadlock check comes first (the rival's after the default second),
        # so a cycle would fail the webhook, not the rival (whose transaction retries).
        await conn.execute(sa.text("SET LOCAL deadlock_timeout = '100ms'"))
        holding.set()
        await go.wait()
        await confirm(conn, paid)

    monkeypatch.setattr(gateway, "payment_confirmed", held_confirmation)
    webhook = asyncio.create_task(
        handle_webhook(
            kit.engine,
            gateway,
            provider="test",
            headers=signed.headers,
            body=signed.body,
            now=kit.clock.now(),
        )
    )
    await asyncio.wait_for(holding.wait(), 5)
    other: asyncio.Task[Any] = asyncio.create_task(
        kit.rpc(ORDERS, "reopenOrder", {"orderId": order_id})
        if rival == "reopen"
        else abandon_expired_orders(kit.engine, kit.clock.now())
    )
    for _ in range(250):  # until the rival waits for a lock the webhook holds
        if await lock_waiters(kit.engine):
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail(f"the {rival} never waited for the webhook's locks")
    go.set()
    outcome, answer = await asyncio.wait_for(asyncio.gather(webhook, other), 10)

    assert (outcome.applied, outcome.intent.state.value) == (True, "SUCCEEDED")
    order = await details(kit, order_id)
    if rival == "reopen":  # the order closed first; there is nothing left to reopen
        assert answer["statusCode"] == "error.order.not_running", answer
        assert (order["orderState"], order["paidAmount"]) == ("CLOSED", 100_000)
        assert await ledger(kit, gift.id) == [("CREDIT", 30_000), ("DEBIT", 30_000)]
        assert await refund_jobs(kit) == []
    else:  # too late to close: refunded, the voucher given back once, then abandoned
        assert answer == 1
        assert (order["orderState"], order["payments"]) == ("ABANDONNED", [])
        assert await ledger(kit, gift.id) == [
            ("CREDIT", 30_000),
            ("DEBIT", 30_000),
            ("CREDIT", 30_000),
        ]
        assert await refund_jobs(kit) == [("PENDING", 0, None)]


@pytest.fixture
async def reseller_kit(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> AsyncIterator[Kit]:
    channels = sales_document()["salesChannels"]
    channels[1]["pointsOfSale"][0]["paymentMethods"] = ["PENDING", "CARD"]
    async with open_kit(
        scratch_engine, backend.scratch_url, tmp_path, salesChannels=channels
    ) as kit:
        yield kit


async def test_a_reseller_pays_part_on_its_pending_account(reseller_kit: Kit) -> None:
    kit = reseller_kit
    cart = (await kit.cart(kit.seats("C2", 5), who="res"))["orderUpdateData"]  # 150.00
    body = await card_close(
        kit, cart["orderId"], [("PENDING", 100_000), ("CARD", 50_000)], who="res"
    )
    assert body["statusCode"] == "success", body
    # 100.00 of the 200.00 limit is held: a 120.00 sale no longer fits
    other = (await kit.cart(kit.seats("C2", 4), who="res"))["orderUpdateData"]
    over = await kit.close(other["orderId"], [("PENDING", 120_000)], who="res")
    assert over["statusCode"] == "error.payment.insufficient_funds", over
    paid = await pay_on_page(kit, body["paymentUrl"], "4242 4242 4242 4242")
    assert paid.status_code == 303, paid.text
    order = await details(kit, cart["orderId"], who="res")
    assert order["orderState"] == "CLOSED"
    assert sorted((p["paymentType"], p["amount"]) for p in order["payments"]) == [
        ("CARD", 50_000),
        ("PENDING_ACCOUNT", 100_000),
    ]
    response = await kit.api.client.get(
        "/api/v1/accounts/pending/statement.csv",
        params={"start": "2026-11-01T00:00:00+00:00", "end": "2026-12-01T00:00:00+00:00"},
        headers={"Authorization": f"Bearer {kit.tokens['res']}"},
    )
    assert response.status_code == 200, response.text
    assert [line.split(",")[2:6] for line in response.text.strip().splitlines()[1:]] == [
        ["OPENING", "", "", "0.00"],
        ["DEBIT", "100.00", "", "-100.00"],
        ["CLOSING", "", "", "-100.00"],
    ]


# --- card refunds as outbox jobs ----------------------------------------------------------------


class ScriptedRefunds:
    """The test provider, whose refunds follow a script: ``"down"`` raises ProviderUnavailable
    before refunding, ``"lost"`` refunds then raises (the answer was lost), ``"refuse"`` raises
    RefundRefused, ``"ok"`` refunds. Every call's idempotency key is kept."""

    def __init__(self, real: TestCardProvider, script: list[str]) -> None:
        self.real = real
        self.name = real.name
        self.script = script
        self.keys: list[str] = []

    async def start(self, intent: PaymentIntent) -> StartedPayment:
        return await self.real.start(intent)

    def parse_event(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> ProviderEvent:
        return self.real.parse_event(headers, body, now=now)

    async def refund(self, reference: str, amount: int, *, idempotency_key: str) -> str:
        self.keys.append(idempotency_key)
        step = self.script.pop(0)
        if step == "down":
            raise ProviderUnavailable("the processor answered 503")
        if step == "refuse":
            raise RefundRefused("the processor refused the refund")
        refund_reference = await self.real.refund(
            reference, amount, idempotency_key=idempotency_key
        )
        if step == "lost":
            raise ProviderUnavailable("the connection dropped before the answer")
        return refund_reference

    async def status(self, reference: str) -> ProviderStatus:
        return await self.real.status(reference)


def scripted(kit: Kit, script: list[str]) -> ScriptedRefunds:
    gateway = kit.api.app.state.payments
    real = gateway.provider("test")
    assert isinstance(real, TestCardProvider)
    fake = ScriptedRefunds(real, script)
    provider: PaymentProvider = fake
    gateway.register(provider)  # the same gateway the app's refund runner uses
    return fake


async def sold_by_card(kit: Kit) -> dict[str, Any]:
    cart = (await kit.cart(kit.seats("C1", 1)))["orderUpdateData"]
    body = await card_close(kit, cart["orderId"], [("CARD", 50_000)])
    assert body["statusCode"] == "success", body
    paid = await pay_on_page(kit, body["paymentUrl"], "4242 4242 4242 4242")
    assert paid.status_code == 303, paid.text
    return await details(kit, cart["orderId"])


async def cancel(kit: Kit, order: dict[str, Any]) -> dict[str, Any]:
    body = await kit.rpc(
        ORDERS,
        "cancelOperations",
        {"orderId": order["orderId"], "operationIds": [order["operations"][0]["operationId"]]},
    )
    assert body["statusCode"] == "success", body
    return body


async def test_a_refund_is_retried_until_the_provider_answers_and_refunds_once(kit: Kit) -> None:
    order = await sold_by_card(kit)
    provider = scripted(kit, ["down", "lost", "ok"])
    await cancel(kit, order)
    work = dispatcher(kit)

    assert [o.state for o in await work.drain()] == ["PENDING"]  # rescheduled with backoff
    (card,) = (await details(kit, order["orderId"]))["cardPayments"]
    (refund,) = card["refunds"]
    assert (refund["state"], refund["attempts"]) == ("PENDING", 1)
    assert "error.payment.provider_unavailable" in refund["lastError"]
    assert await work.drain() == []  # not due before its backoff
    assert await provider_refunds(kit) == []

    kit.later(minutes=1)
    assert [o.state for o in await work.drain()] == ["PENDING"]  # refunded, answer lost
    assert await provider_refunds(kit) == [(card["reference"], 50_000)]
    assert (await details(kit, order["orderId"]))["cardPayments"][0]["refunds"][0][
        "state"
    ] == "PENDING"

    kit.later(minutes=1)
    assert [o.state for o in await work.drain()] == ["DONE"]
    (card,) = (await details(kit, order["orderId"]))["cardPayments"]
    assert (card["paymentState"], card["refundedAmount"]) == ("REFUNDED", 50_000)
    assert [(r["state"], r["attempts"], r["lastError"]) for r in card["refunds"]] == [
        ("SUCCEEDED", 3, None)
    ]
    # one refund at the provider: every attempt carried the refund's own key
    assert await provider_refunds(kit) == [(card["reference"], 50_000)]
    assert provider.keys == [f"refund-{refund['refundId']}"] * 3
    assert await refund_jobs(kit) == [("DONE", 3, None)]


async def test_a_refused_refund_is_failed_and_not_retried(kit: Kit) -> None:
    order = await sold_by_card(kit)
    scripted(kit, ["refuse"])
    await cancel(kit, order)
    assert [o.state for o in await dispatcher(kit).drain()] == ["FAILED"]
    (card,) = (await details(kit, order["orderId"]))["cardPayments"]
    assert card["paymentState"] == "SUCCEEDED" and card["refundedAmount"] == 0
    (refund,) = card["refunds"]
    assert (refund["state"], refund["attempts"]) == ("FAILED", 1)
    assert "error.payment.refund_refused" in refund["lastError"]
    kit.later(days=1)
    assert await dispatcher(kit).drain() == []
    assert await provider_refunds(kit) == []


async def test_the_background_worker_pays_refunds_back(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    """The app's own background loops (as in ``serve``) run the refund job after commit."""
    async with open_kit(scratch_engine, backend.scratch_url, tmp_path) as kit:
        order = await sold_by_card(kit)
    # the same database and clock, served with its background loops on
    async with serve(
        backend.scratch_url, tmp_path, kit.clock, background_tasks=True, outbox_poll_seconds=0.05
    ) as api:
        token = await api.token("ACME_WEB", "web")
        body = (
            await api.rpc(
                ORDERS,
                "cancelOperations",
                {
                    "orderId": order["orderId"],
                    "operationIds": [order["operations"][0]["operationId"]],
                },
                token=token,
            )
        ).json()
        assert body["statusCode"] == "success", body
        for _ in range(200):  # the loop polls every 50 ms; give it up to 10 s on a busy machine
            if await refund_jobs(kit) == [("DONE", 1, None)]:
                break
            await asyncio.sleep(0.05)
        assert await refund_jobs(kit) == [("DONE", 1, None)]
        assert await provider_refunds(kit) == [(order["cardPayments"][0]["reference"], 50_000)]


async def test_the_worker_process_pays_refunds_back(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    """``billetterie worker``, a process of its own, binds the refund job to its own payment
    gateway and pays a cancellation's card refund back."""
    from tests.test_worker import start_worker, stop_worker

    async with open_kit(scratch_engine, backend.scratch_url, tmp_path) as kit:
        order = await sold_by_card(kit)
        await cancel(kit, order)
    assert await refund_jobs(kit) == [("PENDING", 0, None)]
    worker = await start_worker(backend, tmp_path)
    try:
        for _ in range(300):  # it polls every 0.2 s; up to 30 s on a busy machine
            if await refund_jobs(kit) == [("DONE", 1, None)]:
                break
            await asyncio.sleep(0.1)
    finally:
        code, output = await stop_worker(worker)
    assert code == 0, output
    assert await refund_jobs(kit) == [("DONE", 1, None)], output
    assert await provider_refunds(kit) == [(order["cardPayments"][0]["reference"], 50_000)]
