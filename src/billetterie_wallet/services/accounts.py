"""Spectator accounts: email + password (argon2), or a one-time link sent by mail.

A password account must confirm its address through a link before the password opens it: tickets
are found by email, so an address nobody proved must not see any. Following a link proves it.
Links are 32 random bytes; only their SHA-256 is stored; each opens once, for a limited time.
Mail goes to the ``mail_outbox`` table (a development outbox a mail relay would drain).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie_wallet import db
from billetterie_wallet.errors import (
    BadCredentials,
    EmailTaken,
    InvalidLink,
    InvalidRequest,
    TooManyLinks,
)
from billetterie_wallet.models import normalize_email
from billetterie_wallet.schemas import EMAIL

_hasher = PasswordHasher()
_DUMMY = _hasher.hash("billetterie-wallet-no-such-spectator")
MIN_PASSWORD = 8
LINKS_PER_WINDOW = 5


def _check_email(email: str) -> str:
    email = normalize_email(email)
    if len(email) > 254 or not EMAIL.match(email):
        raise InvalidRequest("enter a valid email address", code="error.spectator.invalid_email")
    return email


async def send_mail(
    conn: AsyncConnection, *, to: str, subject: str, body: str, now: datetime
) -> None:
    await conn.execute(
        sa.insert(db.mail_outbox).values(to_email=to, subject=subject, body=body, created_at=now)
    )


async def _issue_link(
    conn: AsyncConnection,
    email: str,
    *,
    base_url: str,
    lifetime: timedelta,
    now: datetime,
    subject: str,
    intro: str,
) -> None:
    token = secrets.token_urlsafe(32)
    await conn.execute(
        sa.insert(db.login_link).values(
            email=email,
            token_hash=hashlib.sha256(token.encode()).hexdigest(),
            expires_at=now + lifetime,
            created_at=now,
        )
    )
    minutes = int(lifetime.total_seconds() // 60)
    body = (
        f"{intro}\n\n{base_url}/app/login/link/{token}\n\n"
        f"The link opens once, within {minutes} minutes."
    )
    await send_mail(conn, to=email, subject=subject, body=body, now=now)


async def register(
    engine: AsyncEngine,
    *,
    email: str,
    password: str,
    base_url: str,
    lifetime: timedelta,
    now: datetime,
) -> None:
    """Create a password account and mail the link that confirms the address."""
    email = _check_email(email)
    if len(password) < MIN_PASSWORD or len(password) > 200:
        raise InvalidRequest(
            f"choose a password of at least {MIN_PASSWORD} characters",
            code="error.spectator.weak_password",
        )
    password_hash = _hasher.hash(password)
    try:
        async with db.transaction(engine) as conn:
            await conn.execute(
                sa.insert(db.spectator).values(
                    email=email, password_hash=password_hash, created_at=now
                )
            )
            await _issue_link(
                conn,
                email,
                base_url=base_url,
                lifetime=lifetime,
                now=now,
                subject="Confirm your wallet account",
                intro="Open this link to confirm your address and see your tickets:",
            )
            await db.record(
                conn, organizer_id=None, action="wallet.spectator.registered", actor=email, at=now
            )
    except IntegrityError:
        raise EmailTaken("an account with this address exists; sign in instead") from None


async def login_with_password(engine: AsyncEngine, *, email: str, password: str) -> int:
    email = normalize_email(email)
    async with db.read(engine) as conn:
        row = (
            await conn.execute(sa.select(db.spectator).where(db.spectator.c.email == email))
        ).first()
    stored = row.password_hash if row is not None and row.password_hash else _DUMMY
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        raise BadCredentials("wrong email or password") from None
    if row is None or not row.password_hash:
        raise BadCredentials("wrong email or password")
    if row.email_verified_at is None:
        raise BadCredentials(
            "confirm your address first with the link we sent", code="error.spectator.unverified"
        )
    return int(row.id)


async def request_login_link(
    engine: AsyncEngine, *, email: str, base_url: str, lifetime: timedelta, now: datetime
) -> None:
    """Mail a one-time sign-in link (whether or not an account exists: the link creates it).
    At most :data:`LINKS_PER_WINDOW` links per address per lifetime of a link, so the form
    cannot be used to flood someone's mailbox."""
    email = _check_email(email)
    async with db.transaction(engine) as conn:
        recent = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(db.login_link)
                .where(db.login_link.c.email == email, db.login_link.c.created_at > now - lifetime)
            )
        ).scalar_one()
        if recent >= LINKS_PER_WINDOW:
            raise TooManyLinks(
                "too many sign-in links were sent to this address; use the last one or wait"
            )
        await _issue_link(
            conn,
            email,
            base_url=base_url,
            lifetime=lifetime,
            now=now,
            subject="Your sign-in link",
            intro="Open this link to sign in to your ticket wallet:",
        )


async def consume_login_link(engine: AsyncEngine, *, token: str, now: datetime) -> int:
    """Open a link once: the account is created if needed and its address confirmed."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    async with db.transaction(engine) as conn:
        row = (
            await conn.execute(
                sa.update(db.login_link)
                .where(
                    db.login_link.c.token_hash == digest,
                    db.login_link.c.used_at.is_(None),
                    db.login_link.c.expires_at > now,
                )
                .values(used_at=now)
                .returning(db.login_link.c.email)
            )
        ).first()
        if row is None:
            raise InvalidLink("this link has expired or was already used; ask for a new one")
        email = row.email
        spectator = (
            await conn.execute(sa.select(db.spectator).where(db.spectator.c.email == email))
        ).first()
        if spectator is None:
            spectator_id = (
                await conn.execute(
                    sa.insert(db.spectator)
                    .values(email=email, email_verified_at=now, created_at=now)
                    .returning(db.spectator.c.id)
                )
            ).scalar_one()
            await db.record(
                conn,
                organizer_id=None,
                action="wallet.spectator.registered",
                actor=email,
                at=now,
                by="link",
            )
        else:
            spectator_id = spectator.id
            if spectator.email_verified_at is None:
                await conn.execute(
                    sa.update(db.spectator)
                    .where(db.spectator.c.id == spectator_id)
                    .values(email_verified_at=now)
                )
    return int(spectator_id)


async def spectator_email(engine: AsyncEngine, spectator_id: int) -> str | None:
    async with db.read(engine) as conn:
        value = (
            await conn.execute(
                sa.select(db.spectator.c.email).where(db.spectator.c.id == spectator_id)
            )
        ).scalar()
    return None if value is None else str(value)


async def mails(engine: AsyncEngine, *, limit: int = 50) -> list[dict[str, object]]:
    async with db.read(engine) as conn:
        rows = (
            await conn.execute(
                sa.select(db.mail_outbox).order_by(db.mail_outbox.c.id.desc()).limit(limit)
            )
        ).all()
    return [
        {"id": r.id, "to": r.to_email, "subject": r.subject, "body": r.body, "at": r.created_at}
        for r in rows
    ]
