"""The organizer API end to end over real HTTP: authentication and roles, injection (idempotent
by ticketId, events created then updated, per-ticket refusals), feedback pagination, the
ticket-status-log report."""

from __future__ import annotations

import base64
from datetime import timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie_wallet import db
from billetterie_wallet.services.organizers import revoke_key
from tests.conftest import NOW
from tests.wallet import factories
from tests.wallet.conftest import OrganizerClient, new_organizer


async def test_authentication_matrix(
    organizer: OrganizerClient, wallet_engine: AsyncEngine, wallet_server: str
) -> None:
    body = {"tickets": [factories.ticket("T-01")]}
    async with httpx.AsyncClient(base_url=wallet_server) as anonymous:
        missing = await anonymous.post("/api/v1/organizer/tickets", json=body)
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["code"] == "error.auth.unauthenticated"
        forged = await anonymous.post(
            "/api/v1/organizer/tickets",
            json=body,
            headers={"Authorization": "Bearer bwk_aaaaaaaaaaaa_" + "x" * 43},
        )
        assert forged.status_code == 401
        basic = base64.b64encode(f"box-office:{organizer.key}".encode()).decode()
        with_basic = await anonymous.get(
            "/api/v1/organizer/me", headers={"Authorization": f"Basic {basic}"}
        )
        assert with_basic.status_code == 200
        assert with_basic.json()["organizer"] == "DEMO"
        bad_basic = await anonymous.get(
            "/api/v1/organizer/me", headers={"Authorization": "Basic !!!"}
        )
        assert bad_basic.status_code == 401
    assert await factories.count(wallet_engine, db.ticket) == 0

    reader = await new_organizer(wallet_engine, "DEMO", "feedback", url=wallet_server)
    refused = await reader.post("/api/v1/organizer/tickets", body)
    assert refused.status_code == 403
    assert refused.json()["code"] == "error.auth.forbidden"
    assert (await reader.http.get("/api/v1/organizer/feedback")).status_code == 200
    assert await factories.count(wallet_engine, db.ticket) == 0

    me = (await organizer.http.get("/api/v1/organizer/me")).json()
    await revoke_key(wallet_engine, key_id=me["keyId"], now=NOW, actor="test")
    revoked = await organizer.post("/api/v1/organizer/tickets", body)
    assert revoked.status_code == 401
    await reader.http.aclose()


async def test_injection_is_idempotent_and_updates(
    organizer: OrganizerClient, wallet_engine: AsyncEngine
) -> None:
    first = await organizer.inject(factories.ticket("T-01"), factories.ticket("T-02"))
    assert first["results"] == [
        {"ticketId": "T-01", "status": "CREATED"},
        {"ticketId": "T-02", "status": "CREATED"},
    ]
    assert first["summary"] == {"CREATED": 2}
    again = await organizer.inject(factories.ticket("T-01"), factories.ticket("T-02"))
    assert [r["status"] for r in again["results"]] == ["UNCHANGED", "UNCHANGED"]
    assert await factories.count(wallet_engine, db.ticket) == 2
    assert await factories.count(wallet_engine, db.event_table) == 1
    assert await factories.count(wallet_engine, db.ticket_log) == 2

    renamed = factories.ticket("T-01")
    renamed["event"]["name"] = "Concert EV1 (new date)"
    renamed["security"]["barcode"] = "BC2.T-01.bmV3"
    updated = await organizer.inject(renamed)
    assert updated["results"] == [{"ticketId": "T-01", "status": "UPDATED"}]
    row = await factories.ticket_row(wallet_engine, "T-01")
    assert row.barcode == "BC2.T-01.bmV3"
    assert row.state == "INJECTED"
    async with db.read(wallet_engine) as conn:
        names = (await conn.execute(db.event_table.select())).all()
    assert [e.name for e in names] == ["Concert EV1 (new date)"]
    assert await factories.count(wallet_engine, db.ticket_log) == 3


