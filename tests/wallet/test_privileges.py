"""Digital privileges: definitions created on first sight, non-transferable instances for
membership and season cards, optionally linked to tickets, usable once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie_wallet import db
from tests.conftest import NOW
from tests.wallet import factories
from tests.wallet.conftest import OrganizerClient, Spectator


def privilege(
    privilege_id: str, *, linked: list[str] | None = None, **definition: Any
) -> dict[str, Any]:
    return {
        "privilegeId": privilege_id,
        "definition": {
            "id": "SEASON-26",
            "name": "Season card 2026/27",
            "type": "SEASON_CARD",
            "validFrom": NOW.isoformat(),
            "validUntil": (NOW + timedelta(days=300)).isoformat(),
            **definition,
        },
        "security": {"barcode": f"PRIV.{privilege_id}"},
        "spectatorDetails": {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "email": "ada@example.org",
        },
        "linkedTicketIds": linked or [],
    }


async def test_privileges_injection_and_single_use(
    organizer: OrganizerClient, spectators: Any, wallet_engine: AsyncEngine
) -> None:
    await organizer.inject(factories.ticket("T-01"))
    response = await organizer.post(
        "/api/v1/organizer/privileges",
        {
            "privileges": [
                privilege("P-1", linked=["T-01"]),
                privilege("P-2"),
                privilege("P-3", linked=["T-99"]),
                privilege("P-4", type="GOLD"),
            ]
        },
    )
    results = response.json()["results"]
    assert [(r["privilegeId"], r["status"], r.get("code")) for r in results] == [
        ("P-1", "CREATED", None),
        ("P-2", "CREATED", None),
        ("P-3", "ERROR", "error.privilege.unknown_ticket"),
        ("P-4", "ERROR", "error.privilege.invalid"),
    ]
    assert await factories.count(wallet_engine, db.privilege_definition) == 1
    again = await organizer.post(
        "/api/v1/organizer/privileges",
        {
            "privileges": [
                privilege("P-1", linked=["T-01"]),
                privilege("P-2", name="Season card 26/27"),
            ]
        },
    )
    assert [r["status"] for r in again.json()["results"]] == ["UNCHANGED", "UPDATED"]
    async with db.read(wallet_engine) as conn:
        names = (await conn.execute(sa.select(db.privilege_definition.c.name))).scalars().all()
    assert names == ["Season card 26/27"]

    ada: Spectator = await spectators("ada@example.org")
    wallet = await ada.wallet()
    assert [(p["privilegeId"], p["kind"], p["linkedTicketIds"]) for p in wallet["privileges"]] == [
        ("P-1", "SEASON_CARD", ["T-01"]),
        ("P-2", "SEASON_CARD", []),
    ]
    page = await ada.http.get("/app/tickets")
    assert "Season card 26/27" in page.text and "Not transferable." in page.text

    used = await organizer.http.post("/api/v1/organizer/privileges/P-1/use")
    assert used.status_code == 200 and used.json()["status"] == "USED"
    twice = await organizer.http.post("/api/v1/organizer/privileges/P-1/use")
    assert twice.status_code == 409
    assert twice.json()["code"] == "error.privilege.already_used"
    unknown = await organizer.http.post("/api/v1/organizer/privileges/P-9/use")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "error.privilege.unknown"
    assert [p["state"] for p in (await ada.wallet())["privileges"]] == ["USED", "INJECTED"]


async def test_privileges_need_their_role(
    organizer: OrganizerClient, wallet_engine: AsyncEngine, wallet_server: str
) -> None:
    from tests.wallet.conftest import new_organizer

    injector = await new_organizer(wallet_engine, "DEMO", "tickets", url=wallet_server)
    refused = await injector.post(
        "/api/v1/organizer/privileges", {"privileges": [privilege("P-1")]}
    )
    assert refused.status_code == 403
    assert (await injector.http.post("/api/v1/organizer/privileges/P-1/use")).status_code == 403
    assert await factories.count(wallet_engine, db.privilege) == 0
    await injector.http.aclose()


async def test_cancelled_privileges_are_deleted(
    organizer: OrganizerClient,
    spectators: Any,
    wallet_engine: AsyncEngine,
    wallet_server: str,
) -> None:
    from tests.wallet.conftest import new_organizer

    body = {"privileges": [privilege("P-1"), privilege("P-2"), privilege("P-3")]}
    assert (await organizer.post("/api/v1/organizer/privileges", body)).status_code == 200
    assert (await organizer.http.post("/api/v1/organizer/privileges/P-2/use")).status_code == 200
    ada: Spectator = await spectators("ada@example.org")
    assert [p["privilegeId"] for p in (await ada.wallet())["privileges"]] == ["P-1", "P-2", "P-3"]

    # Bad requests change nothing.
    injector = await new_organizer(wallet_engine, "DEMO", "tickets", url=wallet_server)
    for who, request, status in (
        (injector, {"privilegeIds": ["P-1"]}, 403),
        (organizer, {"privilegeIds": []}, 400),
        (organizer, {"privilegeIds": ["P-1"], "reason": "LOST"}, 400),
        (organizer, {"privilegeIds": [f"P-{i}" for i in range(1001)]}, 400),
        (organizer, {"ticketIds": ["P-1"]}, 400),
    ):
        refused = await who.post("/api/v1/organizer/privileges/delete", request)
        assert refused.status_code == status, (request, refused.text)
    await injector.http.aclose()
    async with db.read(wallet_engine) as conn:
        states = dict(
            (await conn.execute(sa.select(db.privilege.c.external_id, db.privilege.c.state))).all()
        )
    assert states == {"P-1": "INJECTED", "P-2": "USED", "P-3": "INJECTED"}

    deleted = await organizer.post(
        "/api/v1/organizer/privileges/delete",
        {"privilegeIds": ["P-1", "P-2", "P-9"], "reason": "INVALIDATED"},
    )
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {
        "results": [
            {"privilegeId": "P-1", "status": "DELETED"},
            {"privilegeId": "P-2", "status": "DELETED"},
            {
                "privilegeId": "P-9",
                "status": "ERROR",
                "code": "error.privilege.unknown",
                "detail": "no such privilege",
            },
        ],
        "summary": {"DELETED": 2, "ERROR": 1},
    }
    async with db.read(wallet_engine) as conn:
        rows = {r.external_id: r for r in (await conn.execute(sa.select(db.privilege))).all()}
    assert [
        (rows[p].state, rows[p].deletion_reason, rows[p].deleted_at) for p in ("P-1", "P-2")
    ] == [
        ("DELETED", "INVALIDATED", NOW),
        ("DELETED", "INVALIDATED", NOW),
    ]
    assert (rows["P-3"].state, rows["P-3"].deleted_at) == ("INJECTED", None)
    # Gone from the wallet, no longer usable, not injected again; deleting again is a no-op.
    assert [p["privilegeId"] for p in (await ada.wallet())["privileges"]] == ["P-3"]
    assert "P-1" not in (await ada.http.get("/app/tickets")).text
    use = await organizer.http.post("/api/v1/organizer/privileges/P-1/use")
    assert use.status_code == 409 and use.json()["code"] == "error.privilege.deleted"
    again = await organizer.post("/api/v1/organizer/privileges", {"privileges": [privilege("P-1")]})
    assert [(r["status"], r.get("code")) for r in again.json()["results"]] == [
        ("ERROR", "error.privilege.deleted")
    ]
    twice = await organizer.post("/api/v1/organizer/privileges/delete", {"privilegeIds": ["P-1"]})
    assert twice.json()["results"] == [{"privilegeId": "P-1", "status": "DELETED"}]
    async with db.read(wallet_engine) as conn:
        audit = (
            (
                await conn.execute(
                    sa.select(db.audit_entry.c.data).where(
                        db.audit_entry.c.action == "wallet.privilege.deleted"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert audit == [{"reason": "INVALIDATED", "privilege_ids": ["P-1", "P-2"]}]
