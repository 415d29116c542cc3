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


async def sh01_c1(engine: AsyncEngine) -> tuple[int, int, int, int]:
    """ACME's performance SH01, its category C1, the institution and the web channel."""
    async with read(engine) as conn:
        row = (
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
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


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
        performance_id, category_id, institution_id, channel_id = await sh01_c1(scratch_engine)

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


async def test_a_board_reading_expired_holds_less_often_never_shows_more_free_places(
    scratch_engine: AsyncEngine,
) -> None:
    from billetterie.inventory.board import Board
    from billetterie.inventory.services import expire_holds
    from billetterie.shared.clock import FixedClock

    await import_document(scratch_engine, setup_document("ACME"))
    performance_id, category_id, institution_id, channel_id = await sh01_c1(scratch_engine)
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    board = Board(scratch_engine, clock=FixedClock(now))

    async def hold(cart: str, quantity: int, expires_at: datetime) -> None:
        await hold_places(
            scratch_engine,
            institution_id=institution_id,
            sales_channel_id=channel_id,
            contingent_ids=[],
            cart=cart,
            requests=[
                PlaceRequest(quantity, performance_id=performance_id, seat_category_id=category_id)
            ],
            expires_at=expires_at,
            now=now - timedelta(minutes=20),
        )

    def held() -> int:
        (view,) = [
            v for v in board.performance_stocks(performance_id) if v.seat_category_id == category_id
        ]
        return view.counts.held

    await hold("running", 2, now + timedelta(minutes=10))
    await hold("late", 3, now - timedelta(minutes=1))
    await board.catch_up()
    await board.catch_up()
    assert held() == 2  # the expired hold, not yet released, reads as free places
    # the sweeper releases it; a catch-up that does not read the expired holds again shows the
    # stock's new counters as they are, not the released places subtracted a second time
    assert await expire_holds(scratch_engine, now=now) == 1
    await board.catch_up(expired_every=3600)
    assert held() == 2
    await hold("late-again", 2, now - timedelta(minutes=1))
    await board.catch_up(expired_every=3600)
    assert held() == 4  # expired, not read again yet: held, never more free than there are
    await board.catch_up()
    assert held() == 2
