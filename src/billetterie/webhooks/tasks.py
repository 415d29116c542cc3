"""Delivering webhooks: the outbox handler of topic ``webhooks.deliver``.

One call per outbox attempt: reload the subscription, render the URL (and the full document
when the subscription asks for it), sign, send, and log the attempt. 2xx succeeds; 429, 5xx
and network errors are retried by the outbox with backoff (``Retry-After`` honoured); any
other answer (3xx, 4xx) is final. The delivery id stays the same across attempts so receivers
can deduplicate. Redirects are not followed (a 3xx is final: fix the URL).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.shared.clock import Clock
from billetterie.shared.db import read, transaction
from billetterie.shared.outbox import FinalError, Job, RetryLater, with_retries
from billetterie.webhooks import services
from billetterie.webhooks.models import (
    AttemptStatus,
    Event,
    Method,
    PayloadMode,
    Subscription,
    render_url,
    signature,
)

TOPIC = services.TOPIC
log = logging.getLogger("billetterie.webhooks")
USER_AGENT = "billetterie-webhooks/1"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


class WebhookSender:
    """The handler; ``max_attempts`` must be the dispatcher's, so the log can say when an
    attempt was the last one."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        client: httpx.AsyncClient,
        *,
        max_attempts: int,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.client = client
        self.max_attempts = max_attempts

    async def __call__(self, job: Job) -> None:
        payload = job.payload
        event = Event(payload["event"])
        subject_id = payload["subject_id"]
        delivery_id = str(payload["delivery_id"])
        async with read(self.engine) as conn:
            sub = await services.subscription(
                conn, job.institution_id, int(payload["subscription_id"])
            )
            if sub is None or not sub.enabled:
                raise FinalError("the subscription was removed or disabled; nothing sent")
            try:
                url = render_url(sub.url, event, str(subject_id), delivery_id)
            except ValueError as exc:  # refused at import; a URL changed by hand is final
                await self._log(job, sub, sub.url, AttemptStatus.FAILED, None, 0, str(exc))
                raise FinalError(str(exc)) from None
            body = b""
            if sub.payload == PayloadMode.FULL:
                body, problem = await self._document(conn, job, sub, event, subject_id)
                if problem is not None:
                    await self._log(job, sub, url, AttemptStatus.FAILED, None, 0, problem)
                    raise FinalError(problem)
        await self._send(job, sub, event, delivery_id, url, body)

    async def _document(
        self, conn: Any, job: Job, sub: Subscription, event: Event, subject_id: Any
    ) -> tuple[bytes, str | None]:
        renderer = services.payload_renderer(event)
        if renderer is None:
            return b"", f"no payload renderer is registered for {event.value}"
        try:
            document = await renderer(conn, job.institution_id, subject_id)
        except LookupError as exc:
            return b"", f"the {event.value} subject {subject_id} is gone: {exc}"
        body = orjson.dumps(
            {
                "event": event.value,
                "deliveryId": job.payload["delivery_id"],
                "occurredAt": job.payload["occurred_at"],
                "data": document,
            }
        )
        return body, None

    async def _send(
        self, job: Job, sub: Subscription, event: Event, delivery_id: str, url: str, body: bytes
    ) -> None:
        timestamp = int(self.clock.now().timestamp())
        headers = {
            "User-Agent": USER_AGENT,
            "Billetterie-Event": event.value,
            "Billetterie-Delivery": delivery_id,
            "Billetterie-Signature": signature(sub.secret, timestamp, body),
        }
        if body:
            headers["Content-Type"] = "application/json"
        started = time.monotonic()
        try:
            response = await self.client.request(
                sub.method.value,
                url,
                content=body if sub.method == Method.POST else None,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            duration = _ms(started)
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            status = self._retrying_status(job)
            await self._log(job, sub, url, status, None, duration, error)
            raise RetryLater(error) from None
        duration = _ms(started)
        code = response.status_code
        if 200 <= code < 300:
            await self._log(job, sub, url, AttemptStatus.SUCCEEDED, code, duration, None)
            return
        error = f"HTTP {code}"
        if code == 429 or code >= 500:
            await self._log(job, sub, url, self._retrying_status(job), code, duration, error)
            raise RetryLater(error, retry_after=_retry_after(response))
        await self._log(job, sub, url, AttemptStatus.FAILED, code, duration, error)
        raise FinalError(error)

    def _retrying_status(self, job: Job) -> AttemptStatus:
        return AttemptStatus.FAILED if job.attempt >= self.max_attempts else AttemptStatus.RETRYING

    async def _log(
        self,
        job: Job,
        sub: Subscription,
        url: str,
        status: AttemptStatus,
        code: int | None,
        duration_ms: int,
        error: str | None,
    ) -> None:
        now: datetime = self.clock.now()

        async def write() -> None:
            async with transaction(self.engine) as conn:
                await self._record(conn, job, sub, url, status, code, duration_ms, error, now)

        await with_retries(write)
        if status != AttemptStatus.SUCCEEDED:
            log.info("webhook %s to %s: %s (%s)", job.payload["delivery_id"], url, status, error)

    async def _record(
        self,
        conn: Any,
        job: Job,
        sub: Subscription,
        url: str,
        status: AttemptStatus,
        code: int | None,
        duration_ms: int,
        error: str | None,
        now: datetime,
    ) -> None:
        await services.record_attempt(
            conn,
            subscription=sub,
            delivery_id=str(job.payload["delivery_id"]),
            event=Event(job.payload["event"]),
            subject_id=job.payload["subject_id"],
            attempt=job.attempt,
            status=status,
            url=url,
            response_code=code,
            duration_ms=duration_ms,
            error=error,
            at=now,
        )


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
