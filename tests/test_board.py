"""Two server processes on one database: each process's availability board follows the change
log (polling, and LISTEN/NOTIFY on PostgreSQL) and both converge on every committed change."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.inventory.services import PlaceRequest, confirm_hold, hold_places
from billetterie.shared.db import read
from tests.conftest import SECRET, Backend, set_secrets
from tests.factories import import_document, setup_document


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def two_servers(
    backend: Backend, scratch_engine: AsyncEngine, tmp_path: Path
) -> AsyncIterator[list[str]]:
    await import_document(scratch_engine, setup_document("ACME"))
    await set_secrets(scratch_engine, "ACME", [("ACME_WEB", "ACMEWEB", "web")])
    env = {
        **os.environ,
        "BILLETTERIE_DATABASE_URL": backend.scratch_url,
        "BILLETTERIE_VAR_DIR": str(tmp_path),
        "BILLETTERIE_JWT_SECRET": "board-test-key-" + "k" * 32,
        "BILLETTERIE_RATE_LIMITS": "off",
    }
    urls, processes = [], []
    for _ in range(2):
        port = free_port()
        processes.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "billetterie.cli",
                "serve",
                "--port",
                str(port),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        async with httpx.AsyncClient() as client:
            for url in urls:
                for _ in range(300):
                    try:
                        if (await client.get(f"{url}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            await asyncio.wait_for(process.wait(), timeout=30)


async def test_boards_of_two_processes_converge(
    two_servers: list[str], scratch_engine: AsyncEngine
) -> None:
    async with httpx.AsyncClient() as client:
        token = (
            await client.post(
                f"{two_servers[0]}/tnai/backend-apis/v1/auth",
                json={"operator": "ACME_WEB", "partner": "web", "secret": SECRET},
            )
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with read(scratch_engine) as conn:
            performance_id, category_id, institution_id, channel_id = (
                await conn.execute(
                    sa.text(
                        "SELECT p.id, c.id, p.institution_id, ch.id FROM performance p "
                        "JOIN seat_category c "
                        "ON c.logical_configuration_id = p.logical_configuration_id "
                        "JOIN sales_channel ch ON ch.institution_id = p.institution_id "
                        "WHERE p.code = 'SH01' AND c.code = 'C1' AND ch.code = 'WEB'"
                    )
                )
            ).one()

        async def seen(url: str) -> tuple[int, int]:
            answer = (
                await client.post(
                    f"{url}/tnseb/backend-apis/availabilityService/v1_33/getPerformanceAvailability",
                    json={"performanceIds": [performance_id], "seatCategoryIds": [category_id]},
                    headers=headers,
                )
            ).json()
            return answer["sequence"], answer["performanceAvailabilities"][0]["details"][0]["sold"]

        before = [await seen(url) for url in two_servers]
        assert before == [(1, 0), (1, 0)]  # provisioning was sequence 1
        now = datetime.now(UTC)
        for round_number in range(1, 4):
            hold = await hold_places(
                scratch_engine,
                institution_id=institution_id,
                sales_channel_id=channel_id,
                contingent_ids=[],
                cart=f"c{round_number}",
                requests=[
                    PlaceRequest(2, performance_id=performance_id, seat_category_id=category_id)
                ],
                expires_at=now + timedelta(minutes=10),
                now=now,
            )
            await confirm_hold(
                scratch_engine, institution_id=institution_id, hold_id=hold.id, now=now
            )
            expected = (1 + 2 * round_number, 2 * round_number)  # a hold and a sale per round
            deadline = time.monotonic() + 10
            views = [await seen(url) for url in two_servers]
            while views != [expected, expected] and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                views = [await seen(url) for url in two_servers]
            assert views == [expected, expected]
