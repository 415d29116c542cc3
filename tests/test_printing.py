"""The external printing interface end to end: the box office and the wallet are each a real
server on 127.0.0.1, and the printing functions talk to the wallet over HTTP only.

sell → inject → the spectator sees her tickets → transfer → feedback gives the box office the
new owner (a contact) → cancel in the box office → push cancelled → DELETION_PENDING → the device
drops it → DELETED → a ticket scanned at the gate becomes CONTROLLED, and so in the wallet.
Then the faults: the wallet down while tickets are sold and injection runs, a wrong API key,
a ticket the wallet cannot take.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog import db as catalog
from billetterie.contacts import db as contacts_db
from billetterie.printing import db as printing_db
from billetterie.printing.models import ExecutionStatus, Function
from billetterie.shared.db import read, transaction
from billetterie_wallet import db as wallet_db
from tests.conftest import Backend
from tests.printing_kit import (
    Office,
    Served,
    open_office,
    wallet_engine,
    wallet_rig,
    wallet_server,
)
from tests.wallet.conftest import Spectator

__all__ = ["wallet_engine", "wallet_rig", "wallet_server"]  # fixtures

PHONE = "device-a-0000000000000001"
ORDERS = "externalOrderService"


@pytest.fixture
async def office(
    scratch_engine: AsyncEngine,
    backend: Backend,
    tmp_path: Path,
    wallet_engine: AsyncEngine,
    wallet_server: Served,
) -> AsyncIterator[Office]:
    async with open_office(
        scratch_engine, backend.scratch_url, tmp_path, wallet_engine, wallet_server.url
    ) as office:
        yield office


async def wallet_tickets(engine: AsyncEngine) -> dict[str, Any]:
    async with wallet_db.read(engine) as conn:
        rows = (await conn.execute(sa.select(wallet_db.ticket))).all()
    return {r.external_id: r for r in rows}


async def history(office: Office, ticket_id: int) -> list[str]:
    h = printing_db.printing_ticket_history.c
    async with read(office.engine) as conn:
        rows = await conn.execute(
            sa.select(h.action).where(h.ticket_id == ticket_id).order_by(h.id)
        )
        return list(rows.scalars())


async def test_sell_inject_transfer_cancel_control(
    office: Office, wallet_engine: AsyncEngine, wallet_server: Served
) -> None:
    order = await office.sell(2)
    first, second = await office.tickets(order["orderId"])
    assert {first.state, second.state} == {"NOT_PRINTED"}

    injected = await office.run(Function.INJECTION)
    assert injected.status == ExecutionStatus.SUCCEEDED
    assert (injected.counts.sent, injected.counts.accepted, injected.counts.failed) == (2, 2, 0)
    first, second = await office.tickets(order["orderId"])
    assert {first.state, second.state} == {"PRINTED"}
    in_wallet = await wallet_tickets(wallet_engine)
    assert set(in_wallet) == {str(first.id), str(second.id)}
    assert in_wallet[str(first.id)].barcode == first.barcode  # the signed barcode as printed
    again = await office.run(Function.INJECTION)
    assert (again.status, again.counts.sent) == (ExecutionStatus.SUCCEEDED, 0)

    # The spectator sees both tickets in her wallet, under the performance.
    ada = await Spectator(wallet_server.url, wallet_engine, "ada@example.org", PHONE).sign_in()
    events = (await ada.wallet())["events"]
    assert [t["ticketId"] for e in events for t in e["tickets"]] == [
        str(first.id),
        str(second.id),
    ]
    async with read(office.engine) as conn:
        start = (
            await conn.execute(
                sa.select(catalog.performance.c.start).where(
                    catalog.performance.c.id == first.performance_id
                )
            )
        ).scalar_one()
    assert (events[0]["name"], events[0]["start"]) == ("Show", start.isoformat())
    assert {t["status"] for t in events[0]["tickets"]} == {"INJECTED"}

    # Ada transfers the first ticket to Bob, who accepts it.
    pk = await ada.ticket_pk(str(first.id))
    offered = await ada.form(f"/app/tickets/{pk}/transfer", email="bob@example.org")
    assert offered.status_code == 303
    bob = await Spectator(wallet_server.url, wallet_engine, "bob@example.org").sign_in()
    async with wallet_db.read(wallet_engine) as conn:
        offer = (await conn.execute(sa.select(wallet_db.transfer.c.id))).scalar_one()
    accepted = await bob.form(f"/app/transfers/{offer}/accept")
    assert accepted.status_code == 303

    feedback = await office.run(Function.FEEDBACK)
    assert feedback.status == ExecutionStatus.SUCCEEDED, feedback.error
    row = await office.printed(first.id)
    assert (row.mobile_status, row.wallet_owner, row.transfer_count) == (
        "TRANSFERRED",
        "bob@example.org",
        1,
    )
    async with read(office.engine) as conn:
        contact = (
            await conn.execute(
                sa.select(contacts_db.contact).where(
                    contacts_db.contact.c.id == int(row.owner_contact_number)
                )
            )
        ).one()
    assert contact.email == "bob@example.org"
    assert contact.institution_id == office.kit.shop.institution_id
    assert (await history(office, first.id))[-2:] == ["transfer.offered", "transfer.accepted"]
    untouched = await office.printed(second.id)
    assert (untouched.wallet_owner, untouched.owner_contact_number) == ("ada@example.org", None)
    # Nothing new in the feed: the stored key moves nothing, stores nothing twice.
    quiet = await office.run(Function.FEEDBACK)
    assert (quiet.counts.sent, quiet.counts.accepted) == (0, 0)
    assert (await history(office, first.id))[-2:] == ["transfer.offered", "transfer.accepted"]

    # Ada opens the second ticket on her phone; the box office cancels it.
    pk2 = await ada.ticket_pk(str(second.id))
    await ada.http.get(f"/app/tickets/{pk2}")
    movement = next(
        m["movementId"]
        for op in order["operations"]
        for m in op["movements"]
        if m["movementId"] == second.movement_id
    )
    cancelled = await office.kit.rpc(
        ORDERS, "cancelOperations", {"orderId": order["orderId"], "movementIds": [movement]}
    )
    assert cancelled["statusCode"] == "success", cancelled
    pushed = await office.run(Function.PUSH_CANCELLED)
    assert (pushed.status, pushed.counts.sent, pushed.counts.accepted) == (
        ExecutionStatus.SUCCEEDED,
        1,
        1,
    )
    assert (await office.printed(second.id)).mobile_status == "DELETION_PENDING"
    assert (await wallet_tickets(wallet_engine))[str(second.id)].state == "DELETION_PENDING"
    assert (await office.run(Function.PUSH_CANCELLED)).counts.sent == 0  # processed once
    # The phone drops it: DELETED, which feedback brings back.
    await ada.http.get("/app/tickets")
    assert (await wallet_tickets(wallet_engine))[str(second.id)].state == "DELETED"
    await office.run(Function.FEEDBACK)
    assert (await office.printed(second.id)).mobile_status == "DELETED"

    # Bob's ticket is scanned at the gate: CONTROLLED in the box office, then in the wallet.
    controlled = await office.kit.api.rpc(
        "accessControlService",
        "controlTicket",
        {"barcode": first.barcode, "scanner": "gate-1"},
        token=office.kit.tokens["web"],
        module="tnci",
    )
    assert controlled.json()["statusCode"] == "success", controlled.text
    assert controlled.json()["firstControl"] is True
    assert (await office.tickets(order["orderId"]))[0].state == "CONTROLLED"
    pushed = await office.run(Function.PUSH_CONTROLLED)
    assert (pushed.counts.sent, pushed.counts.accepted) == (1, 1)
    assert (await wallet_tickets(wallet_engine))[str(first.id)].state == "CONTROLLED"
    assert (await office.printed(first.id)).controlled_pushed_at is not None
    assert (await office.run(Function.PUSH_CONTROLLED)).counts.sent == 0
    for spectator in (ada, bob):
        await spectator.close()

    # Every run is in the execution log the operator reads.
    response = await office.kit.api.client.get(
        "/api/v1/printing/executions",
        headers={"Authorization": f"Bearer {office.kit.tokens['web']}"},
    )
    assert response.status_code == 200, response.text
    runs = response.json()["executions"]
    assert [r["function"] for r in runs] == [
        "push-controlled",
        "push-controlled",
        "feedback",
        "push-cancelled",
        "push-cancelled",
        "feedback",
        "feedback",
        "injection",
        "injection",
    ]
    assert runs[-1] | {"id": 0, "startedAt": "", "finishedAt": ""} == {
        "id": 0,
        "interface": "WALLET",
        "function": "injection",
        "trigger": "cli",
        "status": "SUCCEEDED",
        "startedAt": "",
        "finishedAt": "",
        "sent": 2,
        "accepted": 2,
        "failed": 0,
        "error": None,
    }


async def test_control_refuses_forged_revoked_and_unknown_barcodes(office: Office) -> None:
    order = await office.sell(2)
    first, second = await office.tickets(order["orderId"])

    async def control(barcode: str) -> dict[str, Any]:
        response = await office.kit.api.rpc(
            "accessControlService",
            "controlTicket",
            {"barcode": barcode},
            token=office.kit.tokens["web"],
            module="tnci",
        )
        assert response.status_code in (200, 400, 404, 409), response.text
        body: dict[str, Any] = response.json()
        return body

    forged = first.barcode[:-4] + ("AAAA" if not first.barcode.endswith("AAAA") else "BBBB")
    assert (await control(forged))["statusCode"] == "error.barcode.invalid_signature"
    assert (await control("nonsense"))["statusCode"] == "error.barcode.malformed"
    movement = second.movement_id
    await office.kit.rpc(
        ORDERS, "cancelOperations", {"orderId": order["orderId"], "movementIds": [movement]}
    )
    assert (await control(second.barcode))["statusCode"] == "error.ticket.revoked"
    states = [t.state for t in await office.tickets(order["orderId"])]
    assert states == ["NOT_PRINTED", "CANCELLED"]  # nothing moved
    assert (await control(first.barcode))["firstControl"] is True
    assert (await control(first.barcode))["firstControl"] is False
    anonymous = await office.kit.api.rpc(
        "accessControlService",
        "controlTicket",
        {"barcode": first.barcode},
        token=None,
        module="tnci",
    )
    assert anonymous.status_code == 401


async def test_the_wallet_down_then_back_injects_every_ticket_once(
    office: Office, wallet_engine: AsyncEngine, wallet_server: Served
) -> None:
    wallet_server.stop()
    orders = [await office.sell(2) for _ in range(3)]
    failed = await office.run(Function.INJECTION)
    assert failed.status == ExecutionStatus.FAILED
    assert failed.error is not None and failed.error.startswith("error.printing.wallet")
    # The run stops at its first call, the barcode keys' registration: no ticket was sent.
    assert (failed.counts.sent, failed.counts.accepted) == (0, 0)
    tickets = [t for o in orders for t in await office.tickets(o["orderId"])]
    assert {t.state for t in tickets} == {"NOT_PRINTED"}
    async with read(office.engine) as conn:
        assert (
            await conn.execute(sa.select(sa.func.count()).select_from(printing_db.printing_ticket))
        ).scalar_one() == 0

    wallet_server.start()  # back on the same port
    more = await office.sell(1)
    recovered = await office.run(Function.INJECTION)
    assert recovered.status == ExecutionStatus.SUCCEEDED
    assert (recovered.counts.sent, recovered.counts.accepted) == (7, 7)
    assert (await office.run(Function.INJECTION)).counts.sent == 0
    tickets += await office.tickets(more["orderId"])
    assert {
        t.state for t in [t for o in [*orders, more] for t in await office.tickets(o["orderId"])]
    } == {"PRINTED"}
    in_wallet = await wallet_tickets(wallet_engine)
    assert sorted(in_wallet) == sorted(str(t.id) for t in tickets)
    async with wallet_db.read(wallet_engine) as conn:
        injections = (
            await conn.execute(
                sa.select(wallet_db.ticket_log.c.ticket_id, sa.func.count())
                .where(wallet_db.ticket_log.c.action == "ticket.injected")
                .group_by(wallet_db.ticket_log.c.ticket_id)
            )
        ).all()
    assert len(injections) == 7 and {n for _, n in injections} == {1}


async def test_refused_items_stay_for_the_next_run_and_a_wrong_key_is_final(
    office: Office, wallet_engine: AsyncEngine
) -> None:
    anonymous = await office.sell(1, email=None)  # no email: no wallet owner
    named = await office.sell(1)
    result = await office.run(Function.INJECTION)
    assert result.status == ExecutionStatus.PARTIAL
    assert (result.counts.sent, result.counts.accepted, result.counts.failed) == (1, 1, 1)
    assert [t.state for t in await office.tickets(anonymous["orderId"])] == ["NOT_PRINTED"]
    assert [t.state for t in await office.tickets(named["orderId"])] == ["PRINTED"]
    assert (await office.run(Function.INJECTION)).counts.failed == 1  # still there, still refused

    p = printing_db.printing_interface.c
    async with transaction(office.engine) as conn:
        await conn.execute(sa.update(printing_db.printing_interface).values(api_key="bwk_x" * 8))
    again = await office.sell(1)
    refused = await office.run(Function.INJECTION)
    assert refused.status == ExecutionStatus.FAILED
    assert refused.error is not None and "401" in refused.error
    assert [t.state for t in await office.tickets(again["orderId"])] == ["NOT_PRINTED"]
    assert p is not None


async def buy_card(office: Office) -> dict[str, Any]:
    """A membership card (CARDM) bought by Ada with her credit; the closed order's cart."""
    from billetterie.sales.accounts import add_credit
    from tests.conftest import NOW

    kit = office.kit
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
            "externalOrderFacade",
            "createOrUpdateOrder",
            {
                "simpleProductOperations": [
                    {
                        "itemId": kit.shop.items["CARDM"],
                        "audienceSubCategoryId": kit.tariffs["FULL"],
                        "quantity": 1,
                    }
                ],
                "purchasersInfo": [
                    {"firstName": "Ada", "lastName": "L", "email": "ada@example.org"}
                ],
            },
        )
    )["orderUpdateData"]
    closed = await kit.close(cart["orderId"], [("CREDIT", 60_000)], contact="C-1")
    assert closed["statusCode"] == "success", closed
    return dict(cart)