async def test_bad_tickets_are_refused_alone(
    organizer: OrganizerClient, wallet_engine: AsyncEngine
) -> None:
    no_barcode = factories.ticket("T-02")
    del no_barcode["security"]
    naive = factories.ticket("T-03")
    naive["event"]["startTime"] = "2026-12-01T20:00:00"
    bad_email = factories.ticket("T-04", email="not-an-email")
    result = await organizer.inject(
        factories.ticket("T-01"), no_barcode, naive, bad_email, factories.ticket("T-01"), "junk"
    )
    statuses = [(r["ticketId"], r["status"], r.get("code")) for r in result["results"]]
    assert statuses == [
        ("T-01", "CREATED", None),
        ("T-02", "ERROR", "error.ticket.invalid"),
        ("T-03", "ERROR", "error.ticket.invalid"),
        ("T-04", "ERROR", "error.ticket.invalid"),
        ("T-01", "ERROR", "error.request.duplicate_in_batch"),
        ("#5", "ERROR", "error.ticket.invalid"),
    ]
    assert "security" in result["results"][1]["detail"]
    assert await factories.count(wallet_engine, db.ticket) == 1


async def test_batches_above_1000_are_refused_whole(
    organizer: OrganizerClient, wallet_engine: AsyncEngine
) -> None:
    tickets = [factories.ticket(f"T-{i:04d}") for i in range(1001)]
    response = await organizer.post("/api/v1/organizer/tickets", {"tickets": tickets})
    assert response.status_code == 413
    assert response.json()["code"] == "error.request.batch_too_large"
    assert await factories.count(wallet_engine, db.ticket) == 0
    malformed = await organizer.http.post(
        "/api/v1/organizer/tickets",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "error.request.malformed_json"
    shapeless = await organizer.post("/api/v1/organizer/tickets", {"tickets": "many"})
    assert shapeless.status_code == 400
    assert shapeless.json()["code"] == "error.request.invalid"


async def test_a_full_batch_goes_in(organizer: OrganizerClient, wallet_engine: AsyncEngine) -> None:
    tickets = [factories.ticket(f"T-{i:04d}", event_id=f"EV{i % 7}") for i in range(1000)]
    result = await organizer.inject(*tickets)
    assert result["summary"] == {"CREATED": 1000}
    assert await factories.count(wallet_engine, db.event_table) == 7
    feed = await organizer.feedback(limit=1000)
    assert len(feed["tickets"]) == 1000
    assert feed["hasMore"] is False


async def test_tenancy(
    organizer: OrganizerClient, other_organizer: OrganizerClient, wallet_engine: AsyncEngine
) -> None:
    await organizer.inject(factories.ticket("T-01"))
    # The same ticketId at another organizer is another ticket.
    assert (await other_organizer.inject(factories.ticket("T-01")))["summary"] == {"CREATED": 1}
    deleted = await other_organizer.post(
        "/api/v1/organizer/tickets/delete", {"ticketIds": ["T-01"]}
    )
    assert deleted.json()["results"] == [{"ticketId": "T-01", "status": "DELETED"}]
    mine = await organizer.feedback()
    assert [t["status"] for t in mine["tickets"]] == ["INJECTED"]
    # A key of one organizer's feed means nothing to the other's.
    refused = await other_organizer.http.get(
        "/api/v1/organizer/feedback", params={"key": mine["nextKey"]}
    )
    assert refused.status_code == 400
    assert refused.json()["code"] == "error.feedback.invalid_key"


async def test_feedback_pages_and_one_consumer(organizer: OrganizerClient) -> None:
    await organizer.inject(*[factories.ticket(f"T-{i:02d}") for i in range(5)])
    page1 = await organizer.feedback(limit=2)
    assert [t["ticketId"] for t in page1["tickets"]] == ["T-00", "T-01"]
    assert page1["hasMore"] is True
    entry = page1["tickets"][0]
    assert entry["status"] == "INJECTED"
    assert entry["eventId"] == "EV1"
    assert entry["walletOwner"] == {"email": "ada@example.org"}
    assert entry["holder"] is None
    assert [e["action"] for e in entry["logEntries"]] == ["ticket.injected"]
    page2 = await organizer.feedback(page1["nextKey"], limit=2)
    assert [t["ticketId"] for t in page2["tickets"]] == ["T-02", "T-03"]
    # The consumer stands where its last key said: without a key it resumes there.
    resumed = await organizer.feedback(limit=2)
    assert [t["ticketId"] for t in resumed["tickets"]] == ["T-02", "T-03"]
    page3 = await organizer.feedback(page2["nextKey"], limit=2)
    assert [t["ticketId"] for t in page3["tickets"]] == ["T-04"]
    assert page3["hasMore"] is False
    # A change moves the ticket to the end of the feed, with only its new log entries.
    await organizer.post("/api/v1/organizer/tickets/controlled", {"ticketIds": ["T-01"]})
    page4 = await organizer.feedback(page3["nextKey"])
    assert [(t["ticketId"], t["status"]) for t in page4["tickets"]] == [("T-01", "CONTROLLED")]
    assert [e["action"] for e in page4["tickets"][0]["logEntries"]] == ["ticket.controlled"]
    empty = await organizer.feedback(page4["nextKey"])
    assert empty["tickets"] == [] and empty["hasMore"] is False
    assert empty["nextKey"] == page4["nextKey"]
    # Keys are opaque and signed.
    tampered = page4["nextKey"][:-2] + ("AA" if not page4["nextKey"].endswith("AA") else "BB")
    response = await organizer.http.get("/api/v1/organizer/feedback", params={"key": tampered})
    assert response.status_code == 400
    assert response.json()["code"] == "error.feedback.invalid_key"


async def test_controlled_and_deleted_results(organizer: OrganizerClient) -> None:
    await organizer.inject(factories.ticket("T-01"), factories.ticket("T-02"))
    controlled = await organizer.post(
        "/api/v1/organizer/tickets/controlled", {"ticketIds": ["T-01", "T-01", "NOPE"]}
    )
    assert controlled.json()["results"] == [
        {"ticketId": "T-01", "status": "CONTROLLED"},
        {"ticketId": "T-01", "status": "CONTROLLED"},
        {
            "ticketId": "NOPE",
            "status": "ERROR",
            "code": "error.ticket.unknown",
            "detail": "no such ticket",
        },
    ]
    deleted = await organizer.post(
        "/api/v1/organizer/tickets/delete", {"ticketIds": ["T-02"], "reason": "INVALIDATED"}
    )
    assert deleted.json()["results"] == [{"ticketId": "T-02", "status": "DELETED"}]
    again = await organizer.post("/api/v1/organizer/tickets/controlled", {"ticketIds": ["T-02"]})
    assert again.json()["results"][0]["code"] == "error.ticket.deleted"
    reinjected = await organizer.inject(factories.ticket("T-02"))
    assert reinjected["results"][0]["code"] == "error.ticket.deleted"
    empty = await organizer.post("/api/v1/organizer/tickets/delete", {"ticketIds": []})
    assert empty.status_code == 400


async def test_ticket_status_log_report(organizer: OrganizerClient, wallet_clock: object) -> None:
    await organizer.inject(factories.ticket("T-01"), factories.ticket("T-02", event_id="EV2"))
    await organizer.post("/api/v1/organizer/tickets/controlled", {"ticketIds": ["T-01"]})
    report = (await organizer.http.get("/api/v1/organizer/reports/ticket-status-log")).json()
    assert [(e["ticketId"], e["action"], e["status"]) for e in report["entries"]] == [
        ("T-01", "ticket.injected", "INJECTED"),
        ("T-02", "ticket.injected", "INJECTED"),
        ("T-01", "ticket.controlled", "CONTROLLED"),
    ]
    assert report["entries"][0]["actor"] == "organizer:DEMO"
    assert report["nextCursor"] is None
    page = (
        await organizer.http.get("/api/v1/organizer/reports/ticket-status-log", params={"limit": 2})
    ).json()
    assert len(page["entries"]) == 2 and page["nextCursor"]
    rest = (
        await organizer.http.get(
            "/api/v1/organizer/reports/ticket-status-log",
            params={"cursor": page["nextCursor"]},
        )
    ).json()
    assert [e["action"] for e in rest["entries"]] == ["ticket.controlled"]
    by_event = (
        await organizer.http.get(
            "/api/v1/organizer/reports/ticket-status-log", params={"eventId": "EV2"}
        )
    ).json()
    assert [e["ticketId"] for e in by_event["entries"]] == ["T-02"]
    later = (
        await organizer.http.get(
            "/api/v1/organizer/reports/ticket-status-log",
            params={"from": (NOW + timedelta(seconds=1)).isoformat()},
        )
    ).json()
    assert later["entries"] == []
    bad = await organizer.http.get(
        "/api/v1/organizer/reports/ticket-status-log", params={"cursor": "abc"}
    )
    assert bad.status_code == 400
    assert bad.json()["code"] == "error.report.invalid_cursor"


@pytest.mark.parametrize("path", ["/api/v1/organizer/nothing", "/api/v1/organizer/tickets"])
async def test_unknown_routes_and_methods_are_problems(
    organizer: OrganizerClient, path: str
) -> None:
    response = await organizer.http.get(path)
    assert response.status_code in (404, 405)
    assert response.headers["content-type"] == "application/problem+json"


async def test_openapi_describes_the_answers(wallet_server: str) -> None:
    async with httpx.AsyncClient(base_url=wallet_server) as client:
        document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    for path in (
        "/api/v1/organizer/tickets",
        "/api/v1/organizer/tickets/delete",
        "/api/v1/organizer/tickets/controlled",
        "/api/v1/organizer/privileges",
    ):
        schema = paths[path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/BatchResult"}, path
    feedback = document["components"]["schemas"]["FeedbackTicket"]
    assert {"ticketId", "status", "walletOwner", "holder", "logEntries"} <= set(
        feedback["required"]
    )
    assert not any(path.startswith("/app") for path in paths)  # the pages are not an API
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert paths["/api/v1/organizer/feedback"]["get"]["security"] == [{"HTTPBearer": []}]


async def test_feedback_delivers_every_change_once_while_tickets_move(
    organizer: OrganizerClient,
) -> None:
    await organizer.inject(*[factories.ticket(f"T-{i:02d}") for i in range(4)])
    first = await organizer.feedback(limit=2)
    # T-03 changes before the consumer reached its injection: both entries still come, once.
    await organizer.post("/api/v1/organizer/tickets/controlled", {"ticketIds": ["T-00", "T-03"]})
    delivered: list[tuple[str, str]] = []
    key = first["nextKey"]
    for entry in first["tickets"]:
        delivered.extend((entry["ticketId"], e["action"]) for e in entry["logEntries"])
    while True:
        page = await organizer.feedback(key, limit=2)
        for entry in page["tickets"]:
            delivered.extend((entry["ticketId"], e["action"]) for e in entry["logEntries"])
            if entry["ticketId"] == "T-03":
                assert entry["status"] == "CONTROLLED"  # the current state, every time
        key = page["nextKey"]
        if not page["hasMore"]:
            break
    assert delivered == [
        ("T-00", "ticket.injected"),
        ("T-01", "ticket.injected"),
        ("T-02", "ticket.injected"),
        ("T-03", "ticket.injected"),
        ("T-00", "ticket.controlled"),
        ("T-03", "ticket.controlled"),
    ]
