"""Bad input gets a clear refusal with a stable code and changes nothing; no request yields a
500; concurrent injections of the same tickets create each ticket once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie_wallet import db, rotating
from tests.wallet import factories
from tests.wallet.conftest import OrganizerClient, Spectator


async def test_values_the_databases_would_refuse(
    organizer: OrganizerClient, wallet_engine: AsyncEngine
) -> None:
    far = factories.ticket("T-02")
    far["event"]["startTime"] = "9999-12-31T23:59:59-23:59"
    long_barcode = factories.ticket("T-03")
    long_barcode["security"]["barcode"] = "x" * 513
    long_id = factories.ticket("T" * 101)
    # NaN is not JSON, but Python's parser takes it: the databases' JSON columns would not.
    not_finite = json.dumps(factories.ticket("T-01")).replace('"price": 45000', '"price": NaN')
    items = [json.dumps(t) for t in (far, long_barcode, long_id)] + [not_finite]
    body = '{"tickets": [' + ", ".join(items) + "]}"
    response = await organizer.http.post(
        "/api/v1/organizer/tickets", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    codes = [(r["status"], r.get("code")) for r in response.json()["results"]]
    assert codes == [("ERROR", "error.ticket.invalid")] * 4
    assert await factories.count(wallet_engine, db.ticket) == 0
    assert await factories.count(wallet_engine, db.event_table) == 0


async def test_out_of_range_ids_and_payloads(
    organizer: OrganizerClient, spectators: Any, wallet_engine: AsyncEngine
) -> None:
    ada: Spectator = await spectators("ada@example.org")
    huge = 10**20
    for path in (
        f"/app/tickets/{huge}",
        f"/app/tickets/{huge}/qr",
        f"/app/api/tickets/{huge}/secret",
    ):
        response = await ada.http.get(path)
        assert response.status_code == 400, path
    ack = await ada.http.post(
        "/app/api/devices/acknowledge", json={"ids": [huge]}, headers={"X-CSRF-Token": ada.csrf}
    )
    assert ack.status_code == 400 and ack.json()["code"] == "error.request.invalid"
    cursor = await organizer.http.get(
        "/api/v1/organizer/reports/ticket-status-log", params={"cursor": "9" * 30}
    )
    assert cursor.status_code == 400
    scanned = await organizer.post(
        "/api/v1/scanner/validate", {"code": rotating.payload("G1", "x" * 600, "12345678")}
    )
    assert scanned.status_code == 200 and scanned.json()["result"] == "MALFORMED"
    bad_key = await organizer.http.get("/api/v1/organizer/feedback", params={"key": "%%%.@@"})
    assert bad_key.status_code == 400 and bad_key.json()["code"] == "error.feedback.invalid_key"
    not_object = await organizer.http.post("/api/v1/organizer/tickets", json=[1, 2])
    assert not_object.status_code == 400
    assert await factories.count(wallet_engine, db.scan) == 0  # a malformed scan is no scan


async def test_concurrent_injections_create_each_ticket_once(
    organizer: OrganizerClient, wallet_engine: AsyncEngine
) -> None:
    tickets = [factories.ticket(f"T-{i:03d}", event_id=f"EV{i % 3}") for i in range(200)]
    answers = await asyncio.gather(
        *(organizer.post("/api/v1/organizer/tickets", {"tickets": tickets}) for _ in range(4))
    )
    assert [a.status_code for a in answers] == [200] * 4
    created = sum(a.json()["summary"].get("CREATED", 0) for a in answers)
    unchanged = sum(a.json()["summary"].get("UNCHANGED", 0) for a in answers)
    assert (created, unchanged) == (200, 600)
    assert await factories.count(wallet_engine, db.ticket) == 200
    assert await factories.count(wallet_engine, db.event_table) == 3
    assert await factories.count(wallet_engine, db.ticket_log) == 200
