"""The box office's barcode keys in the wallet: registered by the organizer (the whole set
still verifiable; the others retired for good), and the scanner admits only barcodes that one
of them signed: a forged or tampered barcode, an unknown or retired key and an expired barcode
are refused with their codes; after a rotation the previous key still verifies."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie_wallet import db, rotating
from billetterie_wallet.clock import FixedClock
from billetterie_wallet.schemas import BarcodeKeyChanges, BarcodeKeyList, ScanResult
from tests.conftest import NOW
from tests.wallet import factories
from tests.wallet.conftest import OrganizerClient, new_organizer

KEYS = "/api/v1/organizer/barcode-keys"


async def put_keys(organizer: OrganizerClient, body: Any) -> Any:
    return await organizer.http.put(KEYS, json=body)


async def keys_held(engine: AsyncEngine) -> list[tuple[int, bool]]:
    async with db.read(engine) as conn:
        rows = await conn.execute(
            sa.select(db.barcode_key.c.key_id, db.barcode_key.c.retired_at).order_by(
                db.barcode_key.c.key_id
            )
        )
        return [(r.key_id, r.retired_at is None) for r in rows]


async def test_register_rotate_and_retire(
    organizer: OrganizerClient, wallet_engine: AsyncEngine, wallet_clock: FixedClock
) -> None:
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    first = await put_keys(organizer, factories.key_set((7, a)))
    assert first.status_code == 200, first.text
    body = BarcodeKeyChanges.model_validate(first.json()).model_dump(by_alias=True)
    assert (body["added"], body["retired"]) == ([7], [])
    assert body["keys"] == [
        {
            "keyId": 7,
            "publicKey": factories.public_key(a),
            "state": "VERIFIABLE",
            "registeredAt": NOW.isoformat(),
            "retiredAt": None,
        }
    ]
    again = (await put_keys(organizer, factories.key_set((7, a)))).json()
    assert (again["added"], again["retired"]) == ([], [])
    # A rotation: the new key comes with the previous one, which keeps verifying.
    rotated = (await put_keys(organizer, factories.key_set((7, a), (9, b)))).json()
    assert (rotated["added"], rotated["retired"]) == ([9], [])
    wallet_clock.advance(60)
    retired = (await put_keys(organizer, factories.key_set((9, b)))).json()
    assert (retired["added"], retired["retired"]) == ([], [7])
    listed = (await organizer.http.get(KEYS)).json()
    BarcodeKeyList.model_validate(listed)
    assert [(k["keyId"], k["state"], k["retiredAt"]) for k in listed["keys"]] == [
        (7, "RETIRED", (NOW + timedelta(seconds=60)).isoformat()),
        (9, "VERIFIABLE", None),
    ]
    async with db.read(wallet_engine) as conn:
        actions = (
            await conn.execute(
                sa.select(db.audit_entry.c.action, db.audit_entry.c.data).order_by(
                    db.audit_entry.c.id
                )
            )
        ).all()
    assert [(a.action, a.data) for a in actions if a.action.startswith("wallet.barcode")] == [
        ("wallet.barcode_keys.registered", {"added": [7], "retired": []}),
        ("wallet.barcode_keys.registered", {"added": [9], "retired": []}),
        ("wallet.barcode_keys.registered", {"added": [], "retired": [7]}),
    ]


async def test_refused_key_sets_change_nothing(
    organizer: OrganizerClient, wallet_engine: AsyncEngine
) -> None:
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    assert (await put_keys(organizer, factories.key_set((7, a), (8, b)))).status_code == 200
    assert (await put_keys(organizer, factories.key_set((8, b)))).status_code == 200  # 7 retired
    before = await keys_held(wallet_engine)
    assert before == [(7, False), (8, True)]

    conflict = await put_keys(organizer, factories.key_set((8, a)))
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "error.barcode_key.conflict"
    back = await put_keys(organizer, factories.key_set((7, a), (8, b)))
    assert back.status_code == 409 and back.json()["code"] == "error.barcode_key.retired"
    good = factories.public_key(b)
    for bad in (
        {"keys": [{"keyId": 8, "publicKey": good}, {"keyId": 8, "publicKey": good}]},
        {"keys": [{"keyId": "8", "publicKey": good}]},
        {"keys": [{"keyId": -1, "publicKey": good}]},
        {"keys": [{"keyId": 2**32, "publicKey": good}]},
        {"keys": [{"keyId": 8, "publicKey": "not base64!"}]},
        {"keys": [{"keyId": 8, "publicKey": base64.b64encode(b"x" * 31).decode()}]},
        {"keys": [{"keyId": 8, "publicKey": 12}]},
        {"keys": [{"keyId": 8}]},
        {"keys": "all"},
        [1, 2],
    ):
        response = await put_keys(organizer, bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["code"] == "error.request.invalid"
    assert await keys_held(wallet_engine) == before


async def test_keys_are_the_organizers_own_and_need_a_role(
    organizer: OrganizerClient, wallet_engine: AsyncEngine, wallet_server: str
) -> None:
    a = Ed25519PrivateKey.generate()
    assert (await put_keys(organizer, factories.key_set((7, a)))).status_code == 200
    other = await new_organizer(wallet_engine, "ACME", url=wallet_server)
    gate = await new_organizer(wallet_engine, "GATE", "access_control", url=wallet_server)
    reader = await new_organizer(wallet_engine, "FEED", "feedback", url=wallet_server)
    try:
        assert (await other.http.get(KEYS)).json() == {"keys": []}
        assert (await gate.http.get(KEYS)).status_code == 200
        refused = await put_keys(gate, factories.key_set((1, a)))
        assert refused.status_code == 403 and refused.json()["code"] == "error.auth.forbidden"
        assert (await reader.http.get(KEYS)).status_code == 403
        anonymous = await organizer.http.get(KEYS, headers={"Authorization": ""})
        assert anonymous.status_code == 401
    finally:
        for client in (other, gate, reader):
            await client.http.aclose()
    assert await keys_held(wallet_engine) == [(7, True)]


async def test_the_scanner_admits_only_barcodes_the_box_office_signed(
    organizer: OrganizerClient, wallet_engine: AsyncEngine, wallet_clock: FixedClock
) -> None:
    active, previous, stranger = (Ed25519PrivateKey.generate() for _ in range(3))
    assert (
        await put_keys(organizer, factories.key_set((3, previous), (4, active)))
    ).status_code == 200
    barcodes = {
        "new": factories.signed_barcode(active, 4, 1001),
        "old": factories.signed_barcode(previous, 3, 1002),  # signed before the rotation
        "forged": factories.signed_barcode(stranger, 4, 1003),  # claims the active key
        "unknown": factories.signed_barcode(stranger, 5, 1004),
        "expired": factories.signed_barcode(active, 4, 1005, valid_until=NOW - timedelta(hours=1)),
    }
    original = barcodes["new"]
    flipped = "A" if original[60] != "A" else "B"
    barcodes["tampered"] = original[:60] + flipped + original[61:]  # a signed byte changed
    barcodes["unsigned"] = "BC1.T-06.c2lnbmVk"
    await organizer.inject(
        *(
            factories.ticket(f"T-{i:02d}", security={"barcode": code})
            for i, code in enumerate(barcodes.values())
        )
    )
    group = (await organizer.http.get("/api/v1/organizer/activation-groups/G1")).json()
    group_secret = base64.b64decode(group["secret"])

    async def scan(barcode: str) -> dict[str, Any]:
        code = rotating.totp(rotating.ticket_secret(group_secret, barcode), wallet_clock.now())
        response = await organizer.post(
            "/api/v1/scanner/validate",
            {"code": rotating.payload("G1", barcode, code), "scanner": "gate-1"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        ScanResult.model_validate(body)
        return body

    assert (await scan(barcodes["new"]))["result"] == "VALID"
    assert (await scan(barcodes["old"]))["result"] == "VALID"
    expected = {
        "forged": "error.barcode.invalid_signature",
        "tampered": "error.barcode.invalid_signature",
        "unknown": "error.barcode.unknown_key",
        "expired": "error.barcode.expired",
        "unsigned": "error.barcode.malformed",
    }
    for name, code in expected.items():
        refused = await scan(barcodes[name])
        assert (refused["result"], refused.get("code")) == ("INVALID_BARCODE", code), name
        assert "stepOffset" not in refused
    # Retiring the previous key: its barcodes are refused from then on.
    assert (await put_keys(organizer, factories.key_set((4, active)))).json()["retired"] == [3]
    wallet_clock.advance(15)
    retired = await scan(barcodes["old"])
    assert (retired["result"], retired["code"]) == ("INVALID_BARCODE", "error.barcode.unknown_key")
    assert (await scan(barcodes["new"]))["result"] == "DUPLICATE"
    async with db.read(wallet_engine) as conn:
        admitted = (await conn.execute(sa.select(db.admission.c.barcode))).scalars().all()
        results = (
            (await conn.execute(sa.select(db.scan.c.result).order_by(db.scan.c.id))).scalars().all()
        )
    assert sorted(admitted) == sorted([barcodes["new"], barcodes["old"]])
    assert results == ["VALID", "VALID", *["INVALID_BARCODE"] * 6, "DUPLICATE"]


async def test_no_registered_key_admits_nothing(
    organizer: OrganizerClient, wallet_engine: AsyncEngine, wallet_clock: FixedClock
) -> None:
    barcode = factories.signed_barcode(Ed25519PrivateKey.generate(), 4, 1001)
    await organizer.inject(factories.ticket("T-01", security={"barcode": barcode}))
    group = (await organizer.http.get("/api/v1/organizer/activation-groups/G1")).json()
    secret = rotating.ticket_secret(base64.b64decode(group["secret"]), barcode)
    code = rotating.payload("G1", barcode, rotating.totp(secret, wallet_clock.now()))
    scanned = (await organizer.post("/api/v1/scanner/validate", {"code": code})).json()
    assert (scanned["result"], scanned["code"]) == ("INVALID_BARCODE", "error.barcode.unknown_key")
    assert await factories.count(wallet_engine, db.admission) == 0