async def test_membership_cards_are_injected_as_digital_privileges(
    office: Office, wallet_engine: AsyncEngine, wallet_server: Served
) -> None:
    cart = await buy_card(office)
    seats = await office.sell(1)
    [card] = await office.tickets(cart["orderId"])

    # Injection leaves the card alone; privileges injection takes only the card.
    tickets = await office.run(Function.INJECTION)
    assert (tickets.counts.sent, tickets.counts.accepted) == (1, 1)
    assert [t.state for t in await office.tickets(cart["orderId"])] == ["NOT_PRINTED"]
    privileges = await office.run(Function.PRIVILEGES)
    assert privileges.status == ExecutionStatus.SUCCEEDED, privileges.error
    assert (privileges.counts.sent, privileges.counts.accepted) == (1, 1)
    assert [t.state for t in await office.tickets(cart["orderId"])] == ["PRINTED"]
    assert (await office.printed(card.id)).kind == "PRIVILEGE"
    assert (await office.run(Function.PRIVILEGES)).counts.sent == 0
    ada = await Spectator(wallet_server.url, wallet_engine, "ada@example.org").sign_in()
    wallet = await ada.wallet()
    assert [(p["privilegeId"], p["kind"], p["barcode"]) for p in wallet["privileges"]] == [
        (str(card.id), "MEMBERSHIP", card.barcode)
    ]
    assert [t["ticketId"] for e in wallet["events"] for t in e["tickets"]] == [
        str(t.id) for t in await office.tickets(seats["orderId"])
    ]

    # The card is cancelled in the box office: push cancelled revokes the privilege.
    cancelled = await office.kit.rpc(
        ORDERS, "cancelOperations", {"orderId": cart["orderId"], "movementIds": [card.movement_id]}
    )
    assert cancelled["statusCode"] == "success", cancelled
    assert [t.state for t in await office.tickets(cart["orderId"])] == ["CANCELLED"]
    pushed = await office.run(Function.PUSH_CANCELLED)
    assert (pushed.status, pushed.counts.sent, pushed.counts.accepted) == (
        ExecutionStatus.SUCCEEDED,
        1,
        1,
    )
    row = await office.printed(card.id)
    assert (row.mobile_status, row.deletion_pushed_at is not None) == ("DELETED", True)
    async with wallet_db.read(wallet_engine) as conn:
        state, reason = (
            await conn.execute(
                sa.select(wallet_db.privilege.c.state, wallet_db.privilege.c.deletion_reason)
            )
        ).one()
        tickets_in_wallet = (
            (await conn.execute(sa.select(wallet_db.ticket.c.state))).scalars().all()
        )
    assert (state, reason) == ("DELETED", "CANCELLED")
    assert tickets_in_wallet == ["INJECTED"]  # the seat's ticket is not touched
    assert (await ada.wallet())["privileges"] == []
    used = await office.http.post(
        f"{wallet_server.url}/api/v1/organizer/privileges/{card.id}/use",
        headers={"Authorization": f"Bearer {office.organizer_key}"},
    )
    assert used.status_code == 409 and used.json()["code"] == "error.privilege.deleted"
    assert (await office.run(Function.PUSH_CANCELLED)).counts.sent == 0  # processed once
    assert (await office.run(Function.PRIVILEGES)).counts.sent == 0  # not injected again
    await ada.close()


