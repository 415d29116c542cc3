"""Configuring printing interfaces (setup file, CLI), their schedule in the background loops, and
who may read the execution log."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.background import register_defaults
from billetterie.catalog.setupfile import SetupFileError, parse_document
from billetterie.printing import db as printing_db
from billetterie.printing.models import Function
from billetterie.printing.services import claim_due, list_interfaces, start_execution
from billetterie.setup import export_institution, import_institution
from billetterie.shared.db import read
from billetterie.shared.periodic import registered_periodics
from tests.conftest import NOW, SECRET, Api, Backend, serve, set_secrets
from tests.factories import setup_document
from tests.printing_kit import interface_document

KEY = "bwk_0123456789ab_" + "k" * 43


def with_interface(code: str = "ACME", **overrides: Any) -> dict[str, Any]:
    data = setup_document(code)
    data["printingInterfaces"] = [
        interface_document("https://wallet.example.org", KEY, products=["SHOW"]) | overrides
    ]
    return data


async def api_keys(engine: AsyncEngine) -> list[str]:
    async with read(engine) as conn:
        rows = await conn.execute(sa.select(printing_db.printing_interface.c.api_key))
        return list(rows.scalars())


async def test_setup_file_round_trip_keeps_the_key_out(scratch_engine: AsyncEngine) -> None:
    data = with_interface(schedule={"push-controlled": 30}, batchSize=500)
    await import_institution(scratch_engine, parse_document(data), now=NOW, actor="test")
    async with read(scratch_engine) as conn:
        exported = await export_institution(conn, "ACME")
    assert exported["printingInterfaces"] == [
        {
            "code": "WALLET",
            "type": "WALLET",
            "url": "https://wallet.example.org/api/v1/organizer/tickets",
            "login": "box-office",
            "products": ["SHOW"],
            "schedule": {"push-controlled": 30},
            "batchSize": 500,
        }
    ]
    assert KEY not in yaml.safe_dump(exported)
    # The exported file imports as is: the key stays, nothing changes.
    result = await import_institution(
        scratch_engine, parse_document(exported), now=NOW, actor="test"
    )
    assert await api_keys(scratch_engine) == [KEY]
    async with read(scratch_engine) as conn:
        assert await export_institution(conn, "ACME") == exported
    assert result is not None
    # Dropping the section removes the interface.
    await import_institution(
        scratch_engine, parse_document(setup_document("ACME")), now=NOW, actor="test"
    )
    assert await api_keys(scratch_engine) == []


@pytest.mark.parametrize(
    ("overrides", "path", "message"),
    [
        ({"url": "https://wallet.example.org/api/v1/tickets"}, "url", "does not match"),
        ({"products": ["NOPE"]}, "products[0]", "unknown product NOPE"),
        ({"batchSize": 1001}, "batchSize", "less than or equal to 1000"),
        ({"schedule": {"injection": 5}}, "schedule.injection", "greater than or equal to 10"),
        ({"schedule": {"printing": 60}}, "schedule.printing.[key]", "'injection'"),
        ({"apiKey": "short"}, "apiKey", "at least 16"),
        ({"type": "PDF"}, "type", ""),
    ],
)
def test_setup_file_refuses_bad_interfaces(
    overrides: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(SetupFileError) as caught:
        parse_document(with_interface(**overrides))
    paths = dict(caught.value.problems)
    assert f"printingInterfaces[0].{path}" in paths, caught.value.problems
    assert message in paths[f"printingInterfaces[0].{path}"]


async def test_a_new_interface_needs_its_key(scratch_engine: AsyncEngine) -> None:
    data = with_interface()
    del data["printingInterfaces"][0]["apiKey"]
    with pytest.raises(SetupFileError) as caught:
        await import_institution(scratch_engine, parse_document(data), now=NOW, actor="test")
    assert caught.value.problems == [
        ("printingInterfaces[0].apiKey", "required for a new interface")
    ]
    async with read(scratch_engine) as conn:
        assert await list_interfaces(conn) == []
        # nothing of the document was written either
        assert (await conn.execute(sa.text("SELECT count(*) FROM institution"))).scalar_one() == 0


async def test_each_function_is_claimed_once_per_period(scratch_engine: AsyncEngine) -> None:
    await import_institution(
        scratch_engine,
        parse_document(with_interface(schedule={"push-controlled": 60})),
        now=NOW,
        actor="test",
    )
    [first] = await claim_due(scratch_engine, Function.PUSH_CONTROLLED, NOW)
    assert first.code == "WALLET"
    # Two processes asking at once: one gets it.
    both = await asyncio.gather(
        claim_due(scratch_engine, Function.PUSH_CONTROLLED, NOW + timedelta(seconds=60)),
        claim_due(scratch_engine, Function.PUSH_CONTROLLED, NOW + timedelta(seconds=60)),
    )
    assert sorted(len(c) for c in both) == [0, 1]
    assert (
        await claim_due(scratch_engine, Function.PUSH_CONTROLLED, NOW + timedelta(seconds=119))
        == []
    )
    assert (
        len(await claim_due(scratch_engine, Function.PUSH_CONTROLLED, NOW + timedelta(seconds=120)))
        == 1
    )
    # Injection keeps the default: every 5 minutes.
    assert len(await claim_due(scratch_engine, Function.INJECTION, NOW)) == 1
    assert await claim_due(scratch_engine, Function.INJECTION, NOW + timedelta(seconds=299)) == []
    assert (
        len(await claim_due(scratch_engine, Function.INJECTION, NOW + timedelta(seconds=300))) == 1
    )
    # A disabled interface is never due.
    data = with_interface(enabled=False)
    await import_institution(scratch_engine, parse_document(data), now=NOW, actor="test")
    assert await claim_due(scratch_engine, Function.FEEDBACK, NOW + timedelta(days=1)) == []


def test_the_background_loops_run_the_five_functions() -> None:
    register_defaults()
    names = {p.name: p.every_seconds for p in registered_periodics()}
    assert {n for n in names if n.startswith("printing.")} == {
        f"printing.{f.value}" for f in Function
    }


async def test_execution_log_authorization(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path, clock: Any
) -> None:
    for code in ("ACME", "OTHER"):
        await import_institution(
            scratch_engine, parse_document(with_interface(code)), now=NOW, actor="test"
        )
        await set_secrets(scratch_engine, code, [(f"{code}_WEB", f"{code}WEB", "web")])
    async with read(scratch_engine) as conn:
        interfaces = {i.institution_id: i for i in await list_interfaces(conn)}
    acme = min(interfaces)
    run_id = await start_execution(
        scratch_engine, interfaces[acme], Function.FEEDBACK, trigger="cli", now=NOW
    )
    async with serve(backend.scratch_url, tmp_path, clock, background_tasks=False) as api:
        path = "/api/v1/printing/executions"
        anonymous = await api.client.get(path)
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"].startswith("application/problem+json")
        mine = await api.client.get(path, headers=await bearer(api, "ACME"))
        assert [(e["id"], e["status"]) for e in mine.json()["executions"]] == [(run_id, "RUNNING")]
        other = await api.client.get(path, headers=await bearer(api, "OTHER"))
        assert other.json() == {"executions": [], "next": None}
        bad = await api.client.get(
            path, params={"function": "print"}, headers=await bearer(api, "ACME")
        )
        assert bad.status_code == 400
        assert bad.headers["content-type"].startswith("application/problem+json")
        too_many = await api.client.get(
            path, params={"limit": 201}, headers=await bearer(api, "ACME")
        )
        assert too_many.status_code == 400


async def bearer(api: Api, code: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {await api.token(f'{code}_WEB', 'web', SECRET)}"}


async def cli(backend: Backend, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "BILLETTERIE_DATABASE_URL": backend.scratch_url,
        "BILLETTERIE_VAR_DIR": str(tmp_path),
        "COLUMNS": "200",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "billetterie.cli",
        "printing",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def test_cli_configures_runs_and_reads_the_log(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    await import_institution(
        scratch_engine, parse_document(setup_document("ACME")), now=NOW, actor="test"
    )
    code, out = await cli(
        backend,
        tmp_path,
        "configure",
        "WALLET",
        "--organization",
        "ACME",
        "--url",
        "http://127.0.0.1:9/api/v1/organizer/tickets",  # nothing listens on port 9
        "--product",
        "SHOW",
        "--api-key",
        KEY,
        "--every",
        "push-controlled=60",
    )
    assert code == 0, out
    assert await api_keys(scratch_engine) == [KEY]
    code, out = await cli(backend, tmp_path, "list")
    assert code == 0 and "WALLET" in out and "push-controlled=60" in out and KEY not in out
    refused, out = await cli(
        backend,
        tmp_path,
        "configure",
        "W2",
        "-o",
        "ACME",
        "--url",
        "http://x/tickets",
        "-p",
        "SHOW",
    )
    assert refused == 2 and "organizer/tickets" in out
    # Nothing controlled to push: the run succeeds without calling the wallet.
    code, out = await cli(backend, tmp_path, "run", "push-controlled", "--organization", "ACME")
    assert code == 0 and "SUCCEEDED" in out, out
    # Injection always registers the barcode keys first (a retired key must reach the
    # scanners even when no ticket waits), and feedback always reads the feed: the wallet is
    # unreachable, so both fail after their retries.
    code, out = await cli(backend, tmp_path, "run", "injection", "--organization", "ACME")
    assert code == 1 and "FAILED" in out and "error.printing.wallet" in out, out
    code, out = await cli(backend, tmp_path, "run", "feedback")
    assert code == 1 and "FAILED" in out and "error.printing.wallet" in out, out
    code, out = await cli(backend, tmp_path, "log", "--institution", "ACME")
    assert code == 0, out
    assert "feedback" in out and "injection" in out and "FAILED" in out
    async with read(scratch_engine) as conn:
        e = printing_db.printing_execution.c
        rows = (await conn.execute(sa.select(e.function, e.status).order_by(e.id))).all()
    assert [tuple(r) for r in rows] == [
        ("push-controlled", "SUCCEEDED"),
        ("injection", "FAILED"),
        ("feedback", "FAILED"),
    ]
