"""Rotating barcodes: RFC 6238 test vectors, the secret released only from the activation time,
the QR changing every 15 s, and the scanner (offline-style validation, the ±1 step window,
replays and duplicates)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie_wallet import db, rotating
from billetterie_wallet.clock import FixedClock
from tests.conftest import NOW
from tests.wallet import factories
from tests.wallet.conftest import OrganizerClient, Spectator, new_organizer

DEVICE = "device-a-0000000000000001"
SHA1_SEED = b"12345678901234567890"
SHA256_SEED = b"12345678901234567890123456789012"


@pytest.mark.parametrize(
    ("unix", "sha1", "sha256"),
    [
        (59, "94287082", "46119246"),
        (1111111109, "07081804", "68084774"),
        (1111111111, "14050471", "67062674"),
        (1234567890, "89005924", "91819424"),
        (2000000000, "69279037", "90698825"),
        (20000000000, "65353130", "77737706"),
    ],
)
def test_rfc6238_appendix_b_vectors(unix: int, sha1: str, sha256: str) -> None:
    at = datetime.fromtimestamp(unix, UTC)
    assert rotating.totp(SHA1_SEED, at, step=30, algorithm="SHA1") == sha1
    assert rotating.totp(SHA256_SEED, at, step=30, algorithm="SHA256") == sha256


def test_payload_round_trip_keeps_any_barcode() -> None:
    text = rotating.payload("group|1 é", "a|b.c/d", "01234567")
    assert rotating.parse_payload(text) == rotating.Payload("group|1 é", "01234567", "a|b.c/d")
    for junk in ("", "BW1|g|123|x", "BW2|g|01234567|x", "BW1|g|0123456a|x", "BW1||01234567|x"):
        assert rotating.parse_payload(junk) is None


def shows(payload: str, fragment: str) -> bool:
    """Whether the QR fragment draws exactly ``payload`` (segno is deterministic)."""
    return segno.make(payload, error="m").svg_inline(scale=4, border=2) in fragment


async def _qr(spectator: Spectator, pk: int) -> str:
    response = await spectator.http.get(f"/app/tickets/{pk}/qr")
    assert response.status_code == 200
    return response.text


async def test_secret_released_only_from_activation_time(
    organizer: OrganizerClient, spectators: Any, wallet_clock: FixedClock
) -> None:
    activation = NOW + timedelta(minutes=30)
    await organizer.inject(factories.ticket("T-01", activation=activation))
    ada: Spectator = await spectators("ada@example.org", DEVICE)
    pk = await ada.ticket_pk("T-01")
    page = await ada.http.get(f"/app/tickets/{pk}")
    assert "<svg" not in page.text
    assert "released at 2026-11-23T12:30:00+00:00" in page.text
    early = await ada.http.get(f"/app/api/tickets/{pk}/secret")
    assert early.status_code == 409
    assert early.json()["code"] == "error.ticket.not_activated"
    assert early.json()["availableAt"] == activation.isoformat()
    assert (await organizer.feedback())["tickets"][0]["status"] == "DOWNLOADED"

    wallet_clock.set(activation)
    secret = await ada.http.get(f"/app/api/tickets/{pk}/secret")
    assert secret.status_code == 200
    released = secret.json()
    assert released["barcode"] == "BC1.T-01.c2lnbmVk" and released["stepSeconds"] == 15
    feed = await organizer.feedback()
    assert feed["tickets"][0]["status"] == "DOWNLOADED_ACTIVATED"
    assert feed["tickets"][0]["logEntries"][-1]["action"] == "ticket.activated"
    # The device computes the same code the server shows.
    code = rotating.totp(base64.b64decode(released["secret"]), wallet_clock.now())
    assert shows(rotating.payload("G1", released["barcode"], code), await _qr(ada, pk))


async def test_online_tickets_never_release_the_secret(
    organizer: OrganizerClient, spectators: Any
) -> None:
    await organizer.inject(factories.ticket("T-01", method="online", activation=NOW))
    ada: Spectator = await spectators("ada@example.org", DEVICE)
    pk = await ada.ticket_pk("T-01")
    await ada.http.get(f"/app/tickets/{pk}")
    refused = await ada.http.get(f"/app/api/tickets/{pk}/secret")
    assert refused.status_code == 409
    assert refused.json()["code"] == "error.ticket.online_only"
    assert "<svg" in await _qr(ada, pk)


async def test_qr_changes_every_step_and_the_scanner_validates(
    organizer: OrganizerClient, spectators: Any, wallet_clock: FixedClock
) -> None:
    key = Ed25519PrivateKey.generate()
    assert (
        await organizer.http.put("/api/v1/organizer/barcode-keys", json=factories.key_set((1, key)))
    ).status_code == 200
    barcode = factories.signed_barcode(key, 1, 1)
    await organizer.inject(
        factories.ticket("T-01", activation=NOW - timedelta(hours=1), security={"barcode": barcode})
    )
    ada: Spectator = await spectators("ada@example.org", DEVICE)
    pk = await ada.ticket_pk("T-01")
    await ada.http.get(f"/app/tickets/{pk}")
    secret = base64.b64decode(
        (await ada.http.get(f"/app/api/tickets/{pk}/secret")).json()["secret"]
    )
    first = await _qr(ada, pk)
    assert first == await _qr(ada, pk)  # within the step
    wallet_clock.advance(15)
    second = await _qr(ada, pk)
    assert second != first
    now_code = rotating.totp(secret, wallet_clock.now())
    assert shows(rotating.payload("G1", barcode, now_code), second)

    shown_at = wallet_clock.now()
    code = rotating.payload("G1", barcode, rotating.totp(secret, shown_at))

    async def scan(text: str, at: datetime) -> dict[str, Any]:
        wallet_clock.set(at)
        response = await organizer.post(
            "/api/v1/scanner/validate", {"code": text, "scanner": "gate-1"}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    # Two steps late is outside the window (a replayed screenshot), and admits nothing.
    assert (await scan(code, shown_at + timedelta(seconds=30)))["result"] == "EXPIRED"
    valid = await scan(code, shown_at + timedelta(seconds=15))  # one step late: accepted
    assert valid["result"] == "VALID" and valid["stepOffset"] == -1
    assert valid["barcode"] == barcode
    fresh = rotating.payload("G1", barcode, rotating.totp(secret, shown_at))
    duplicate = await scan(fresh, shown_at)
    assert duplicate["result"] == "DUPLICATE"
    assert duplicate["firstScanAt"] == (shown_at + timedelta(seconds=15)).isoformat()
    other = factories.signed_barcode(key, 1, 2)  # another ticket's barcode, this one's code
    forged = rotating.payload("G1", other, rotating.totp(secret, shown_at))
    assert (await scan(forged, shown_at))["result"] == "EXPIRED"  # the code is the barcode's
    assert (await scan("hello", shown_at))["result"] == "MALFORMED"
    unknown = rotating.payload("G9", barcode, "12345678")
    assert (await scan(unknown, shown_at))["result"] == "UNKNOWN_GROUP"


async def test_offline_gate_with_the_group_secret(
    organizer: OrganizerClient, spectators: Any, wallet_engine: AsyncEngine, wallet_server: str
) -> None:
    await organizer.inject(factories.ticket("T-01", activation=NOW - timedelta(hours=1)))
    ada: Spectator = await spectators("ada@example.org", DEVICE)
    pk = await ada.ticket_pk("T-01")
    await ada.http.get(f"/app/tickets/{pk}")
    group = (await organizer.http.get("/api/v1/organizer/activation-groups/G1")).json()
    assert group["stepSeconds"] == 15 and group["digits"] == 8 and group["window"] == 1
    ticket_secret = rotating.ticket_secret(base64.b64decode(group["secret"]), "BC1.T-01.c2lnbmVk")
    released = (await ada.http.get(f"/app/api/tickets/{pk}/secret")).json()
    assert base64.b64decode(released["secret"]) == ticket_secret
    # The gate checks what the phone shows with nothing but the group secret.
    qr = await _qr(ada, pk)
    code = rotating.totp(ticket_secret, NOW)
    assert shows(rotating.payload("G1", "BC1.T-01.c2lnbmVk", code), qr)
    assert rotating.check_code(ticket_secret, code, NOW) == 0
    missing = await organizer.http.get("/api/v1/organizer/activation-groups/NOPE")
    assert missing.status_code == 404
    assert missing.json()["code"] == "error.activation.unknown_group"
    # Another organizer's scanner knows nothing of this group.
    other = await new_organizer(wallet_engine, "ACME", url=wallet_server)
    scanned = await other.post(
        "/api/v1/scanner/validate", {"code": rotating.payload("G1", "BC1.T-01.c2lnbmVk", code)}
    )
    assert scanned.json()["result"] == "UNKNOWN_GROUP"
    assert (await factories.count(wallet_engine, db.admission)) == 0
    await other.http.aclose()
    async with httpx.AsyncClient(base_url=wallet_server) as anonymous:
        assert (
            await anonymous.post("/api/v1/scanner/validate", json={"code": "x"})
        ).status_code == 401


async def test_no_code_for_controlled_or_deleted_tickets(
    organizer: OrganizerClient, spectators: Any
) -> None:
    await organizer.inject(factories.ticket("T-01", activation=NOW - timedelta(hours=1)))
    ada: Spectator = await spectators("ada@example.org", DEVICE)
    pk = await ada.ticket_pk("T-01")
    await ada.http.get(f"/app/tickets/{pk}")
    await organizer.post("/api/v1/organizer/tickets/controlled", {"ticketIds": ["T-01"]})
    assert "<svg" not in await _qr(ada, pk)
    refused = await ada.http.get(f"/app/api/tickets/{pk}/secret")
    assert refused.status_code == 409
