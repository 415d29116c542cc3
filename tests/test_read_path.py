"""The availability read path from memory: the channel's versions on the board, decoded tokens
cached, no database round trip on a warm read; and what keeps that correct (setup imports reach
the board, tokens still expire, a changed signature is a different token).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.app import build_app
from billetterie.catalog.models import CatalogScope
from billetterie.catalog.services import channel_state, channel_states
from billetterie.inventory.board import Board
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import read
from tests.conftest import NOW, Api, Backend, settings_for
from tests.factories import import_document, setup_document
from tests.test_availability import AVAILABILITY, acme

PERFORMANCE = "getPerformanceAvailability"


@contextlib.asynccontextmanager
async def served(
    url: str, tmp: Path, clock: FixedClock, *, background: bool
) -> AsyncIterator[tuple[FastAPI, Api]]:
    settings = settings_for(url, tmp).model_copy(update={"background_tasks": background})
    app = build_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, Api(client)


@contextlib.contextmanager
def statements(app: FastAPI) -> Any:
    """The SQL statements the app's engine runs inside the block."""
    seen: list[str] = []
    engine = app.state.runtime.engine.sync_engine

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def board_of(app: FastAPI) -> Board:
    board = app.state.runtime.caches["board"]
    assert isinstance(board, Board)
    return board


