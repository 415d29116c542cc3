"""Webhooks end to end against a real HTTP receiver on 127.0.0.1: subscriptions from the setup
file, ``emit`` in the caller's transaction, delivery through the outbox, signatures,
placeholders, retries, final errors and the exact delivery log."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.catalog.db import institution
from billetterie.catalog.services import find_point_of_sale, institution_id_by_code
from billetterie.catalog.setupfile import SetupFileError, parse_document
from billetterie.setup import export_institution
from billetterie.shared import outbox
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import read, transaction
from billetterie.shared.outbox import Backoff, Dispatcher
from billetterie.webhooks import services
from billetterie.webhooks.models import SubjectFacts, verify_signature
from billetterie.webhooks.tasks import WebhookSender
from tests.conftest import NOW
from tests.factories import import_document, setup_document
from tests.receiver import Receiver, receiving

SECRET = "whsec-" + "s" * 20
TS = int(NOW.timestamp())


def hooks(base: str) -> list[dict[str, Any]]:
    return [
        {
            "code": "PING",
            "pointOfSale": "ACMEWEB",
            "events": ["order.closed"],
            "url": base + "/orders/${orderId}?event=${event}",
            "method": "GET",
            "secret": SECRET,
        },
        {
            "code": "FULL",
            "pointOfSale": "ACMEWEB",
            "events": ["order.closed", "order.cancelled"],
            "url": base + "/full",
            "payload": "full",
            "filter": {"products": ["SHOW"]},
            "secret": SECRET + "-full",
        },
        {
            "code": "CONTACT",
            "pointOfSale": "ACMEWEB",
            "events": ["contact.created", "contact.updated"],
            "url": base + "/contacts/${contactNumber}",
            "secret": SECRET + "-contact",
        },
        {
            "code": "RES",
            "pointOfSale": "ACMERES",
            "events": ["order.closed"],
            "url": base + "/res/${deliveryId}",
            "secret": SECRET + "-res",
        },
    ]


@dataclass
class World:
    engine: AsyncEngine
    receiver: Receiver
    clock: FixedClock
    dispatcher: Dispatcher
    institution_id: int
    web: int
    res: int

    async def emit(self, event: str, subject: Any, pos: int | None = None, **kw: Any) -> list[str]:
        async with transaction(self.engine) as conn:
            return await services.emit(
                conn,
                institution_id=self.institution_id,
                point_of_sale_id=self.web if pos is None else pos,
                event=event,
                subject_id=subject,
                now=self.clock.now(),
                **kw,
            )

    async def log(self) -> list[tuple[Any, ...]]:
        async with read(self.engine) as conn:
            page = await services.list_attempts(conn, self.institution_id, limit=200)
        return [
            (a.subscription_code, a.attempt, a.status.value, a.response_code, a.error)
            for a in reversed(page.attempts)
        ]

    async def states(self) -> list[tuple[str, int]]:
        async with read(self.engine) as conn:
            rows = await conn.execute(
                sa.select(outbox.outbox.c.state, outbox.outbox.c.attempts).order_by(
                    outbox.outbox.c.id
                )
            )
            return [(r.state, r.attempts) for r in rows]


@pytest.fixture
def registries() -> Iterator[None]:
    """Each test starts with no renderer nor facts provider (an app built by an earlier test
    registers the sales and contacts ones) and what it registers is removed afterwards."""
    renderers, facts = dict(services._renderers), dict(services._facts)
    services._renderers.clear()
    services._facts.clear()
    yield
    services._renderers.clear()
    services._renderers.update(renderers)
    services._facts.clear()
    services._facts.update(facts)


@pytest.fixture
async def world(scratch_engine: AsyncEngine, registries: None) -> AsyncIterator[World]:
    async with receiving() as receiver:
        await import_document(scratch_engine, setup_document("ACME", webhooks=hooks(receiver.base)))
        async with read(scratch_engine) as conn:
            institution_id = await institution_id_by_code(conn, "ACME")
            web = await find_point_of_sale(conn, "ACME", "ACMEWEB")
            res = await find_point_of_sale(conn, "ACME", "ACMERES")
        clock = FixedClock(NOW)
        async with httpx.AsyncClient(timeout=5) as client:
            sender = WebhookSender(scratch_engine, clock, client, max_attempts=3)
            dispatcher = Dispatcher(
                scratch_engine,
                clock,
                handlers={services.TOPIC: sender},
                max_attempts=3,
                backoff=Backoff(base_seconds=10, maximum_seconds=10),
            )
            yield World(scratch_engine, receiver, clock, dispatcher, institution_id, web, res)


def hmac_hex(secret: str, body: bytes, ts: int = TS) -> str:
    return hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


async def test_a_ping_replaces_placeholders_and_is_signed(world: World) -> None:
    (delivery,) = await world.emit("order.closed", 42)  # FULL has a filter and no facts
    assert world.receiver.requests == []
    assert [o.state for o in await world.dispatcher.drain()] == ["DONE"]
    (request,) = world.receiver.requests
    assert (request.method, request.target, request.body) == (
        "GET",
        "/orders/42?event=order.closed",
        b"",
    )
    assert request.headers["billetterie-event"] == "order.closed"
    assert request.headers["billetterie-delivery"] == delivery
    assert request.headers["billetterie-signature"] == f"t={TS},v1={hmac_hex(SECRET, b'')}"
    assert verify_signature(SECRET, request.headers["billetterie-signature"], b"", now=TS + 60)
    assert not verify_signature(SECRET + "x", request.headers["billetterie-signature"], b"", now=TS)
    assert not verify_signature(SECRET, request.headers["billetterie-signature"], b"", now=TS + 301)
    assert await world.log() == [("PING", 1, "SUCCEEDED", 200, None)]
    async with read(world.engine) as conn:
        (attempt,) = (await services.list_attempts(conn, world.institution_id)).attempts
    assert (attempt.delivery_id, attempt.event, attempt.subject_id, attempt.url) == (
        delivery,
        "order.closed",
        "42",
        world.receiver.base + "/orders/42?event=order.closed",
    )
    assert (attempt.method, attempt.at, attempt.point_of_sale_id) == ("GET", NOW, world.web)


async def test_emit_writes_nothing_when_the_callers_transaction_rolls_back(world: World) -> None:
    with pytest.raises(RuntimeError):
        async with transaction(world.engine) as conn:
            await services.emit(
                conn,
                institution_id=world.institution_id,
                point_of_sale_id=world.web,
                event="order.closed",
                subject_id=1,
                now=NOW,
            )
            raise RuntimeError("closeOrder failed")
    assert await world.states() == []
    assert await world.dispatcher.drain() == []
    assert world.receiver.requests == []


async def test_500_then_200_is_retried_with_the_same_delivery_id(world: World) -> None:
    world.receiver.answer(500)
    (delivery,) = await world.emit("order.closed", 43)
    assert [o.state for o in await world.dispatcher.drain()] == ["PENDING"]
    assert await world.log() == [("PING", 1, "RETRYING", 500, "HTTP 500")]
    assert await world.dispatcher.drain() == []  # not due before the backoff
    world.clock.set(NOW + timedelta(seconds=10))
    assert [o.state for o in await world.dispatcher.drain()] == ["DONE"]
    first, second = world.receiver.requests
    assert first.headers["billetterie-delivery"] == second.headers["billetterie-delivery"]
    assert second.headers["billetterie-delivery"] == delivery
    assert second.headers["billetterie-signature"] == (
        f"t={TS + 10},v1={hmac_hex(SECRET, b'', TS + 10)}"
    )
    assert await world.log() == [
        ("PING", 1, "RETRYING", 500, "HTTP 500"),
        ("PING", 2, "SUCCEEDED", 200, None),
    ]
    assert await world.states() == [("DONE", 2)]


async def test_4xx_is_final(world: World) -> None:
    world.receiver.answer(404)
    await world.emit("order.closed", 44)
    assert [o.state for o in await world.dispatcher.drain()] == ["FAILED"]
    world.clock.set(NOW + timedelta(days=1))
    assert await world.dispatcher.drain() == []
    assert len(world.receiver.requests) == 1
    assert await world.log() == [("PING", 1, "FAILED", 404, "HTTP 404")]
    assert await world.states() == [("FAILED", 1)]


async def test_429_and_network_errors_retry_until_the_attempts_run_out(world: World) -> None:
    world.receiver.answer((429, {"Retry-After": "5"}), 503, 503)
    await world.emit("order.closed", 45)
    for step in range(4):
        world.clock.set(NOW + timedelta(seconds=10 * step))
        await world.dispatcher.drain()
    assert await world.log() == [
        ("PING", 1, "RETRYING", 429, "HTTP 429"),
        ("PING", 2, "RETRYING", 503, "HTTP 503"),
        ("PING", 3, "FAILED", 503, "HTTP 503"),  # the third of max_attempts=3
    ]
    assert await world.states() == [("FAILED", 3)]


async def test_an_unreachable_receiver_is_retried(world: World) -> None:
    await world.emit("order.closed", 46, pos=world.res)
    port = world.receiver.port
    async with transaction(world.engine) as conn:  # point RES at a closed port
        from billetterie.webhooks import db as webhook_db

        await conn.execute(
            sa.update(webhook_db.webhook_subscription)
            .where(webhook_db.webhook_subscription.c.code == "RES")
            .values(url="http://127.0.0.1:1/closed")
        )
    assert [o.state for o in await world.dispatcher.drain()] == ["PENDING"]
    ((code, attempt, status, response_code, error),) = await world.log()
    assert (code, attempt, status, response_code) == ("RES", 1, "RETRYING", None)
    assert error is not None and "Connect" in error
    assert world.receiver.requests == [] and port


async def test_full_payload_filters_and_renderers(world: World) -> None:
    async def render(conn: AsyncConnection, institution_id: int, subject_id: Any) -> dict[str, Any]:
        if subject_id == 99:
            raise LookupError("no order 99")
        return {"orderId": subject_id, "institutionId": institution_id, "state": "CLOSED"}

    async def facts(conn: AsyncConnection, institution_id: int, subject_id: Any) -> SubjectFacts:
        codes = {7: {"SHOW"}, 8: {"PASS"}, 99: {"SHOW"}}[subject_id]
        return SubjectFacts(frozenset(codes), frozenset({"SINGLE_ENTRY"}))

    services.register_payload_renderer("order.closed", render)
    services.register_subject_facts("order.closed", facts)
    assert len(await world.emit("order.closed", 7)) == 2  # PING and FULL (SHOW)
    assert len(await world.emit("order.closed", 8)) == 1  # PING only (PASS)
    await world.dispatcher.drain()
    full = [r for r in world.receiver.requests if r.target == "/full"]
    (request,) = full
    document = orjson.loads(request.body)
    assert document == {
        "event": "order.closed",
        "deliveryId": request.headers["billetterie-delivery"],
        "occurredAt": NOW.isoformat(),
        "data": {"orderId": 7, "institutionId": world.institution_id, "state": "CLOSED"},
    }
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    signature = request.headers["billetterie-signature"]
    assert signature == f"t={TS},v1={hmac_hex(SECRET + '-full', request.body)}"
    assert sorted(r.target for r in world.receiver.requests) == [
        "/full",
        "/orders/7?event=order.closed",
        "/orders/8?event=order.closed",
    ]
    # a subject gone by delivery time: logged, final, nothing sent
    world.receiver.requests.clear()
    await world.emit("order.closed", 99)
    outcomes = sorted(o.state for o in await world.dispatcher.drain())
    assert outcomes == ["DONE", "FAILED"]
    assert [r.target for r in world.receiver.requests] == ["/orders/99?event=order.closed"]
    failed = [entry for entry in await world.log() if entry[2] == "FAILED"]
    assert failed == [
        ("FULL", 1, "FAILED", None, "the order.closed subject 99 is gone: no order 99")
    ]


async def test_facts_given_to_emit_and_events_by_point_of_sale(world: World) -> None:
    show = SubjectFacts(frozenset({"SHOW"}), frozenset({"SINGLE_ENTRY"}))
    assert len(await world.emit("order.cancelled", 5, facts=show)) == 1  # FULL only
    assert len(await world.emit("order.cancelled", 5, facts=SubjectFacts())) == 0
    assert len(await world.emit("contact.created", "C-12/3")) == 1
    assert len(await world.emit("order.closed", 6, pos=world.res)) == 1
    assert await world.emit("contact.updated", "C1", pos=world.res) == []
    with pytest.raises(services.UnknownEvent):
        await world.emit("order.exploded", 1)
    # the FULL delivery needs a renderer: none is registered, so it fails for good
    outcomes = sorted(o.state for o in await world.dispatcher.drain())
    assert outcomes == ["DONE", "DONE", "FAILED"]
    targets = sorted((r.method, r.target.split("/")[1]) for r in world.receiver.requests)
    assert targets == [("POST", "contacts"), ("POST", "res")]
    contact = next(r for r in world.receiver.requests if r.target.startswith("/contacts"))
    assert contact.target == "/contacts/C-12%2F3" and contact.body == b""
    res = next(r for r in world.receiver.requests if r.target.startswith("/res"))
    assert res.target == "/res/" + res.headers["billetterie-delivery"]
    assert ("FULL", 1, "FAILED", None, "no payload renderer is registered for order.cancelled") in (
        await world.log()
    )


async def test_dedupe_key_and_removed_subscriptions(world: World) -> None:
    assert len(await world.emit("order.closed", 50, dedupe_key="order-50")) == 1
    assert await world.emit("order.closed", 50, dedupe_key="order-50") == []
    # the setup file drops PING before the delivery runs: nothing is sent
    await import_document(
        world.engine, setup_document("ACME", webhooks=hooks(world.receiver.base)[1:])
    )
    assert [o.state for o in await world.dispatcher.drain()] == ["FAILED"]
    assert world.receiver.requests == []
    assert await world.emit("order.closed", 51) == []


async def test_subscriptions_are_kept_per_setup_version(world: World) -> None:
    async with read(world.engine) as conn:
        version = (
            await conn.execute(
                sa.select(institution.c.setup_version).where(
                    institution.c.id == world.institution_id
                )
            )
        ).scalar_one()
    assert len(await world.emit("order.closed", 60, setup_version=version)) == 1
    # the import that drops PING bumps the version: an emit at the new version sees it gone
    await import_document(
        world.engine, setup_document("ACME", webhooks=hooks(world.receiver.base)[1:])
    )
    assert await world.emit("order.closed", 61, setup_version=version + 1) == []
    # one at the old version is served what that version had; without a version, the rows
    assert len(await world.emit("order.closed", 62, setup_version=version)) == 1
    assert await world.emit("order.closed", 63) == []


# --- the setup file --------------------------------------------------------------------------


def problems(webhooks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    with pytest.raises(SetupFileError) as caught:
        parse_document(setup_document("ACME", webhooks=webhooks))
    return caught.value.problems


def test_setup_file_refuses_bad_webhooks() -> None:
    good = hooks("https://partner.example")
    assert parse_document(setup_document("ACME", webhooks=good)).webhooks[0].code == "PING"
    bad = [
        {**good[0], "pointOfSale": "NOPE"},
        {**good[0], "code": "P2", "url": "https://x.example/${contactNumber}"},
        {**good[1], "code": "P3", "method": "GET"},
        {**good[2], "code": "P4", "filter": {"productFamilies": ["PASS"]}},
        {**good[1], "code": "P5", "filter": {"products": ["GHOST"]}},
        {
            **good[0],
            "code": "P6",
            "events": ["order.closed", "contact.created"],
            "url": "https://x.example/${orderId}",
        },
        {**good[0], "code": "P6"},
    ]
    assert problems(bad) == [
        ("webhooks", "code P6 is used twice"),
        ("webhooks[0].pointOfSale", "unknown point of sale NOPE"),
        ("webhooks[1].url", "placeholder ${contactNumber} is not available for these events"),
        ("webhooks[2].method", "payload: full is sent with POST"),
        ("webhooks[3].filter", "filters apply to order events only"),
        ("webhooks[4].filter.products[0]", "unknown product GHOST"),
        ("webhooks[5].url", "placeholder ${orderId} is not available for these events"),
    ]
    shape = problems(
        [
            {**good[0], "url": "ftp://x", "secret": "short", "events": ["order.paid"]},
        ]
    )
    assert [path for path, _ in shape] == [
        "webhooks[0].events[0]",
        "webhooks[0].url",
        "webhooks[0].secret",
    ]


async def test_setup_round_trip_keeps_webhooks(scratch_engine: AsyncEngine) -> None:
    source = hooks("https://partner.example")
    source[3] = {**source[3], "enabled": False}
    first = await import_document(scratch_engine, setup_document("ACME", webhooks=source))
    async with read(scratch_engine) as conn:
        exported = await export_institution(conn, "ACME")
    assert exported["webhooks"] == [
        {
            "code": "PING",
            "pointOfSale": "ACMEWEB",
            "events": ["order.closed"],
            "url": "https://partner.example/orders/${orderId}?event=${event}",
            "method": "GET",
            "payload": "ping",
        },
        {
            "code": "FULL",
            "pointOfSale": "ACMEWEB",
            "events": ["order.closed", "order.cancelled"],
            "url": "https://partner.example/full",
            "method": "POST",
            "payload": "full",
            "filter": {"products": ["SHOW"]},
        },
        {
            "code": "CONTACT",
            "pointOfSale": "ACMEWEB",
            "events": ["contact.created", "contact.updated"],
            "url": "https://partner.example/contacts/${contactNumber}",
            "method": "POST",
            "payload": "ping",
        },
        {
            "code": "RES",
            "pointOfSale": "ACMERES",
            "events": ["order.closed"],
            "url": "https://partner.example/res/${deliveryId}",
            "method": "POST",
            "payload": "ping",
            "enabled": False,
        },
    ]
    assert "secret" not in str(exported)  # the file carries no secrets
    again = await import_document(scratch_engine, exported)
    assert again.changes == 0 and again.setup_version == first.setup_version
    async with read(scratch_engine) as conn:  # the secrets stayed
        institution_id = await institution_id_by_code(conn, "ACME")
        assert await services.signing_secret(conn, institution_id, "PING") == SECRET
        assert await services.signing_secret(conn, institution_id, "RES") == SECRET + "-res"
    changed = await import_document(scratch_engine, setup_document("ACME", webhooks=source[:1]))
    assert changed.changes == 3  # three subscriptions removed
    async with read(scratch_engine) as conn:
        institution_id = await institution_id_by_code(conn, "ACME")
        assert [s.code for s in await services.list_subscriptions(conn, institution_id)] == ["PING"]


async def test_a_webhook_without_secret_gets_one_that_stays(scratch_engine: AsyncEngine) -> None:
    source = [{k: v for k, v in h.items() if k != "secret"} for h in hooks("https://p.example")]
    await import_document(scratch_engine, setup_document("ACME", webhooks=source))
    async with read(scratch_engine) as conn:
        institution_id = await institution_id_by_code(conn, "ACME")
        generated = await services.signing_secret(conn, institution_id, "PING")
    assert len(generated) >= 32
    source[0]["url"] = "https://p.example/changed"
    changed = await import_document(scratch_engine, setup_document("ACME", webhooks=source))
    assert changed.changes == 1
    async with transaction(scratch_engine) as conn:
        assert await services.signing_secret(conn, institution_id, "PING") == generated
        rotated = await services.signing_secret(
            conn, institution_id, "PING", rotate=True, now=NOW, actor="test"
        )
        assert rotated != generated
        with pytest.raises(services.UnknownSubscription):
            await services.signing_secret(conn, institution_id, "NOPE")
    async with read(scratch_engine) as conn:
        assert await services.signing_secret(conn, institution_id, "PING") == rotated
        actions = (
            await conn.execute(
                sa.text("SELECT action FROM audit_entry WHERE action LIKE 'webhooks.%'")
            )
        ).scalars()
        assert list(actions) == ["webhooks.secret.rotated"]
