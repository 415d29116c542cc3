"""``Idempotency-Key`` on unsafe calls, with a test-only RPC service whose method really writes:
replayed exactly, 409 while in flight, 422 on another body, keys per operator, expiry, lease
takeover, nothing stored for 5xx or unauthenticated calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.app import build_app
from billetterie.compat.rpc import Call, RpcService
from billetterie.compat.schemas import Envelope, Request
from billetterie.config import Settings
from billetterie.shared import audit, idempotency
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import read, transaction
from billetterie.shared.errors import DomainError, InvalidRequest
from tests.conftest import NOW, SECRET, Backend, set_secrets
from tests.factories import import_document, setup_document

SERVICE = "testIdempotencyService"
PATH = f"/tnseb/backend-apis/{SERVICE}/v1_33/mutate"
FREE_PATH = f"/tnseb/backend-apis/{SERVICE}/v1_33/mutateFreely"
PAYMENT_PATH = "/api/v1/test-payments/charge"


class MutateRequest(Request):
    label: str
    wait: bool = False
    outcome: str = "ok"  # ok | business | invalid | crash


class MutateResponse(Envelope):
    counter: int
    label: str


@dataclass
class Gate:
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def mutation_service(gate: Gate) -> RpcService:
    service = RpcService("tnseb", SERVICE, ("v1_33",), "test only")

    async def mutate(payload: MutateRequest, call: Call) -> dict[str, Any]:
        if payload.wait:
            gate.entered.set()
            await gate.release.wait()
        async with transaction(call.runtime.engine) as conn:
            await audit.record(
                conn,
                institution_id=call.operator.institution_id,
                action="test.mutated",
                actor=call.operator.login,
                at=call.runtime.clock.now(),
                label=payload.label,
            )
        counter = await mutations(call.runtime.engine)
        if payload.outcome == "business":
            raise DomainError("sold out", code="error.order.availability")
        if payload.outcome == "invalid":
            raise InvalidRequest("bad label")
        if payload.outcome == "crash":
            raise RuntimeError("a bug")
        return {"counter": counter, "label": payload.label}

    service.method("mutate", request=MutateRequest, response=MutateResponse)(mutate)
    service.method("mutateFreely", request=MutateRequest, response=MutateResponse)(mutate)
    return service


async def mutations(engine: AsyncEngine) -> int:
    async with read(engine) as conn:
        return int(
            (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(audit.audit_entry)
                    .where(audit.audit_entry.c.action == "test.mutated")
                )
            ).scalar_one()
        )


async def stored_keys(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    async with read(engine) as conn:
        k = idempotency.idempotency_key.c
        rows = await conn.execute(sa.select(k.operator, k.key, k.state).order_by(k.id))
        return [(r.operator, r.key, r.state) for r in rows]


@dataclass
class Client:
    http: httpx.AsyncClient
    engine: AsyncEngine
    clock: FixedClock
    gate: Gate
    tokens: dict[str, str]

    async def login(self) -> None:
        """Tokens for both operators at the clock's time (they live an hour)."""
        for name, login in (("web", "ACME_WEB"), ("res", "ACME_RES")):
            response = await self.http.post(
                "/tnai/backend-apis/v1/auth",
                json={"operator": login, "partner": name, "secret": SECRET},
            )
            self.tokens[name] = response.json()["token"]

    async def call(
        self,
        body: dict[str, Any],
        *,
        key: str | None = "key-1",
        operator: str = "web",
        path: str = PATH,
        token: bool = True,
        encoding: str = "identity",
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json", "Accept-Encoding": encoding}
        if token:
            headers["Authorization"] = f"Bearer {self.tokens[operator]}"
        if key is not None:
            headers["Idempotency-Key"] = key
        return await self.http.post(path, content=orjson.dumps(body), headers=headers)


@pytest.fixture
async def client(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> AsyncIterator[Client]:
    await import_document(scratch_engine, setup_document("ACME"))
    await set_secrets(
        scratch_engine, "ACME", [("ACME_WEB", "ACMEWEB", "web"), ("ACME_RES", "ACMERES", "res")]
    )
    settings = Settings(
        var_dir=tmp_path,
        database_url=backend.scratch_url,
        jwt_secret="test-jwt-key-" + "x" * 32,
        rate_limits=False,
        background_tasks=False,
        idempotent_methods=["mutate", "/api/v1/test-payments/"],
        idempotency_lease_seconds=30,
    )
    clock = FixedClock(NOW)
    gate = Gate()
    app: FastAPI = build_app(settings, clock=clock)
    app.include_router(mutation_service(gate).router())

    @app.post(PAYMENT_PATH)
    async def charge(body: dict[str, Any]) -> dict[str, Any]:
        async with transaction(app.state.runtime.engine) as conn:
            await audit.record(
                conn, institution_id=1, action="test.mutated", actor="pay", at=NOW, label="pay"
            )
        return {"charged": body.get("amount"), "count": await mutations(scratch_engine)}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            client = Client(http, scratch_engine, clock, gate, {})
            await client.login()
            yield client


def same_answer(first: httpx.Response, second: httpx.Response) -> None:
    assert second.status_code == first.status_code
    assert second.content == first.content
    replayed = [(k, v) for k, v in second.headers.multi_items() if k != "idempotent-replayed"]
    assert replayed == first.headers.multi_items()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers


async def test_the_first_answer_is_replayed_exactly(client: Client) -> None:
    first = await client.call({"label": "a", "requestId": "r1"})
    assert first.status_code == 200
    assert first.json() == {
        "statusCode": "success",
        "statusDetail": "OK",
        "requestId": "r1",
        "counter": 1,
        "label": "a",
    }
    again = await client.call({"label": "a", "requestId": "r1"})
    same_answer(first, again)
    assert await mutations(client.engine) == 1
    assert await stored_keys(client.engine) == [("ACME_WEB", "key-1", "COMPLETED")]
    # without a key, or on a method outside the set, every call runs
    await client.call({"label": "a"}, key=None)
    await client.call({"label": "a"}, path=FREE_PATH)
    await client.call({"label": "a"}, path=FREE_PATH)
    assert await mutations(client.engine) == 4
    assert len(await stored_keys(client.engine)) == 1


async def test_business_errors_and_4xx_are_stored_too(client: Client) -> None:
    business = await client.call({"label": "b", "outcome": "business"}, key="k-business")
    assert (business.status_code, business.json()["statusCode"]) == (
        200,
        "error.order.availability",
    )
    same_answer(
        business, await client.call({"label": "b", "outcome": "business"}, key="k-business")
    )
    invalid = await client.call({"label": "c", "outcome": "invalid"}, key="k-invalid")
    assert invalid.status_code == 400
    same_answer(invalid, await client.call({"label": "c", "outcome": "invalid"}, key="k-invalid"))
    malformed = await client.call({"nolabel": True}, key="k-malformed")
    assert malformed.status_code == 400
    same_answer(malformed, await client.call({"nolabel": True}, key="k-malformed"))
    assert await mutations(client.engine) == 2


async def test_another_body_under_the_same_key_is_refused(client: Client) -> None:
    await client.call({"label": "a"})
    other = await client.call({"label": "b"})
    assert other.status_code == 422
    assert other.json() == {
        "statusCode": "error.request.idempotency_mismatch",
        "statusDetail": "this Idempotency-Key was used with another request; use a new key",
    }
    elsewhere = await client.call({"label": "a"}, path=PATH.replace("v1_33", "v1_33x"))
    assert elsewhere.status_code == 422  # the path is part of the request: another version
    assert await mutations(client.engine) == 1


async def test_a_second_call_while_the_first_runs_answers_409(client: Client) -> None:
    first = asyncio.create_task(client.call({"label": "slow", "wait": True}))
    await asyncio.wait_for(client.gate.entered.wait(), 10)
    concurrent = await asyncio.gather(
        *(client.call({"label": "slow", "wait": True}) for _ in range(4))
    )
    assert [r.status_code for r in concurrent] == [409] * 4
    assert concurrent[0].headers["retry-after"] == "1"
    assert concurrent[0].json()["statusCode"] == "error.request.idempotency_in_flight"
    assert await mutations(client.engine) == 0
    client.gate.release.set()
    done = await first
    assert done.status_code == 200 and done.json()["counter"] == 1
    same_answer(done, await client.call({"label": "slow", "wait": True}))
    assert await mutations(client.engine) == 1


async def test_racing_first_calls_run_once(client: Client) -> None:
    client.gate.release.set()  # nobody waits; the calls race to insert the key
    answers = await asyncio.gather(
        *(client.call({"label": "race"}, key="k-race") for _ in range(6))
    )
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 409}
    assert await mutations(client.engine) == 1
    ran = [r for r in answers if r.status_code == 200 and "idempotent-replayed" not in r.headers]
    assert len(ran) == 1


async def test_keys_belong_to_one_operator(client: Client) -> None:
    web = await client.call({"label": "a"}, key="shared")
    res = await client.call({"label": "a"}, key="shared", operator="res")
    assert (web.json()["counter"], res.json()["counter"]) == (1, 2)
    assert "idempotent-replayed" not in res.headers
    assert sorted(await stored_keys(client.engine)) == [
        ("ACME_RES", "shared", "COMPLETED"),
        ("ACME_WEB", "shared", "COMPLETED"),
    ]


async def test_keys_expire(client: Client) -> None:
    await client.call({"label": "a"})
    client.clock.set(NOW + timedelta(hours=23, minutes=59))
    await client.login()
    assert "idempotent-replayed" in (await client.call({"label": "a"})).headers
    client.clock.set(NOW + timedelta(hours=24))
    await client.login()
    fresh = await client.call({"label": "a"})
    assert "idempotent-replayed" not in fresh.headers and fresh.json()["counter"] == 2
    assert await idempotency.purge_expired(client.engine, NOW + timedelta(hours=47)) == 0
    assert await idempotency.purge_expired(client.engine, NOW + timedelta(hours=48)) == 1
    assert await stored_keys(client.engine) == []


async def test_a_crashed_in_flight_call_is_taken_over_after_its_lease(client: Client) -> None:
    body = orjson.dumps({"label": "a"})
    async with transaction(client.engine) as conn:
        institution_id = (await conn.execute(sa.text("SELECT id FROM institution"))).scalar_one()
    for key, locked_until in (("live", NOW + timedelta(seconds=5)), ("dead", NOW)):
        async with transaction(client.engine) as conn:
            await conn.execute(
                sa.insert(idempotency.idempotency_key).values(
                    institution_id=institution_id,
                    operator="ACME_WEB",
                    key=key,
                    request_hash=idempotency.request_hash("POST", PATH, body),
                    state="IN_FLIGHT",
                    owner="crashed",
                    locked_until=locked_until,
                    created_at=NOW - timedelta(seconds=30),
                    expires_at=NOW + timedelta(hours=23),
                )
            )
    assert (await client.call({"label": "a"}, key="live")).status_code == 409
    taken = await client.call({"label": "a"}, key="dead")
    assert taken.status_code == 200 and taken.json()["counter"] == 1
    assert await stored_keys(client.engine) == [
        ("ACME_WEB", "live", "IN_FLIGHT"),
        ("ACME_WEB", "dead", "COMPLETED"),
    ]


async def test_nothing_is_stored_for_5xx_bad_keys_or_anonymous_calls(client: Client) -> None:
    crash = await client.call({"label": "x", "outcome": "crash"}, key="k-crash")
    assert crash.status_code == 500
    again = await client.call({"label": "x", "outcome": "crash"}, key="k-crash")
    assert again.status_code == 500 and "idempotent-replayed" not in again.headers
    assert await mutations(client.engine) == 2  # ran twice: a 5xx releases the key
    for bad in ("x" * 256, "with space", ""):
        response = await client.call({"label": "a"}, key=bad)
        assert response.status_code == 400
        assert response.json()["statusCode"] == "error.request.idempotency_key_invalid"
    anonymous = await client.call({"label": "a"}, token=False)
    assert anonymous.status_code == 401
    assert await mutations(client.engine) == 2
    assert await stored_keys(client.engine) == []


async def test_path_prefixes_and_problem_json_off_the_rpc_surface(client: Client) -> None:
    first = await client.call({"amount": 4000}, path=PAYMENT_PATH, key="pay-1")
    assert first.status_code == 200 and first.json() == {"charged": 4000, "count": 1}
    same_answer(first, await client.call({"amount": 4000}, path=PAYMENT_PATH, key="pay-1"))
    other = await client.call({"amount": 5000}, path=PAYMENT_PATH, key="pay-1")
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["code"] == "error.request.idempotency_mismatch"
    assert await mutations(client.engine) == 1


async def test_answers_are_stored_uncompressed_and_gzipped_per_client(client: Client) -> None:
    label = "long " * 400  # above the gzip threshold
    zipped = await client.call({"label": label}, encoding="gzip")
    assert zipped.headers["content-encoding"] == "gzip"
    plain = await client.call({"label": label})
    assert "content-encoding" not in plain.headers
    assert plain.headers["idempotent-replayed"] == "true"
    assert plain.content == zipped.content  # httpx has decoded the first one
    again = await client.call({"label": label}, encoding="gzip")
    assert again.headers["content-encoding"] == "gzip" and again.content == zipped.content
    assert await mutations(client.engine) == 1
