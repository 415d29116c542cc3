"""The spectator side over real HTTP: accounts (password with a confirmed address, one-time
links), CSRF, the device registry, holder, transfer (accept, reject, cancel, timeout, limits,
rules), resale, and deletion that waits for every holding device (or a timeout)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie_wallet import db
from billetterie_wallet.app import build_app
from billetterie_wallet.clock import FixedClock
from billetterie_wallet.services.organizer_ops import sweep
from tests.conftest import NOW
from tests.wallet import factories
from tests.wallet.conftest import (
    OrganizerClient,
    Spectator,
    ThreadServer,
    WalletBackend,
    wallet_settings,
)

DEVICE_A = "device-a-0000000000000001"
DEVICE_B = "device-b-0000000000000002"


async def statuses(organizer: OrganizerClient) -> dict[str, str]:
    """Every changed ticket's status, from the feedback consumer's recorded position (tests
    never present a key here, so the position stays at the start)."""
    response = await organizer.http.get("/api/v1/organizer/feedback", params={"limit": 1000})
    feed = response.json()
    return {t["ticketId"]: t["status"] for t in feed["tickets"]}


async def log_actions(engine: AsyncEngine, ticket_id: str) -> list[tuple[str, str, str | None]]:
    async with db.read(engine) as conn:
        rows = (
            await conn.execute(
                sa.select(db.ticket_log.c.action, db.ticket_log.c.actor, db.ticket_log.c.device)
                .join(db.ticket, db.ticket.c.id == db.ticket_log.c.ticket_id)
                .where(db.ticket.c.external_id == ticket_id)
                .order_by(db.ticket_log.c.seq)
            )
        ).all()
    return [(r.action, r.actor, r.device) for r in rows]


async def test_password_account_needs_a_confirmed_address(
    wallet_server: str, wallet_engine: AsyncEngine
) -> None:
    spectator = Spectator(wallet_server, wallet_engine, "grace@example.org")
    weak = await spectator.form("/app/register", email="grace@example.org", password="short")
    assert weak.headers["location"] == "/app/register?error=error.spectator.weak_password"
    made = await spectator.form("/app/register", email="grace@example.org", password="s3cret-pass")
    assert made.headers["location"] == "/app/login?done=registered"
    taken = await spectator.form("/app/register", email="GRACE@example.org", password="x" * 9)
    assert taken.headers["location"] == "/app/register?error=error.spectator.email_taken"
    early = await spectator.form("/app/login", email="grace@example.org", password="s3cret-pass")
    assert early.headers["location"] == "/app/login?error=error.spectator.unverified"
    token = await factories.last_link(wallet_engine, "grace@example.org")
    confirm_page = await spectator.http.get(f"/app/login/link/{token}")
    assert confirm_page.status_code == 200 and "Continue to my tickets" in confirm_page.text
    assert (await spectator.form(f"/app/login/link/{token}")).headers["location"] == "/app/tickets"
    reused = await spectator.form(f"/app/login/link/{token}")
    assert reused.headers["location"] == "/app/login?error=error.spectator.invalid_link"
    await spectator.form("/app/logout")
    wrong = await spectator.form("/app/login", email="grace@example.org", password="nope-nope")
    assert wrong.headers["location"] == "/app/login?error=error.spectator.bad_credentials"
    right = await spectator.form("/app/login", email="grace@example.org", password="s3cret-pass")
    assert right.headers["location"] == "/app/tickets"
    page = await spectator.http.get("/app/tickets")
    assert page.status_code == 200 and "grace@example.org" in page.text
    await spectator.close()


async def test_links_expire_and_forms_need_the_csrf_token(
    wallet_server: str, wallet_engine: AsyncEngine, wallet_clock: FixedClock
) -> None:
    spectator = Spectator(wallet_server, wallet_engine, "ada@example.org")
    await spectator.form("/app/login/link", email="ada@example.org")
    token = await factories.last_link(wallet_engine, "ada@example.org")
    wallet_clock.advance(16 * 60)
    late = await spectator.form(f"/app/login/link/{token}")
    assert late.headers["location"] == "/app/login?error=error.spectator.invalid_link"
    await spectator.form("/app/login/link", email="ada@example.org")
    token = await factories.last_link(wallet_engine, "ada@example.org")
    forged = await spectator.http.post(f"/app/login/link/{token}", data={"csrf_token": "x" * 24})
    assert forged.status_code == 403
    missing = await spectator.http.post(f"/app/login/link/{token}")
    assert missing.status_code == 403
    assert "bw_session" not in spectator.http.cookies
    # The link was not spent by the refused posts.
    assert (await spectator.form(f"/app/login/link/{token}")).headers["location"] == "/app/tickets"
    async with httpx.AsyncClient(base_url=wallet_server) as anonymous:
        assert (await anonymous.get("/app/tickets")).headers["location"] == "/app/login"
        api = await anonymous.get("/app/api/wallet")
        assert api.status_code == 401
        assert api.json()["code"] == "error.auth.sign_in"
    await spectator.close()


async def test_download_assign_and_device_registry(
    organizer: OrganizerClient, spectators: Any, wallet_engine: AsyncEngine
) -> None:
    await organizer.inject(factories.ticket("T-01"))
    ada: Spectator = await spectators("ada@example.org", DEVICE_A)
    other: Spectator = await spectators("eve@example.org", DEVICE_B)
    pk = await ada.ticket_pk("T-01")
    assert (await other.wallet())["events"] == []
    assert (await other.http.get(f"/app/tickets/{pk}")).headers["location"] == (
        "/app/tickets?error=error.ticket.unknown"
    )
    page = await ada.http.get(f"/app/tickets/{pk}")
    assert page.status_code == 200 and "Concert EV1" in page.text
    saved = await ada.form(f"/app/tickets/{pk}/holder", first_name="Charles", last_name="Babbage")
    assert saved.headers["location"] == f"/app/tickets/{pk}?done=holder"
    feed = await organizer.feedback()
    entry = feed["tickets"][0]
    assert entry["status"] == "ASSIGNED"
    assert entry["holder"] == {"firstName": "Charles", "lastName": "Babbage"}
    assert [(e["action"], e["device"]) for e in entry["logEntries"]] == [
        ("ticket.injected", None),
        ("ticket.downloaded", DEVICE_A),
        ("ticket.assigned", DEVICE_A),
    ]
    async with db.read(wallet_engine) as conn:
        devices = (
            await conn.execute(sa.select(db.device.c.device_uid).order_by(db.device.c.id))
        ).all()
    assert [d[0] for d in devices] == [DEVICE_A, DEVICE_B]
    empty = await ada.form(f"/app/tickets/{pk}/holder", first_name=" ", last_name="B")
    assert empty.headers["location"] == f"/app/tickets/{pk}?error=error.holder.invalid"


async def test_transfer_accept_then_limit(
    organizer: OrganizerClient, spectators: Any, wallet_engine: AsyncEngine
) -> None:
    await organizer.inject(
        factories.ticket("T-01", rules={"transferable": True, "maxTransfers": 1})
    )
    ada: Spectator = await spectators("ada@example.org", DEVICE_A)
    bob: Spectator = await spectators("bob@example.org", DEVICE_B)
    pk = await ada.ticket_pk("T-01")
    await ada.http.get(f"/app/tickets/{pk}")
    to_self = await ada.form(f"/app/tickets/{pk}/transfer", email="ada@example.org")
    assert to_self.headers["location"].endswith("error=error.transfer.not_allowed")
    offered = await ada.form(f"/app/tickets/{pk}/transfer", email="Bob@Example.org")
    assert offered.headers["location"] == f"/app/tickets/{pk}?done=offered"
    assert (await statuses(organizer))["T-01"] == "PENDING_TRANSFER"
    twice = await ada.form(f"/app/tickets/{pk}/transfer", email="carol@example.org")
    assert twice.headers["location"].endswith("error=error.transfer.not_allowed")
    bob_wallet = await bob.http.get("/app/tickets")
    assert "Tickets offered to you" in bob_wallet.text
    async with db.read(wallet_engine) as conn:
        offer_id = (await conn.execute(sa.select(db.transfer.c.id))).scalar_one()
        mail = (
            await conn.execute(
                sa.select(db.mail_outbox.c.subject)
                .where(db.mail_outbox.c.to_email == "bob@example.org")
                .order_by(db.mail_outbox.c.id.desc())
            )
        ).first()
    assert mail is not None and mail[0] == "ada@example.org sends you a ticket"
    # Only the recipient can answer.
    stolen = await ada.form(f"/app/transfers/{offer_id}/accept")
    assert stolen.headers["location"] == "/app/tickets?error=error.transfer.unknown"
    accepted = await bob.form(f"/app/transfers/{offer_id}/accept")
    assert accepted.headers["location"] == f"/app/tickets/{pk}?done=accepted"
    assert (await ada.wallet())["events"] == []
    assert await bob.ticket_pk("T-01") == pk
    feed = await organizer.feedback()
    entry = feed["tickets"][0]
    assert entry["status"] == "TRANSFERRED"
    assert entry["walletOwner"] == {"email": "bob@example.org"}
    assert entry["transferCount"] == 1
    # maxTransfers = 1: the new owner cannot pass it on.
    again = await bob.form(f"/app/tickets/{pk}/transfer", email="carol@example.org")
    assert again.headers["location"] == f"/app/tickets/{pk}?error=error.transfer.limit_reached"
    assert (await factories.ticket_row(wallet_engine, "T-01")).state == "TRANSFERRED"


async def test_transfer_reject_cancel_and_timeout(
    organizer: OrganizerClient,
    spectators: Any,
    wallet_engine: AsyncEngine,
    wallet_clock: FixedClock,
) -> None:
    await organizer.inject(factories.ticket("T-01"))
    ada: Spectator = await spectators("ada@example.org", DEVICE_A)
    bob: Spectator = await spectators("bob@example.org", DEVICE_B)
    pk = await ada.ticket_pk("T-01")
    await ada.http.get(f"/app/tickets/{pk}")

    await ada.form(f"/app/tickets/{pk}/transfer", email="bob@example.org")
    cancelled = await ada.form(f"/app/tickets/{pk}/transfer/cancel")
    assert cancelled.headers["location"] == f"/app/tickets/{pk}?done=cancelled"
    assert (await statuses(organizer))["T-01"] == "DOWNLOADED"
    nothing = await ada.form(f"/app/tickets/{pk}/transfer/cancel")
    assert nothing.headers["location"].endswith("error=error.transfer.unknown")

    await ada.form(f"/app/tickets/{pk}/transfer", email="bob@example.org")
    async with db.read(wallet_engine) as conn:
        open_offer = (
            await conn.execute(sa.select(db.transfer.c.id).where(db.transfer.c.state == "PENDING"))
        ).scalar_one()
    rejected = await bob.form(f"/app/transfers/{open_offer}/reject")
    assert rejected.headers["location"] == "/app/tickets?done=rejected"
    assert (await statuses(organizer))["T-01"] == "FAILURE_TRANSFER"
    assert (
        (await bob.form(f"/app/transfers/{open_offer}/accept"))
        .headers["location"]
        .endswith("error=error.transfer.closed")
    )
    assert await ada.ticket_pk("T-01") == pk

    await ada.form(f"/app/tickets/{pk}/transfer", email="bob@example.org")
    wallet_clock.advance(7200)  # the offer's lifetime (transfer_timeout_seconds)
    async with db.read(wallet_engine) as conn:
        late_offer = (
            await conn.execute(sa.select(db.transfer.c.id).where(db.transfer.c.state == "PENDING"))
        ).scalar_one()
    too_late = await bob.form(f"/app/transfers/{late_offer}/accept")
    assert too_late.headers["location"].endswith("error=error.transfer.closed")
    counts = await sweep(wallet_engine, now=wallet_clock.now(), deletion_timeout=timedelta(hours=1))
    assert counts == {"deleted": 0, "expired_transfers": 1}
    assert (await statuses(organizer))["T-01"] == "FAILURE_TRANSFER"
    assert [a for a, _, _ in await log_actions(wallet_engine, "T-01")] == [
        "ticket.injected",
        "ticket.downloaded",
        "transfer.offered",
        "transfer.cancelled",
        "transfer.offered",
        "transfer.rejected",
        "transfer.offered",
        "transfer.expired",
    ]
    # Nothing was counted as a transfer.
    assert (await factories.ticket_row(wallet_engine, "T-01")).transfer_count == 0


async def test_organizer_rules_and_controlled(
    organizer: OrganizerClient, spectators: Any, wallet_clock: FixedClock
) -> None:
    await organizer.inject(
        factories.ticket("T-01", rules={"transferable": False}),
        factories.ticket(
            "T-02",
            rules={
                "transferable": True,
                "transferDeadline": (NOW + timedelta(hours=1)).isoformat(),
            },
        ),
        factories.ticket("T-03"),
    )
    ada: Spectator = await spectators("ada@example.org", DEVICE_A)
    pks = {t: await ada.ticket_pk(t) for t in ("T-01", "T-02", "T-03")}
    refused = await ada.form(f"/app/tickets/{pks['T-01']}/transfer", email="bob@example.org")
    assert refused.headers["location"].endswith("error=error.transfer.not_allowed")
    no_resale = await ada.form(f"/app/tickets/{pks['T-01']}/resale")
    assert no_resale.headers["location"].endswith("error=error.resale.not_allowed")
    wallet_clock.advance(3600)
    past = await ada.form(f"/app/tickets/{pks['T-02']}/transfer", email="bob@example.org")
    assert past.headers["location"].endswith("error=error.transfer.not_allowed")
    # An offer in flight is withdrawn when the ticket is controlled.
    await ada.form(f"/app/tickets/{pks['T-03']}/transfer", email="bob@example.org")
    await organizer.post("/api/v1/organizer/tickets/controlled", {"ticketIds": ["T-03"]})
    assert (await statuses(organizer))["T-03"] == "CONTROLLED"
    after = await ada.form(f"/app/tickets/{pks['T-03']}/transfer", email="carol@example.org")
    assert after.headers["location"].endswith("error=error.transfer.not_allowed")
    bob: Spectator = await spectators("bob@example.org", DEVICE_B)
    assert "Tickets offered to you" not in (await bob.http.get("/app/tickets")).text


async def test_return_for_resale(organizer: OrganizerClient, spectators: Any) -> None:
    await organizer.inject(factories.ticket("T-01"))
    ada: Spectator = await spectators("ada@example.org", DEVICE_A)
    pk = await ada.ticket_pk("T-01")
    returned = await ada.form(f"/app/tickets/{pk}/resale")
    assert returned.headers["location"] == "/app/tickets?done=returned"
    assert (await ada.wallet())["events"] == []
    feed = await organizer.feedback()
    assert feed["tickets"][0]["status"] == "RETURNED_FOR_RESALE"
    assert feed["tickets"][0]["logEntries"][-1]["actor"] == "ada@example.org"
    again = await ada.form(f"/app/tickets/{pk}/resale")
    assert again.headers["location"].endswith("error=error.resale.not_allowed")


async def test_deletion_waits_for_every_device(
    organizer: OrganizerClient, spectators: Any, wallet_engine: AsyncEngine
) -> None:
    await organizer.inject(factories.ticket("T-01"), factories.ticket("T-02"))
    phone: Spectator = await spectators("ada@example.org", DEVICE_A)
    tablet: Spectator = await spectators("ada@example.org", DEVICE_B)
    pk = await phone.ticket_pk("T-01")
    await phone.http.get(f"/app/tickets/{pk}")
    await tablet.http.get(f"/app/tickets/{pk}")
    result = await organizer.post(
        "/api/v1/organizer/tickets/delete", {"ticketIds": ["T-01", "T-02"]}
    )
    # T-02 was never opened on a device: nothing to wait for.
    assert result.json()["results"] == [
        {"ticketId": "T-01", "status": "DELETION_PENDING"},
        {"ticketId": "T-02", "status": "DELETED"},
    ]
    wallet = await phone.wallet()
    assert wallet["deletions"] == [{"id": pk, "ticketId": "T-01"}]
    # Reading the JSON wallet acknowledges nothing: an installed app says when it dropped it.
    assert (await statuses(organizer))["T-01"] == "DELETION_PENDING"
    assert (await phone.wallet())["deletions"] == [{"id": pk, "ticketId": "T-01"}]
    acked = await phone.http.post(
        "/app/api/devices/acknowledge", json={"ids": [pk]}, headers={"X-CSRF-Token": phone.csrf}
    )
    assert acked.json() == {"deleted": []}  # the tablet still holds it
    assert (await statuses(organizer))["T-01"] == "DELETION_PENDING"
    no_token = await tablet.http.post("/app/api/devices/acknowledge", json={"ids": [pk]})
    assert no_token.status_code == 403
    assert (await phone.wallet())["deletions"] == []
    assert (await tablet.wallet())["deletions"] == [{"id": pk, "ticketId": "T-01"}]
    assert (await statuses(organizer))["T-01"] == "DELETION_PENDING"
    # Rendering the wallet page drops it on the tablet: the last holder.
    page = await tablet.http.get("/app/tickets")
    assert "Concert EV1" not in page.text
    assert (await statuses(organizer))["T-01"] == "DELETED"
    actions = await log_actions(wallet_engine, "T-01")
    assert actions[-2:] == [
        ("ticket.deletion_requested", "organizer:DEMO", None),
        ("ticket.deleted", "device", DEVICE_B),
    ]
    again = await organizer.post("/api/v1/organizer/tickets/delete", {"ticketIds": ["T-01"]})
    assert again.json()["results"] == [{"ticketId": "T-01", "status": "DELETED"}]


async def test_deletion_times_out_for_a_silent_device(
    organizer: OrganizerClient,
    spectators: Any,
    wallet_engine: AsyncEngine,
    wallet_clock: FixedClock,
) -> None:
    await organizer.inject(factories.ticket("T-01"))
    phone: Spectator = await spectators("ada@example.org", DEVICE_A)
    await phone.http.get(f"/app/tickets/{await phone.ticket_pk('T-01')}")
    await organizer.post("/api/v1/organizer/tickets/delete", {"ticketIds": ["T-01"]})
    timeout = timedelta(hours=1)
    wallet_clock.advance(3599)
    assert await sweep(wallet_engine, now=wallet_clock.now(), deletion_timeout=timeout) == {
        "deleted": 0,
        "expired_transfers": 0,
    }
    assert (await statuses(organizer))["T-01"] == "DELETION_PENDING"
    wallet_clock.advance(1)
    assert await sweep(wallet_engine, now=wallet_clock.now(), deletion_timeout=timeout) == {
        "deleted": 1,
        "expired_transfers": 0,
    }
    feed = await organizer.feedback()
    assert feed["tickets"][0]["status"] == "DELETED"
    assert feed["tickets"][0]["logEntries"][-1]["data"] == {"after": "timeout"}
    assert (await phone.wallet())["deletions"] == []


async def test_opening_a_cancelled_ticket_drops_it(
    organizer: OrganizerClient, spectators: Any
) -> None:
    await organizer.inject(factories.ticket("T-01"))
    phone: Spectator = await spectators("ada@example.org", DEVICE_A)
    pk = await phone.ticket_pk("T-01")
    await phone.http.get(f"/app/tickets/{pk}")
    await organizer.post("/api/v1/organizer/tickets/delete", {"ticketIds": ["T-01"]})
    assert (await statuses(organizer))["T-01"] == "DELETION_PENDING"
    # A page still showing the ticket asks for it again: the device drops it there.
    opened = await phone.http.get(f"/app/tickets/{pk}")
    assert opened.headers["location"] == "/app/tickets?error=error.ticket.deleted"
    assert (await statuses(organizer))["T-01"] == "DELETED"
    assert (await phone.http.get(f"/app/tickets/{pk}")).headers["location"] == (
        "/app/tickets?error=error.ticket.unknown"
    )


async def test_each_server_sweeps_in_the_background(
    organizer: OrganizerClient,
    spectators: Any,
    wallet_backend: WalletBackend,
    wallet_clock: FixedClock,
    tmp_path: Path,
) -> None:
    """A server started with its sweeper on finishes timed-out deletions by itself."""
    settings = wallet_settings(
        wallet_backend.url,
        tmp_path,
        background_tasks=True,
        sweep_interval_seconds=0.1,
        deletion_timeout_seconds=60,
    )
    await organizer.inject(factories.ticket("T-01"))
    phone: Spectator = await spectators("ada@example.org", DEVICE_A)
    await phone.http.get(f"/app/tickets/{await phone.ticket_pk('T-01')}")
    await organizer.post("/api/v1/organizer/tickets/delete", {"ticketIds": ["T-01"]})
    with ThreadServer(build_app(settings, clock=wallet_clock)):
        await asyncio.sleep(0.5)
        assert (await statuses(organizer))["T-01"] == "DELETION_PENDING"
        wallet_clock.advance(60)
        for _ in range(50):
            if (await statuses(organizer))["T-01"] == "DELETED":
                break
            await asyncio.sleep(0.1)
    assert (await statuses(organizer))["T-01"] == "DELETED"


async def test_sign_in_links_are_rationed(
    wallet_server: str, wallet_engine: AsyncEngine, wallet_clock: FixedClock
) -> None:
    spectator = Spectator(wallet_server, wallet_engine, "ada@example.org")
    for _ in range(5):
        sent = await spectator.form("/app/login/link", email="ada@example.org")
        assert sent.headers["location"] == "/app/login?done=link_sent"
    refused = await spectator.form("/app/login/link", email="Ada@example.org")
    assert refused.headers["location"] == "/app/login?error=error.spectator.too_many_links"
    assert await factories.count(wallet_engine, db.mail_outbox) == 5
    page = await spectator.http.get(refused.headers["location"])
    assert "We already sent several links" in page.text
    wallet_clock.advance(15 * 60)  # a link's lifetime later
    again = await spectator.form("/app/login/link", email="ada@example.org")
    assert again.headers["location"] == "/app/login?done=link_sent"
    await spectator.close()
