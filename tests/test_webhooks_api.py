"""``GET /api/v1/webhooks/deliveries`` and ``billetterie webhooks deliveries``: the operator's
own point of sale only, newest first, paginated, problem+json errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from billetterie.catalog.services import institution_id_by_code
from billetterie.cli import app as cli_app
from billetterie.shared.db import read, transaction
from billetterie.webhooks import services
from billetterie.webhooks.models import AttemptStatus, Event
from tests.conftest import NOW, Api, Backend, FixedClock, serve, set_secrets
from tests.factories import import_document, setup_document
from tests.test_webhooks import hooks


async def seed(engine: AsyncEngine) -> None:
    """Two institutions with webhooks; ACME has 3 attempts at ACMEWEB and 1 at ACMERES."""
    for code in ("ACME", "BETA"):
        document = setup_document(code)
        document["webhooks"] = [
            {**hook, "pointOfSale": hook["pointOfSale"].replace("ACME", code)}
            for hook in hooks("https://partner.example")
        ]
        await import_document(engine, document)
    await set_secrets(
        engine,
        "ACME",
        [("ACME_WEB", "ACMEWEB", "web"), ("ACME_RES", "ACMERES", "res")],
    )
    await set_secrets(engine, "BETA", [("BETA_WEB", "BETAWEB", "web")])
    async with transaction(engine) as conn:
        institution_id = await institution_id_by_code(conn, "ACME")
        subscriptions = {s.code: s for s in await services.list_subscriptions(conn, institution_id)}
        entries = [
            ("PING", "d1", 1, AttemptStatus.RETRYING, 500, "HTTP 500"),
            ("PING", "d1", 2, AttemptStatus.SUCCEEDED, 200, None),
            ("CONTACT", "d2", 1, AttemptStatus.FAILED, 410, "HTTP 410"),
            ("RES", "d3", 1, AttemptStatus.SUCCEEDED, 204, None),
        ]
        for n, (code, delivery, attempt, status, response_code, error) in enumerate(entries):
            sub = subscriptions[code]
            await services.record_attempt(
                conn,
                subscription=sub,
                delivery_id=delivery,
                event=sub.events[0],
                subject_id="42",
                attempt=attempt,
                status=status,
                url=f"https://partner.example/{code.lower()}",
                response_code=response_code,
                duration_ms=10 + n,
                error=error,
                at=NOW + timedelta(seconds=n),
            )


@pytest.fixture
async def api(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path, clock: FixedClock
) -> object:
    await seed(scratch_engine)
    async with serve(backend.scratch_url, tmp_path, clock) as api:
        yield api


async def get(api: Api, token: str | None, query: str = "") -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await api.client.get(f"/api/v1/webhooks/deliveries{query}", headers=headers)
    return response.status_code, response.json()


async def test_each_operator_sees_its_point_of_sale_only(api: Api) -> None:
    web = await api.token("ACME_WEB", "web")
    status, body = await get(api, web)
    assert status == 200
    assert [
        (d["subscription"], d["attempt"], d["status"], d["responseCode"], d["error"])
        for d in body["deliveries"]  # type: ignore[attr-defined]
    ] == [
        ("CONTACT", 1, "FAILED", 410, "HTTP 410"),
        ("PING", 2, "SUCCEEDED", 200, None),
        ("PING", 1, "RETRYING", 500, "HTTP 500"),
    ]
    first = body["deliveries"][0]  # type: ignore[index]
    assert first == {
        "id": first["id"],
        "deliveryId": "d2",
        "subscription": "CONTACT",
        "event": Event.CONTACT_CREATED.value,
        "subjectId": "42",
        "attempt": 1,
        "status": "FAILED",
        "method": "POST",
        "url": "https://partner.example/contact",
        "responseCode": 410,
        "durationMs": 12,
        "error": "HTTP 410",
        "at": (NOW + timedelta(seconds=2)).isoformat().replace("+00:00", "Z"),
    }
    assert body["next"] is None
    status, res = await get(api, await api.token("ACME_RES", "res"))
    assert [d["subscription"] for d in res["deliveries"]] == ["RES"]  # type: ignore[attr-defined]
    status, other = await get(api, await api.token("BETA_WEB", "web"))
    assert (status, other) == (200, {"deliveries": [], "next": None})


async def test_pages_and_filters(api: Api) -> None:
    web = await api.token("ACME_WEB", "web")
    _, page = await get(api, web, "?limit=2")
    assert len(page["deliveries"]) == 2  # type: ignore[arg-type]
    cursor = page["next"]
    assert cursor == page["deliveries"][1]["id"]  # type: ignore[index]
    _, rest = await get(api, web, f"?limit=2&before={cursor}")
    assert [(d["subscription"], d["attempt"]) for d in rest["deliveries"]] == [  # type: ignore[attr-defined]
        ("PING", 1)
    ]
    assert rest["next"] is None
    _, failed = await get(api, web, "?status=FAILED")
    assert [d["deliveryId"] for d in failed["deliveries"]] == ["d2"]  # type: ignore[attr-defined]
    _, by_event = await get(api, web, "?event=order.closed&deliveryId=d1")
    assert len(by_event["deliveries"]) == 2  # type: ignore[arg-type]


async def test_errors_are_problem_json(api: Api) -> None:
    status, body = await get(api, None)
    assert status == 401 and body["code"] == "error.auth.missing_token"
    web = await api.token("ACME_WEB", "web")
    for query in ("?status=LOST", "?limit=0", "?limit=201", "?before=0", "?event=order.paid"):
        response = await api.client.get(
            f"/api/v1/webhooks/deliveries{query}", headers={"Authorization": f"Bearer {web}"}
        )
        assert response.status_code == 400, query
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "error.request.invalid"


def test_cli_lists_deliveries(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from billetterie.shared.db import create_engine, metadata

    async def prepare() -> None:
        engine = create_engine(backend.scratch_url)
        await seed(engine)
        await engine.dispose()

    async def empty() -> None:
        engine = create_engine(backend.scratch_url)
        async with transaction(engine) as conn:
            for table in reversed(metadata.sorted_tables):
                await conn.execute(table.delete())
        await engine.dispose()

    asyncio.run(prepare())
    try:
        monkeypatch.setenv("BILLETTERIE_DATABASE_URL", backend.scratch_url)
        monkeypatch.setenv("BILLETTERIE_VAR_DIR", str(tmp_path))
        monkeypatch.setenv("COLUMNS", "200")
        runner = CliRunner()
        result = runner.invoke(cli_app, ["webhooks", "deliveries", "ACME"])
        assert result.exit_code == 0, result.output
        rows = [line for line in result.output.splitlines() if "order.closed" in line]
        rows += [line for line in result.output.splitlines() if "contact.created" in line]
        assert len(rows) == 4
        assert "HTTP 410" in result.output and "RETRYING" in result.output
        only_res = runner.invoke(cli_app, ["webhooks", "deliveries", "ACME", "-p", "ACMERES"])
        assert only_res.exit_code == 0
        assert "RES" in only_res.output and "PING" not in only_res.output
        failed = runner.invoke(cli_app, ["webhooks", "deliveries", "ACME", "--status", "FAILED"])
        assert "CONTACT" in failed.output and "PING" not in failed.output
        secret = runner.invoke(cli_app, ["webhooks", "secret", "ACME", "PING"])
        assert (secret.exit_code, secret.stdout.strip()) == (0, hooks("")[0]["secret"])
        rotated = runner.invoke(cli_app, ["webhooks", "secret", "ACME", "PING", "--rotate"])
        assert rotated.exit_code == 0 and rotated.stdout.strip() != secret.stdout.strip()
        after = runner.invoke(cli_app, ["webhooks", "secret", "ACME", "PING"])
        assert after.stdout == rotated.stdout
        missing = runner.invoke(cli_app, ["webhooks", "secret", "ACME", "NOPE"])
        assert missing.exit_code == 2 and "no webhook NOPE" in missing.output
        unknown = runner.invoke(cli_app, ["webhooks", "deliveries", "NOPE"])
        assert unknown.exit_code == 2 and "no institution NOPE" in unknown.output
        bad = runner.invoke(cli_app, ["webhooks", "deliveries", "ACME", "--status", "LOST"])
        assert bad.exit_code == 2
    finally:
        asyncio.run(empty())


async def test_listing_is_scoped_in_the_service(scratch_engine: AsyncEngine) -> None:
    await seed(scratch_engine)
    async with read(scratch_engine) as conn:
        beta = await institution_id_by_code(conn, "BETA")
        assert (await services.list_attempts(conn, beta)).attempts == []
        acme = await institution_id_by_code(conn, "ACME")
        assert len((await services.list_attempts(conn, acme)).attempts) == 4
        with pytest.raises(services.InvalidCursor):
            await services.list_attempts(conn, acme, before=0)
