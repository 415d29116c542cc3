"""Contact changes made through a point of sale reach its webhook subscriptions, signed, with
the contact's data as the full payload."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.shared.clock import FixedClock
from billetterie.shared.outbox import Dispatcher
from billetterie.webhooks.models import verify_signature
from billetterie.webhooks.services import TOPIC
from billetterie.webhooks.tasks import WebhookSender
from tests.conftest import NOW, SECRET, Backend, serve, set_secrets
from tests.factories import import_document
from tests.identity_support import contact_call, create_contact
from tests.receiver import receiving
from tests.sales_kit import sales_document

HOOK_SECRET = "contact-hook-secret-0123"


async def test_contact_created_and_updated_are_delivered(
    scratch_engine: AsyncEngine, backend: Backend, tmp_path: Path
) -> None:
    async with receiving() as receiver:
        hooks = [
            {
                "code": "CONTACTS",
                "pointOfSale": "ACMEWEB",
                "events": ["contact.created", "contact.updated"],
                "url": receiver.base + "/contacts",
                "payload": "full",
                "secret": HOOK_SECRET,
            }
        ]
        await import_document(scratch_engine, sales_document("ACME") | {"webhooks": hooks})
        await set_secrets(scratch_engine, "ACME", [("ACME_WEB", "ACMEWEB", "web")])
        clock = FixedClock(NOW)
        async with serve(backend.scratch_url, tmp_path, clock, background_tasks=False) as api:
            token = await api.token("ACME_WEB", "web", SECRET)
            number = await create_contact(api, token)
            async with httpx.AsyncClient(timeout=5) as client:
                dispatcher = Dispatcher(
                    scratch_engine,
                    clock,
                    handlers={TOPIC: WebhookSender(scratch_engine, clock, client, max_attempts=3)},
                    max_attempts=3,
                )
                assert [o.state for o in await dispatcher.drain()] == ["DONE"]
                (request,) = receiver.requests
                assert request.headers["billetterie-event"] == "contact.created"
                assert verify_signature(
                    HOOK_SECRET,
                    request.headers["billetterie-signature"],
                    request.body,
                    now=int(NOW.timestamp()),
                )
                data = orjson.loads(request.body)["data"]
                assert (data["contactNumber"], data["firstName"], data["email"]) == (
                    number,
                    "Ada1",
                    "ada1@example.org",
                )
                refused = await contact_call(
                    api, "createCulturalContact", {"contactDataList": []}, token
                )
                assert refused.status_code == 400
                assert await dispatcher.drain() == []  # a refused call announces nothing
