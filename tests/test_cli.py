"""The command line: migrate, setup import/export, operators, and the demo serving for real."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from billetterie.cli import app
from billetterie.shared.db import create_engine, metadata, transaction
from tests.conftest import Backend
from tests.factories import setup_document

runner = CliRunner()


def empty_database(url: str) -> None:
    async def run() -> None:
        engine = create_engine(url)
        async with transaction(engine) as conn:
            for table in reversed(metadata.sorted_tables):
                await conn.execute(table.delete())
        await engine.dispose()

    asyncio.run(run())


@pytest.fixture
def cli_env(backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI pointed at the backend's scratch database; emptied afterwards."""
    monkeypatch.setenv("BILLETTERIE_DATABASE_URL", backend.scratch_url)
    monkeypatch.setenv("BILLETTERIE_VAR_DIR", str(tmp_path))
    yield tmp_path
    empty_database(backend.scratch_url)


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_import_export_round_trip(cli_env: Path) -> None:
    source = write(cli_env / "acme.yaml", setup_document("ACME"))
    first = runner.invoke(app, ["setup", "import", str(source)])
    assert first.exit_code == 0, first.output
    assert "setup version 1" in first.output
    exported = cli_env / "export.yaml"
    assert runner.invoke(app, ["setup", "export", "ACME", "-o", str(exported)]).exit_code == 0
    again = runner.invoke(app, ["setup", "import", str(exported)])
    assert again.exit_code == 0
    assert "0 row(s) changed" in again.output
    assert "setup version 1" in again.output
    to_stdout = runner.invoke(app, ["setup", "export", "ACME"])
    assert yaml.safe_load(to_stdout.stdout) == yaml.safe_load(exported.read_text(encoding="utf-8"))


def test_invalid_file_names_the_path_and_imports_nothing(cli_env: Path, backend: Backend) -> None:
    shape = setup_document("ACME")
    shape["products"][0]["event"]["performances"][1]["start"] = "next tuesday"
    result = runner.invoke(app, ["setup", "import", str(write(cli_env / "shape.yaml", shape))])
    assert result.exit_code == 2
    assert "1 problem(s), nothing imported" in result.output
    assert "products[0].event.performances[1].start: not an ISO date" in result.output
    references = setup_document("ACME")
    references["products"][0]["season"] = "S9"
    references["products"][1]["vatCode"] = "NOPE"
    result = runner.invoke(app, ["setup", "import", str(write(cli_env / "refs.yaml", references))])
    assert result.exit_code == 2
    assert "products[0].season: unknown season S9" in result.output
    assert "products[1].vatCode: unknown VAT code NOPE" in result.output

    async def institutions() -> int:
        engine = create_engine(backend.scratch_url)
        async with engine.connect() as conn:
            count = (await conn.execute(sa.text("SELECT count(*) FROM institution"))).scalar_one()
        await engine.dispose()
        return int(count)

    assert asyncio.run(institutions()) == 0


def test_a_refused_change_names_the_reason_and_imports_nothing(
    cli_env: Path, backend: Backend
) -> None:
    from tests.test_setup_import import an_order_at, with_box_office

    first = write(cli_env / "box.yaml", with_box_office(setup_document("ACME")))
    assert runner.invoke(app, ["setup", "import", str(first)]).exit_code == 0

    async def order() -> None:
        engine = create_engine(backend.scratch_url)
        await an_order_at(engine, "ACMEBOX")
        await engine.dispose()

    asyncio.run(order())
    result = runner.invoke(
        app, ["setup", "import", str(write(cli_env / "less.yaml", setup_document("ACME")))]
    )
    assert result.exit_code == 2, result.output
    assert "nothing imported" in result.output
    assert "error.setup.in_use: point of sale ACMEBOX has orders (1)" in result.output


def test_broken_yaml_names_the_line(cli_env: Path) -> None:
    path = cli_env / "broken.yaml"
    path.write_text("institution:\n  code: [unclosed\n", encoding="utf-8")
    result = runner.invoke(app, ["setup", "import", str(path)])
    assert result.exit_code == 2
    assert "not valid YAML" in result.output
    assert "line 3" in result.output


def test_operators_create_then_authenticate(cli_env: Path) -> None:
    assert (
        runner.invoke(
            app, ["setup", "import", str(write(cli_env / "a.yaml", setup_document("ACME")))]
        ).exit_code
        == 0
    )
    created = runner.invoke(
        app,
        [
            "operators",
            "create",
            "ACME_PARTNER",
            "--point-of-sale",
            "ACMERES",
            "--partner",
            "p1",
            "--secret",
            "pw-1",
        ],
    )
    assert created.exit_code == 0, created.output
    assert "ACME_PARTNER" in created.output
    unknown = runner.invoke(app, ["operators", "create", "ACME_X", "-p", "NOPOS", "--partner", "p"])
    assert unknown.exit_code == 2
    assert "no point of sale NOPOS" in unknown.output
    bad_login = runner.invoke(
        app, ["operators", "create", "nologin", "-p", "ACMERES", "--partner", "p"]
    )
    assert bad_login.exit_code == 2


def test_export_of_unknown_institution(cli_env: Path) -> None:
    result = runner.invoke(app, ["setup", "export", "NOBODY"])
    assert result.exit_code == 2
    assert "no institution NOBODY" in result.output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_demo_serves_the_demo_institution(tmp_path: Path) -> None:
    """``billetterie demo`` on a fresh SQLite: migrates, loads DEMO, prints the secret, serves."""
    port = free_port()
    env = {**os.environ, "BILLETTERIE_VAR_DIR": str(tmp_path), "BILLETTERIE_DEMO_SECRET": "demo-pw"}
    env.pop("BILLETTERIE_DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "billetterie.cli", "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        token = httpx.post(
            f"{base}/tnai/backend-apis/v1/auth",
            json={"operator": "DEMO_RESELLER1", "partner": "reseller1", "secret": "demo-pw"},
        ).json()["token"]
        catalog = httpx.post(
            f"{base}/tnseb/backend-apis/catalogService/v1_33/getCatalog",
            json={},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        codes = {p["code"] for s in catalog["catalogData"]["seasons"] for p in s["products"]}
        assert codes == {"HAMLET", "FCDEMO1", "MUSVISIT"}
        assert (tmp_path / "billetterie.db").exists()
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert "demo secret: demo-pw" in output
    assert "DEMO_RESELLER1" in output


def test_a_server_process_freezes_its_start_up_heap_and_collects_less_often() -> None:
    import gc

    from billetterie.serving import tune_collector

    threshold = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (50_000, 20, 10)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