async def eventually(check: Callable[[], Any], what: str) -> None:
    for _ in range(100):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def test_warm_reads_make_no_database_round_trip(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    clock = FixedClock(NOW)
    async with served(backend.scratch_url, tmp_path, clock, background=False) as (app, api):
        data = await acme(scratch_engine, api)
        sh01 = data["ids"]["performances"]["SH01"]
        c1 = data["ids"]["categories"][("SH01", "C1")]
        body = {"performanceIds": [sh01], "seatCategoryIds": [c1]}
        mirror = f"/api/v1/availability/performances/{sh01}"
        auth = {"Authorization": f"Bearer {data['token']}"}
        warm = await api.rpc(AVAILABILITY, PERFORMANCE, body, token=data["token"])
        assert warm.status_code == 200, warm.text
        assert (await api.client.get(mirror, headers=auth)).status_code == 200
        with statements(app) as seen:
            for _ in range(5):
                response = await api.rpc(AVAILABILITY, PERFORMANCE, body, token=data["token"])
                assert response.status_code == 200
                assert response.json()["performanceAvailabilities"][0]["details"][0]["free"] == 30
                got = await api.client.get(mirror, headers=auth)
                assert got.status_code == 200 and got.json()["free"] == 30 + 25
                etag = got.headers["etag"]
                again = await api.client.get(mirror, headers={**auth, "If-None-Match": etag})
                assert again.status_code == 304
        assert seen == []
        # refusals are checked against the database: a stale memory never refuses wrongly
        with statements(app) as seen:
            unknown = await api.rpc(
                AVAILABILITY, PERFORMANCE, {"performanceIds": [10**9]}, token=data["token"]
            )
        assert unknown.json()["statusCode"] == "error.availability.unknown_performance"
        assert len(seen) >= 1


async def test_cached_tokens_still_expire_and_a_changed_signature_is_refused(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    clock = FixedClock(NOW)
    async with served(backend.scratch_url, tmp_path, clock, background=False) as (app, api):
        data = await acme(scratch_engine, api)
        body = {"performanceIds": [data["ids"]["performances"]["SH01"]]}
        token = data["token"]
        assert (await api.rpc(AVAILABILITY, PERFORMANCE, body, token=token)).status_code == 200
        assert token in app.state.runtime.caches["tokens"]
        head, payload, signature = token.split(".")
        flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
        forged = await api.rpc(AVAILABILITY, PERFORMANCE, body, token=f"{head}.{payload}.{flipped}")
        assert (forged.status_code, forged.json()["statusCode"]) == (
            401,
            "error.auth.invalid_token",
        )
        clock.set(NOW + timedelta(days=2))
        expired = await api.rpc(AVAILABILITY, PERFORMANCE, body, token=token)
        assert (expired.status_code, expired.json()["statusCode"]) == (
            401,
            "error.auth.expired_token",
        )


async def test_a_setup_import_reaches_the_versions_reads_use(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    clock = FixedClock(NOW)
    async with served(backend.scratch_url, tmp_path, clock, background=True) as (app, api):
        data = await acme(scratch_engine, api)
        sh01 = data["ids"]["performances"]["SH01"]
        body = {"performanceIds": [sh01]}
        first = await api.rpc(AVAILABILITY, PERFORMANCE, body, token=data["token"])
        assert first.json()["performanceAvailabilities"][0]["availabilityLevelName"] == "GOOD"
        board = board_of(app)
        key = (data["channel"], CatalogScope.EXTENDED)
        before = board.channel_states[key]

        # orange for anything under 100 % free: the level moves once the board saw the import
        document = setup_document("ACME")
        document["products"][0]["alertRatio"] = 100
        document["products"][0]["name"] = {"en": "Renamed show"}
        await import_document(scratch_engine, document)
        async with read(scratch_engine) as conn:
            version = (
                await conn.execute(sa.text("SELECT setup_version FROM institution"))
            ).scalar_one()
        assert version == before.setup_version + 1

        async def seen() -> bool:
            state = board.channel_states.get(key)
            return state is not None and state.setup_version == version

        await eventually(seen, "the board reads the new setup version")
        assert board.channel_states[key].catalog.version > before.catalog.version
        after = await api.rpc(AVAILABILITY, PERFORMANCE, body, token=data["token"])
        performance = after.json()["performanceAvailabilities"][0]
        assert board.alert_ratio(performance["productId"]) == 100  # product facts reloaded


@pytest.mark.parametrize("scope", list(CatalogScope))
async def test_channel_states_match_the_database(
    scratch_engine: AsyncEngine, scope: CatalogScope
) -> None:
    await import_document(scratch_engine, setup_document("ACME"))
    async with read(scratch_engine) as conn:
        states = await channel_states(conn)
        institution_id = (await conn.execute(sa.text("SELECT id FROM institution"))).scalar_one()
        channels = (await conn.execute(sa.text("SELECT id FROM sales_channel"))).scalars().all()
        assert channels
        for channel_id in channels:
            assert states[(channel_id, scope)] == await channel_state(
                conn, institution_id, channel_id, scope
            )


async def test_the_performance_mirror_reads_its_filters(
    scratch_engine: AsyncEngine, scratch_api: Api
) -> None:
    data = await acme(scratch_engine, scratch_api)
    sh01 = data["ids"]["performances"]["SH01"]
    c1, c2 = (data["ids"]["categories"][("SH01", code)] for code in ("C1", "C2"))
    auth = {"Authorization": f"Bearer {data['token']}"}
    path = f"/api/v1/availability/performances/{sh01}"

    each = await scratch_api.client.get(f"{path}?seatCategoryIds=-1", headers=auth)
    assert each.status_code == 200
    assert [(d["seatCategoryId"], d["free"]) for d in each.json()["details"]] == sorted(
        [(c1, 30), (c2, 25)]
    )
    both = await scratch_api.client.get(
        f"{path}?seatCategoryIds={c2}&seatCategoryIds={c1}&contingentIds=0", headers=auth
    )
    assert [(d["seatCategoryId"], d["contingentId"]) for d in both.json()["details"]] == [
        (c2, 0),
        (c1, 0),
    ]
    assert both.json()["free"] == 55
    rpc = await scratch_api.rpc(
        AVAILABILITY,
        PERFORMANCE,
        {"performanceIds": [sh01], "seatCategoryIds": [c2, c1], "contingentIds": [0]},
        token=data["token"],
    )
    assert rpc.json()["performanceAvailabilities"][0] == both.json()

    for query in (
        "seatCategoryIds=abc",
        "contingentIds=-2",
        "seatCategoryIds=1_0",
        f"seatCategoryIds={2**53}",
        "&".join(["contingentIds=0"] * 501),
    ):
        refused = await scratch_api.client.get(f"{path}?{query}", headers=auth)
        assert refused.status_code == 400, query
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "error.request.invalid"
    foreign = await scratch_api.client.get(f"{path}?contingentIds=999999", headers=auth)
    assert (foreign.status_code, foreign.json()["code"]) == (
        404,
        "error.availability.invalid_filter",
    )
