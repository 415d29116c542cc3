"""The wallet's command line: migrate, organizers create (the key printed once works over HTTP),
revoke-key, sweep, and ``billetterie wallet ...`` mounting the same commands; plus ``serve``
as a real process."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import typer
from click.testing import Result
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from billetterie.cli import app as box_office_cli
from billetterie_wallet import db
from billetterie_wallet.cli import app
from tests.wallet.conftest import WalletBackend, free_port

runner = CliRunner()


async def invoke(command: typer.Typer, *args: str) -> Result:
    """Run a command as the shell would: in a thread with no event loop of its own."""
    return await asyncio.to_thread(runner.invoke, command, list(args))


KEY = re.compile(r"API key \(shown once\): (bwk_\S+)")


@pytest.fixture
def cli_env(
    wallet_backend: WalletBackend,
    wallet_engine: AsyncEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    monkeypatch.setenv("BILLETTERIE_WALLET_DATABASE_URL", wallet_backend.url)
    monkeypatch.setenv("BILLETTERIE_WALLET_VAR_DIR", str(tmp_path))
    yield tmp_path


async def test_organizers_create_prints_a_working_key(
    cli_env: Path, wallet_engine: AsyncEngine, wallet_server: str
) -> None:
    assert (await invoke(app, "migrate")).exit_code == 0
    created = await invoke(app, "organizers", "create", "DEMO", "--roles", "feedback,reports")
    assert created.exit_code == 0, created.output
    match = KEY.search(created.output)
    assert match, created.output
    key = match.group(1)
    async with db.read(wallet_engine) as conn:
        stored = (await conn.execute(sa.select(db.api_key.c.key_hash, db.api_key.c.roles))).one()
    assert key not in stored.key_hash and stored.roles == "feedback,reports"
    async with httpx.AsyncClient(base_url=wallet_server) as client:
        me = await client.get("/api/v1/organizer/me", headers={"Authorization": f"Bearer {key}"})
        assert me.json()["roles"] == ["feedback", "reports"]
        key_id = me.json()["keyId"]
        assert (await invoke(app, "organizers", "revoke-key", key_id)).exit_code == 0
        after = await client.get("/api/v1/organizer/me", headers={"Authorization": f"Bearer {key}"})
        assert after.status_code == 401
    again = await invoke(app, "organizers", "revoke-key", key_id)
    assert again.exit_code == 2
    bad = await invoke(app, "organizers", "create", "DEMO", "--roles", "root")
    assert bad.exit_code == 2 and "unknown role" in bad.output
    bad_code = await invoke(app, "organizers", "create", "demo org")
    assert bad_code.exit_code == 2
    assert (await invoke(app, "sweep")).exit_code == 0
    # Mounted in the box office's command as `billetterie wallet ...`.
    mounted = await invoke(box_office_cli, "wallet", "organizers", "create", "ACME")
    assert mounted.exit_code == 0 and KEY.search(mounted.output)
    async with db.read(wallet_engine) as conn:
        codes = (
            (await conn.execute(sa.select(db.organizer.c.code).order_by(db.organizer.c.id)))
            .scalars()
            .all()
        )
    assert codes == ["DEMO", "ACME"]


def test_serve_runs_as_a_process(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "BILLETTERIE_WALLET_VAR_DIR": str(tmp_path)}
    env.pop("BILLETTERIE_WALLET_DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "billetterie_wallet.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the wallet did not start"
                time.sleep(0.2)
        assert response.json() == {"status": "ok"}
        assert (tmp_path / "wallet.db").exists()
        docs = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).json()
        assert "/api/v1/organizer/tickets" in docs["paths"]
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr:
            process.stderr.close()
