"""The email outbox and the port mail leaves through.

Use cases write messages to the ``mail_message`` table in their own transaction
(:func:`enqueue`); :func:`deliver_pending` sends them after commit through a :class:`Mailer`.
Two adapters pass the same contract test: :class:`SmtpMailer` (a real SMTP server) and
:class:`MailSink` (development: keeps what it was given, shown at ``/dev/mail``). A message
whose sending fails stays in the outbox and is retried, at most ``MAX_ATTEMPTS`` times.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.identity import db
from billetterie.shared.clock import Clock
from billetterie.shared.db import transaction

MAX_ATTEMPTS = 5
log = logging.getLogger("billetterie.mail")


@dataclass(frozen=True)
class OutgoingMail:
    recipient: str
    subject: str
    body: str
    id: int | None = None


class Mailer(Protocol):
    async def send(self, message: OutgoingMail) -> None:
        """Hand the message over; raise on failure (it will be retried)."""


class MailSink:
    """Development adapter: keeps the last ``size`` messages in memory."""

    def __init__(self, size: int = 200) -> None:
        self.messages: deque[OutgoingMail] = deque(maxlen=size)

    async def send(self, message: OutgoingMail) -> None:
        self.messages.appendleft(message)


class SmtpMailer:
    """Sends through an SMTP server (STARTTLS and login when configured)."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        starttls: bool = False,
        username: str = "",
        password: str = "",
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.username, self.password = starttls, username, password
        self.timeout = timeout

    def _send(self, message: OutgoingMail) -> None:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.recipient
        email["Subject"] = message.subject
        email.set_content(message.body)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password)
            smtp.send_message(email)

    async def send(self, message: OutgoingMail) -> None:
        await asyncio.to_thread(self._send, message)


async def enqueue(
    conn: AsyncConnection,
    *,
    institution_id: int,
    point_of_sale_id: int | None,
    recipient: str,
    subject: str,
    body: str,
    now: datetime,
) -> None:
    """Write a message to the outbox in the caller's transaction."""
    await conn.execute(
        sa.insert(db.mail_message).values(
            institution_id=institution_id,
            point_of_sale_id=point_of_sale_id,
            recipient=recipient,
            subject=subject[:255],
            body=body,
            created_at=now,
            attempts=0,
        )
    )


async def deliver_pending(
    engine: AsyncEngine, mailer: Mailer, *, now: datetime, limit: int = 50
) -> int:
    """Send what the outbox holds (oldest first); returns how many were sent. A message is
    marked sent only after the mailer accepted it, so a crash in between sends it twice at
    worst, never not at all."""
    m = db.mail_message.c
    async with transaction(engine) as conn:
        rows = (
            await conn.execute(
                sa.select(db.mail_message)
                .where(m.sent_at.is_(None), m.attempts < MAX_ATTEMPTS)
                .order_by(m.id)
                .limit(limit)
            )
        ).all()
    sent = 0
    for row in rows:
        message = OutgoingMail(row.recipient, row.subject, row.body, row.id)
        try:
            await mailer.send(message)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("mail %s not sent: %s", row.id, exc)
            async with transaction(engine) as conn:
                await conn.execute(
                    sa.update(db.mail_message)
                    .where(m.id == row.id)
                    .values(attempts=m.attempts + 1, last_error=str(exc)[:255])
                )
            continue
        async with transaction(engine) as conn:
            await conn.execute(
                sa.update(db.mail_message)
                .where(m.id == row.id)
                .values(sent_at=now, attempts=m.attempts + 1)
            )
        sent += 1
    return sent


async def delivery_loop(
    engine: AsyncEngine, mailer: Mailer, clock: Clock, *, every: float = 5.0
) -> None:
    """Drain the outbox now and then (a background task of the server process)."""
    while True:
        try:
            await deliver_pending(engine, mailer, now=clock.now())
        except Exception:  # a database hiccup must not end the loop
            log.exception("mail delivery failed")
        await asyncio.sleep(every)