async def test_a_transient_failure_is_retried_within_the_run(
    office: Office, wallet_server: Served
) -> None:
    """The wallet comes back while the run waits between its retries: one run, SUCCEEDED."""
    import asyncio

    from billetterie.printing.tasks import run_function

    wallet_server.stop()
    order = await office.sell(2)
    run = asyncio.create_task(
        run_function(
            office.engine,
            await office.interface(),
            Function.INJECTION,
            http=office.http,
            clock=office.kit.clock,
            delays=(0.5, 1.0, 2.0, 4.0),
        )
    )
    await asyncio.sleep(0.2)
    await asyncio.to_thread(wallet_server.start)
    result = await run
    assert result.status == ExecutionStatus.SUCCEEDED, result.error
    assert (result.counts.sent, result.counts.accepted) == (2, 2)
    assert [t.state for t in await office.tickets(order["orderId"])] == ["PRINTED", "PRINTED"]
    async with read(office.engine) as conn:
        e = printing_db.printing_execution.c
        assert (await conn.execute(sa.select(e.status))).scalars().all() == ["SUCCEEDED"]


async def test_the_wallet_scanner_checks_the_box_office_signature(
    office: Office, wallet_server: Served, backend: Backend, tmp_path: Path
) -> None:
    """Injection registers the box office's barcode keys with the wallet; its scanner admits
    the box office's barcodes, refuses a forged one, keeps admitting a rotated key's barcodes
    and refuses them once the key is retired (and the next injection told the wallet)."""
    import base64
    import dataclasses

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from billetterie.sales import barcode_keys, barcodes
    from billetterie_wallet import rotating
    from tests.conftest import NOW, settings_for

    wallet = httpx.AsyncClient(
        base_url=wallet_server.url, headers={"Authorization": f"Bearer {office.organizer_key}"}
    )
    institution_id = office.kit.shop.institution_id

    async def box_office_keys() -> list[dict[str, Any]]:
        async with read(office.engine) as conn:
            keys = await barcode_keys.public_keys(conn, institution_id=institution_id)
        return [
            {"keyId": k.key_id, "publicKey": base64.b64encode(k.public_key).decode()} for k in keys
        ]

    async def scan(barcode: str, performance_id: int) -> dict[str, Any]:
        group = f"PERF-{performance_id}"
        secret = (await wallet.get(f"/api/v1/organizer/activation-groups/{group}")).json()
        ticket_secret = rotating.ticket_secret(base64.b64decode(secret["secret"]), barcode)
        code = rotating.payload(group, barcode, rotating.totp(ticket_secret, NOW))
        response = await wallet.post("/api/v1/scanner/validate", json={"code": code})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def refusal(body: dict[str, Any]) -> tuple[str, str | None]:
        return body["result"], body.get("code")

    try:
        first, second, third = await office.tickets((await office.sell(3))["orderId"])
        assert (await office.run(Function.INJECTION)).counts.accepted == 3
        [old_key] = await box_office_keys()
        held = (await wallet.get("/api/v1/organizer/barcode-keys")).json()["keys"]
        assert [(k["keyId"], k["publicKey"], k["state"]) for k in held] == [
            (old_key["keyId"], old_key["publicKey"], "VERIFIABLE")
        ]
        assert (await scan(first.barcode, first.performance_id))["result"] == "VALID"
        # The same claims signed by another key under the box office's key id: refused.
        payload, _, _ = barcodes.decode(second.barcode)
        forged = barcodes.issue(
            dataclasses.replace(payload, ticket_id=999_999), Ed25519PrivateKey.generate()
        )
        assert refusal(await scan(forged, second.performance_id)) == (
            "INVALID_BARCODE",
            "error.barcode.invalid_signature",
        )

        # A rotation: tickets sold afterwards carry the new key, unknown to the wallet until
        # the next injection registers it; the previous key keeps verifying.
        vault = barcode_keys.KeyVault(
            settings_for(backend.scratch_url, tmp_path).resolved_barcode_key_secret()
        )
        async with read(office.engine) as conn:
            [info] = await barcode_keys.public_keys(conn, institution_id=institution_id)
        async with transaction(office.engine) as conn:
            new_key = await barcode_keys.rotate(
                conn,
                vault,
                institution_id=institution_id,
                organization_id=info.organization_id,
                now=NOW,
                actor="test",
            )
        [fourth] = await office.tickets((await office.sell(1))["orderId"])
        assert barcodes.decode(fourth.barcode)[0].key_id == new_key.key_id
        assert refusal(await scan(fourth.barcode, fourth.performance_id)) == (
            "INVALID_BARCODE",
            "error.barcode.unknown_key",
        )
        assert (await office.run(Function.INJECTION)).counts.accepted == 1
        assert (await scan(fourth.barcode, fourth.performance_id))["result"] == "VALID"
        assert (await scan(second.barcode, second.performance_id))["result"] == "VALID"

        # The previous key retired in the box office: after the next injection run (nothing to
        # inject, the keys registered all the same) the wallet refuses its barcodes.
        async with transaction(office.engine) as conn:
            await barcode_keys.retire(
                conn, institution_id=institution_id, key_id=info.key_id, now=NOW, actor="test"
            )
        assert (await office.run(Function.INJECTION)).counts.sent == 0
        held = (await wallet.get("/api/v1/organizer/barcode-keys")).json()["keys"]
        assert [(k["keyId"], k["state"]) for k in held] == [
            (info.key_id, "RETIRED"),
            (new_key.key_id, "VERIFIABLE"),
        ]
        assert [k["keyId"] for k in await box_office_keys()] == [new_key.key_id]
        assert refusal(await scan(third.barcode, third.performance_id)) == (
            "INVALID_BARCODE",
            "error.barcode.unknown_key",
        )
        assert (await scan(fourth.barcode, fourth.performance_id))["result"] == "DUPLICATE"
    finally:
        await wallet.aclose()
