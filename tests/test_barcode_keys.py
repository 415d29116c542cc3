"""Barcode signing keys (creation on first use, encryption at rest, rotation, retirement), the
revocation list, their GET endpoints (authorization, ETag/304) and the CLI, on both databases."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from billetterie.catalog.services import OrganizationRef, organization_refs
from billetterie.cli import app as cli
from billetterie.sales import barcode_keys as keys
from billetterie.sales.barcodes import UnknownBarcodeKey, decode, verify
from billetterie.shared.audit import audit_entry
from billetterie.shared.db import read, transaction
from tests.conftest import NOW, Api, Backend, set_secrets
from tests.factories import import_document, setup_document

VAULT = keys.KeyVault("test-barcode-secret")
UNTIL = NOW + timedelta(days=60)


@pytest.fixture
async def orgs(scratch_engine: AsyncEngine) -> AsyncIterator[dict[str, OrganizationRef]]:
    """Two institutions (ACME, BETA) with one organization each, and their web operators."""
    await import_document(scratch_engine, setup_document("ACME"))
    await import_document(scratch_engine, setup_document("BETA"))
    await set_secrets(scratch_engine, "ACME", [("ACME_WEB", "ACMEWEB", "web")])
    await set_secrets(scratch_engine, "BETA", [("BETA_WEB", "BETAWEB", "web")])
    async with read(scratch_engine) as conn:
        yield {ref.institution_code: ref for ref in await organization_refs(conn)}


async def signing(engine: AsyncEngine, ref: OrganizationRef) -> keys.SigningKey:
    async with transaction(engine) as conn:
        return await keys.signing_key(
            conn,
            VAULT,
            institution_id=ref.institution_id,
            organization_id=ref.organization_id,
            now=NOW,
        )


async def barcode(engine: AsyncEngine, ref: OrganizationRef, ticket_id: int = 11) -> str:
    async with transaction(engine) as conn:
        return await keys.issue_barcode(
            conn,
            VAULT,
            institution_id=ref.institution_id,
            organization_id=ref.organization_id,
            ticket_id=ticket_id,
            performance_id=None,
            valid_until=UNTIL,
            now=NOW,
        )


async def verification(engine: AsyncEngine, ref: OrganizationRef) -> dict[int, object]:
    async with read(engine) as conn:
        return dict(await keys.verification_keys(conn, institution_id=ref.institution_id))


async def audit_actions(engine: AsyncEngine, prefix: str) -> list[str]:
    async with read(engine) as conn:
        rows = await conn.execute(
            sa.select(audit_entry.c.action)
            .where(audit_entry.c.action.like(prefix + "%"))
            .order_by(audit_entry.c.id)
        )
        return list(rows.scalars())


async def test_key_is_created_once_and_stored_encrypted(
    scratch_engine: AsyncEngine, orgs: dict[str, OrganizationRef]
) -> None:
    first = await signing(scratch_engine, orgs["ACME"])
    again = await signing(scratch_engine, orgs["ACME"])
    assert first.key_id == again.key_id
    seed = first.private_key.private_bytes_raw()
    assert again.private_key.private_bytes_raw() == seed
    async with read(scratch_engine) as conn:
        row = (await conn.execute(sa.select(keys.barcode_key))).one()
    assert row.state == "ACTIVE"
    assert seed not in bytes(row.private_key)
    assert len(bytes(row.private_key)) == 12 + 32 + 16  # nonce, seed, GCM tag
    assert await audit_actions(scratch_engine, "sales.barcode_key") == ["sales.barcode_key.created"]
    with pytest.raises(RuntimeError, match="barcode_key_secret"):
        keys.KeyVault("another-secret").open(
            bytes(row.private_key),
            institution_id=row.institution_id,
            organization_id=row.organization_id,
            public_key=bytes(row.public_key),
        )
    # The ciphertext is bound to its row: it does not open as another organization's key.
    with pytest.raises(RuntimeError):
        VAULT.open(
            bytes(row.private_key),
            institution_id=row.institution_id,
            organization_id=row.organization_id + 1,
            public_key=bytes(row.public_key),
        )


async def test_concurrent_first_uses_create_one_key(
    scratch_engine: AsyncEngine, orgs: dict[str, OrganizationRef]
) -> None:
    results = await asyncio.gather(*(signing(scratch_engine, orgs["ACME"]) for _ in range(4)))
    assert len({key.key_id for key in results}) == 1
    async with read(scratch_engine) as conn:
        count = (
            await conn.execute(sa.select(sa.func.count()).select_from(keys.barcode_key))
        ).scalar()
    assert count == 1


async def test_issued_barcodes_verify_with_the_published_keys(
    scratch_engine: AsyncEngine, orgs: dict[str, OrganizationRef]
) -> None:
    code = await barcode(scratch_engine, orgs["ACME"], ticket_id=99)
    payload = verify(code, await verification(scratch_engine, orgs["ACME"]), NOW)  # type: ignore[arg-type]
    assert (payload.institution_id, payload.ticket_id, payload.performance_id) == (
        orgs["ACME"].institution_id,
        99,
        0,
    )
    assert payload.valid_until == UNTIL
    # Another institution's keys do not verify it.
    await signing(scratch_engine, orgs["BETA"])
    with pytest.raises(UnknownBarcodeKey):
        verify(code, await verification(scratch_engine, orgs["BETA"]), NOW)  # type: ignore[arg-type]


async def test_an_order_s_barcodes_are_issued_with_one_key(
    scratch_engine: AsyncEngine, orgs: dict[str, OrganizationRef]
) -> None:
    acme = orgs["ACME"]
    async with transaction(scratch_engine) as conn:
        codes = await keys.issue_barcodes(
            conn,
            VAULT,
            institution_id=acme.institution_id,
            organization_id=acme.organization_id,
            tickets=[
                keys.BarcodeRequest(1, 40, UNTIL),
                keys.BarcodeRequest(2, None, UNTIL + timedelta(days=1)),
            ],
            now=NOW,
        )
        assert (
            await keys.issue_barcodes(
                conn,
                VAULT,
                institution_id=acme.institution_id,
                organization_id=acme.organization_id,
                tickets=[],
                now=NOW,
            )
            == []
        )
    published = await verification(scratch_engine, acme)
    payloads = [verify(code, published, NOW) for code in codes]  # type: ignore[arg-type]
    assert [(p.ticket_id, p.performance_id, p.valid_until) for p in payloads] == [
        (1, 40, UNTIL),
        (2, 0, UNTIL + timedelta(days=1)),
    ]
    assert len({p.key_id for p in payloads}) == 1


async def test_rotation_keeps_old_codes_verifiable_until_retired(
    scratch_engine: AsyncEngine, orgs: dict[str, OrganizationRef]
) -> None:
    acme = orgs["ACME"]
    old_code = await barcode(scratch_engine, acme)
    old_id = decode(old_code)[0].key_id
    async with transaction(scratch_engine) as conn:
        new = await keys.rotate(
            conn,
            VAULT,
            institution_id=acme.institution_id,
            organization_id=acme.organization_id,
            now=NOW,
            actor="test",
        )
    assert new.key_id != old_id and new.state == "ACTIVE"
    new_code = await barcode(scratch_engine, acme)
    assert decode(new_code)[0].key_id == new.key_id
    published = await verification(scratch_engine, acme)
    assert set(published) == {old_id, new.key_id}
    assert verify(old_code, published, NOW).ticket_id == 11  # type: ignore[arg-type]
    async with read(scratch_engine) as conn:
        states = {
            k.key_id: k.state
            for k in await keys.public_keys(conn, institution_id=acme.institution_id)
        }
    assert states == {old_id: "PREVIOUS", new.key_id: "ACTIVE"}

    async with transaction(scratch_engine) as conn:
        with pytest.raises(keys.ActiveKeyCannotRetire) as caught:
            await keys.retire(
                conn, institution_id=acme.institution_id, key_id=new.key_id, now=NOW, actor="t"
            )
    assert caught.value.code == "error.barcode.key_active"
    async with transaction(scratch_engine) as conn:
        with pytest.raises(keys.UnknownBarcodeKeyId):  # another institution's id is unknown here
            await keys.retire(
                conn, institution_id=orgs["BETA"].institution_id, key_id=old_id, now=NOW, actor="t"
            )
    for _ in range(2):  # retiring twice changes nothing the second time
        async with transaction(scratch_engine) as conn:
            retired = await keys.retire(
                conn, institution_id=acme.institution_id, key_id=old_id, now=NOW, actor="t"
            )
        assert retired.state == "RETIRED"
    with pytest.raises(UnknownBarcodeKey):
        verify(old_code, await verification(scratch_engine, acme), NOW)  # type: ignore[arg-type]
    assert verify(new_code, await verification(scratch_engine, acme), NOW).ticket_id == 11  # type: ignore[arg-type]
    assert await audit_actions(scratch_engine, "sales.barcode_key") == [
        "sales.barcode_key.created",
        "sales.barcode_key.rotated",
        "sales.barcode_key.retired",
    ]


async def revoke(
    engine: AsyncEngine, institution_id: int, ids: list[int], reason: str = "CANCELLED"
) -> list[int]:
    async with transaction(engine) as conn:
        return await keys.revoke(
            conn, institution_id=institution_id, ticket_ids=ids, reason=reason, now=NOW
        )


async def test_revocations_are_listed_once_in_sequence(
    scratch_engine: AsyncEngine, orgs: dict[str, OrganizationRef]
) -> None:
    acme, beta = orgs["ACME"].institution_id, orgs["BETA"].institution_id
    assert await revoke(scratch_engine, acme, [5, 3, 5]) == [3, 5]
    assert await revoke(scratch_engine, acme, [3, 7], "INVALIDATED") == [7]
    assert await revoke(scratch_engine, acme, [3]) == []
    assert await revoke(scratch_engine, acme, []) == []
    assert await revoke(scratch_engine, beta, [3]) == [3]
    async with read(scratch_engine) as conn:
        page = await keys.revocations_since(conn, institution_id=acme, since=0)
        assert [(r.sequence, r.ticket_id, r.reason) for r in page.revocations] == [
            (1, 3, "CANCELLED"),
            (2, 5, "CANCELLED"),
            (3, 7, "INVALIDATED"),
        ]
        assert (page.cursor, page.complete) == (3, True)
        first = await keys.revocations_since(conn, institution_id=acme, since=0, limit=2)
        assert ([r.ticket_id for r in first.revocations], first.cursor, first.complete) == (
            [3, 5],
            2,
            False,
        )
        rest = await keys.revocations_since(conn, institution_id=acme, since=first.cursor, limit=2)
        assert ([r.ticket_id for r in rest.revocations], rest.cursor, rest.complete) == (
            [7],
            3,
            True,
        )
        assert await keys.revocation_sequence(conn, institution_id=acme) == 3
        assert await keys.revocation_sequence(conn, institution_id=beta) == 1
    assert (
        await audit_actions(scratch_engine, "sales.barcode.revoked")
        == ["sales.barcode.revoked"] * 3
    )


@pytest.mark.parametrize(
    ("ids", "reason"), [([1], "LOST"), ([0], "CANCELLED"), ([2**63], "CANCELLED")]
)
async def test_bad_revocations_change_nothing(
    scratch_engine: AsyncEngine, orgs: dict[str, OrganizationRef], ids: list[int], reason: str
) -> None:
    with pytest.raises(keys.InvalidRevocation) as caught:
        await revoke(scratch_engine, orgs["ACME"].institution_id, ids, reason)
    assert caught.value.code == "error.barcode.invalid_revocation"
    async with read(scratch_engine) as conn:
        count = (
            await conn.execute(sa.select(sa.func.count()).select_from(keys.barcode_revocation))
        ).scalar()
    assert count == 0


async def test_concurrent_revocations_number_without_gaps(
    scratch_engine: AsyncEngine, orgs: dict[str, OrganizationRef]
) -> None:
    acme = orgs["ACME"].institution_id
    results = await asyncio.gather(
        *(revoke(scratch_engine, acme, [i, i + 1, 100]) for i in range(1, 20, 2))
    )
    assert sorted(i for r in results for i in r) == [*range(1, 21), 100]
    async with read(scratch_engine) as conn:
        page = await keys.revocations_since(conn, institution_id=acme, since=0)
    assert [r.sequence for r in page.revocations] == list(range(1, 22))


# --- HTTP ------------------------------------------------------------------------------------


async def test_keys_endpoint(
    scratch_engine: AsyncEngine, scratch_api: Api, orgs: dict[str, OrganizationRef]
) -> None:
    assert (await scratch_api.client.get("/api/v1/barcodes/keys")).status_code == 401
    acme = await signing(scratch_engine, orgs["ACME"])
    await signing(scratch_engine, orgs["BETA"])
    token = await scratch_api.token("ACME_WEB", "web")
    auth = {"Authorization": f"Bearer {token}"}
    response = await scratch_api.client.get("/api/v1/barcodes/keys", headers=auth)
    assert response.status_code == 200
    body = response.json()
    assert [k["keyId"] for k in body["keys"]] == [acme.key_id]  # not BETA's
    key = body["keys"][0]
    raw = acme.private_key.public_key().public_bytes_raw()
    assert base64.b64decode(key["publicKey"]) == raw
    assert load_pem_public_key(key["pem"].encode()).public_bytes_raw() == raw  # type: ignore[union-attr]
    assert (key["algorithm"], key["state"], key["organizationId"]) == (
        "Ed25519",
        "ACTIVE",
        orgs["ACME"].organization_id,
    )
    etag = response.headers["etag"]
    cached = await scratch_api.client.get(
        "/api/v1/barcodes/keys", headers={**auth, "If-None-Match": etag}
    )
    assert cached.status_code == 304
    async with transaction(scratch_engine) as conn:
        await keys.rotate(
            conn,
            VAULT,
            institution_id=orgs["ACME"].institution_id,
            organization_id=orgs["ACME"].organization_id,
            now=NOW,
            actor="test",
        )
    changed = await scratch_api.client.get(
        "/api/v1/barcodes/keys", headers={**auth, "If-None-Match": etag}
    )
    assert changed.status_code == 200
    assert [k["state"] for k in changed.json()["keys"]] == ["PREVIOUS", "ACTIVE"]


async def test_revocations_endpoint(
    scratch_engine: AsyncEngine, scratch_api: Api, orgs: dict[str, OrganizationRef]
) -> None:
    url = "/api/v1/barcodes/revocations"
    assert (await scratch_api.client.get(url)).status_code == 401
    await revoke(scratch_engine, orgs["ACME"].institution_id, [4, 2])
    await revoke(scratch_engine, orgs["BETA"].institution_id, [9])
    auth = {"Authorization": f"Bearer {await scratch_api.token('ACME_WEB', 'web')}"}
    first = await scratch_api.client.get(url, headers=auth)
    assert first.status_code == 200
    assert first.json() == {
        "cursor": "r2",
        "complete": True,
        "revocations": [
            {"sequence": 1, "ticketId": 2, "reason": "CANCELLED", "revokedAt": NOW.isoformat()},
            {"sequence": 2, "ticketId": 4, "reason": "CANCELLED", "revokedAt": NOW.isoformat()},
        ],
    }
    etag = first.headers["etag"]
    again = await scratch_api.client.get(url, headers={**auth, "If-None-Match": etag})
    assert again.status_code == 304
    tail = await scratch_api.client.get(url, params={"since": "r2"}, headers=auth)
    assert tail.json() == {"cursor": "r2", "complete": True, "revocations": []}
    await revoke(scratch_engine, orgs["ACME"].institution_id, [8], "INVALIDATED")
    moved = await scratch_api.client.get(url, headers={**auth, "If-None-Match": etag})
    assert moved.status_code == 200 and moved.json()["cursor"] == "r3"
    after = await scratch_api.client.get(url, params={"since": "r2"}, headers=auth)
    assert [r["ticketId"] for r in after.json()["revocations"]] == [8]
    for bad in ("x1", "-1", "r" + "9" * 19):
        response = await scratch_api.client.get(url, params={"since": bad}, headers=auth)
        assert response.status_code == 400, bad
        assert response.headers["content-type"] == "application/problem+json"


# --- CLI --------------------------------------------------------------------------------------


def test_cli_rotate_and_list(
    backend: Backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    orgs: dict[str, OrganizationRef],
) -> None:
    monkeypatch.setenv("BILLETTERIE_DATABASE_URL", backend.scratch_url)
    monkeypatch.setenv("BILLETTERIE_VAR_DIR", str(tmp_path))
    runner = CliRunner()
    first = runner.invoke(cli, ["barcodes", "rotate", "--organization", "ACME"])
    assert first.exit_code == 0, first.output
    assert "new active key" in first.output
    second = runner.invoke(
        cli, ["barcodes", "rotate", "--organization", "ACME", "--institution", "ACME"]
    )
    assert second.exit_code == 0, second.output
    assert (tmp_path / "barcode.key").exists()  # the generated secret
    listing = runner.invoke(cli, ["barcodes", "keys"])
    assert listing.exit_code == 0, listing.output
    assert listing.output.count("ACTIVE") == 1 and listing.output.count("PREVIOUS") == 1
    unknown = runner.invoke(cli, ["barcodes", "rotate", "--organization", "NOPE"])
    assert unknown.exit_code == 2
    assert "no organization NOPE" in unknown.output

    first_id = first.output.split("new active key ")[1].split()[0]
    second_id = second.output.split("new active key ")[1].split()[0]
    active = runner.invoke(cli, ["barcodes", "retire", second_id])
    assert active.exit_code == 2 and "rotate before retiring" in active.output
    retired = runner.invoke(cli, ["barcodes", "retire", first_id])
    assert retired.exit_code == 0, retired.output
    assert "RETIRED" not in runner.invoke(cli, ["barcodes", "keys"]).output
    assert "RETIRED" in runner.invoke(cli, ["barcodes", "keys", "--all"]).output
    assert runner.invoke(cli, ["barcodes", "retire", "999999"]).exit_code == 2


async def test_cli_key_signs_with_the_settings_secret(
    backend: Backend, tmp_path: Path, scratch_engine: AsyncEngine, orgs: dict[str, OrganizationRef]
) -> None:
    """A key made by the CLI under the settings secret opens with a vault of that secret."""
    from billetterie.config import Settings

    secret = Settings(var_dir=tmp_path).resolved_barcode_key_secret()
    assert secret == Settings(var_dir=tmp_path).resolved_barcode_key_secret()
    assert (
        Settings(var_dir=tmp_path, barcode_key_secret="given").resolved_barcode_key_secret()
        == "given"
    )
    vault = keys.KeyVault(secret)
    async with transaction(scratch_engine) as conn:
        made = await keys.rotate(
            conn,
            vault,
            institution_id=orgs["ACME"].institution_id,
            organization_id=orgs["ACME"].organization_id,
            now=NOW,
            actor="test",
        )
    async with transaction(scratch_engine) as conn:
        key = await keys.signing_key(
            conn,
            vault,
            institution_id=orgs["ACME"].institution_id,
            organization_id=orgs["ACME"].organization_id,
            now=NOW,
        )
    assert key.key_id == made.key_id
    assert key.private_key.public_key().public_bytes_raw() == made.public_key
