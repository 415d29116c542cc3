"""Shop accounts: a contact signs in on a point of sale.

- Passwords are the contact's (argon2, checked by the contacts context).
- Throttling: at most ``ACCOUNT_FAILURES`` failed logins per account and ``ADDRESS_FAILURES``
  per client address within ``THROTTLE_WINDOW``; beyond, ``error.account.throttled`` with the
  seconds to wait, before the password is even checked.
- Sessions live in ``account_session``; the cookie holds a random token, the table its SHA-256.
- Remember-me tokens (``series.token``) rotate on every use: the used token is kept as used,
  a new one of the same series is issued. An already used token coming back means it was
  copied: the whole series is revoked, and so are the sessions it opened.
- Verification and reset links carry a random token (SHA-256 stored) valid for
  ``VERIFY_LIFETIME`` / ``RESET_LIFETIME``, usable once, on the point of sale that sent it.
  A reset ends every session and remember-me series of the contact.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.contacts import services as contacts
from billetterie.contacts.errors import BadContactCredentials
from billetterie.contacts.models import Authorization, ContactInput, normalize_email
from billetterie.identity import db
from billetterie.identity.errors import (
    InvalidAccountToken,
    RegistrationClosed,
    RememberTokenReused,
    TooManyAttempts,
)
from billetterie.identity.mail import enqueue
from billetterie.shared import audit
from billetterie.shared.db import transaction

THROTTLE_WINDOW = timedelta(minutes=15)
ACCOUNT_FAILURES = 5
ADDRESS_FAILURES = 20
SESSION_LIFETIME = timedelta(hours=12)
REMEMBER_LIFETIME = timedelta(days=30)
VERIFY_LIFETIME = timedelta(days=3)
RESET_LIFETIME = timedelta(hours=1)


@dataclass(frozen=True)
class ShopPoint:
    """The point of sale a contact signs in on, as the web layer found it in the catalog."""

    institution_id: int
    point_of_sale_id: int
    code: str
    organization_code: str
    sales_channel_id: int
    sales_channel_code: str
    cookie_domain: str | None
    registration_allowed: bool
    base_url: str  # where links in mails point: https://shop.example/shop/<code>


@dataclass(frozen=True)
class SignedIn:
    contact_number: int
    session_token: str
    remember: str | None = None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _actor(number: int) -> str:
    return f"contact:{number}"


# --- throttling ------------------------------------------------------------------------------


async def _check_throttle(
    conn: AsyncConnection, point: ShopPoint, subjects: list[tuple[str, int]], now: datetime
) -> None:
    f = db.login_failure.c
    for subject, limit in subjects:
        rows = (
            await conn.execute(
                sa.select(f.at)
                .where(
                    f.institution_id == point.institution_id,
                    f.subject == subject,
                    f.at > now - THROTTLE_WINDOW,
                )
                .order_by(f.at)
            )
        ).all()
        if len(rows) >= limit:
            oldest = rows[len(rows) - limit].at
            wait = max(1, int((oldest + THROTTLE_WINDOW - now).total_seconds()) + 1)
            raise TooManyAttempts(
                "too many failed attempts; try again later", retryAfterSeconds=wait
            )


def _subjects(login: str, address: str) -> list[tuple[str, int]]:
    return [
        (f"account:{normalize_email(login)}"[:400], ACCOUNT_FAILURES),
        (f"address:{address}"[:400], ADDRESS_FAILURES),
    ]


async def _record_failure(
    engine: AsyncEngine,
    point: ShopPoint,
    subjects: list[tuple[str, int]],
    now: datetime,
    action: str = "identity.login.failed",
) -> None:
    async with transaction(engine) as conn:
        await conn.execute(
            sa.insert(db.login_failure),
            [
                {"institution_id": point.institution_id, "subject": s, "at": now}
                for s, _ in subjects
            ],
        )
        await audit.record(
            conn,
            institution_id=point.institution_id,
            action=action,
            actor="anonymous",
            at=now,
            point_of_sale_id=point.point_of_sale_id,
        )


# --- sessions and remember-me ----------------------------------------------------------------


async def open_session(
    conn: AsyncConnection, point: ShopPoint, number: int, *, method: str, now: datetime
) -> str:
    token = secrets.token_urlsafe(32)
    await conn.execute(
        sa.insert(db.account_session).values(
            institution_id=point.institution_id,
            point_of_sale_id=point.point_of_sale_id,
            contact_id=number,
            token_hash=digest(token),
            method=method,
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    await audit.record(
        conn,
        institution_id=point.institution_id,
        action="identity.session.opened",
        actor=_actor(number),
        at=now,
        point_of_sale_id=point.point_of_sale_id,
        method=method,
    )
    return token


async def _issue_remember(
    conn: AsyncConnection, point: ShopPoint, number: int, series: str, now: datetime
) -> str:
    token = secrets.token_urlsafe(32)
    await conn.execute(
        sa.insert(db.remember_token).values(
            institution_id=point.institution_id,
            point_of_sale_id=point.point_of_sale_id,
            contact_id=number,
            series=series,
            token_hash=digest(token),
            created_at=now,
            expires_at=now + REMEMBER_LIFETIME,
        )
    )
    return f"{series}.{token}"


async def session_contact(
    conn: AsyncConnection, point: ShopPoint, token: str | None, now: datetime
) -> int | None:
    """The contact a session cookie stands for on this point of sale, if it is still valid."""
    if not token or len(token) > 100:
        return None
    s = db.account_session.c
    row = (
        await conn.execute(
            sa.select(s.contact_id, s.expires_at, s.revoked_at, s.point_of_sale_id).where(
                s.token_hash == digest(token)
            )
        )
    ).first()
    if (
        row is None
        or row.point_of_sale_id != point.point_of_sale_id
        or row.revoked_at is not None
        or row.expires_at <= now
    ):
        return None
    return int(row.contact_id)


async def resume(
    engine: AsyncEngine, point: ShopPoint, remember: str, *, now: datetime
) -> SignedIn | None:
    """Exchange a remember-me cookie for a new session and a new token of the same series.
    ``None`` when the token is unknown or expired; RememberTokenReused when it was used."""
    series, _, token = remember.partition(".")
    if not series or not token or len(remember) > 200:
        return None
    r = db.remember_token.c
    async with transaction(engine) as conn:
        row = (
            await conn.execute(sa.select(db.remember_token).where(r.token_hash == digest(token)))
        ).first()
        if (
            row is None
            or row.series != series
            or row.point_of_sale_id != point.point_of_sale_id
            or row.revoked_at is not None
            or row.expires_at <= now
        ):
            return None
        if row.used_at is not None:
            reused = row
        else:
            await conn.execute(
                sa.update(db.remember_token).where(r.id == row.id).values(used_at=now)
            )
            new_remember = await _issue_remember(conn, point, row.contact_id, series, now)
            session = await open_session(conn, point, row.contact_id, method="remember", now=now)
            return SignedIn(row.contact_id, session, new_remember)
    await _revoke_series(engine, point, reused.contact_id, series, now, theft=True)
    raise RememberTokenReused("this remember-me token was already used; sign in again")


async def _revoke_series(
    engine: AsyncEngine, point: ShopPoint, number: int, series: str, now: datetime, *, theft: bool
) -> None:
    r = db.remember_token.c
    s = db.account_session.c
    async with transaction(engine) as conn:
        await conn.execute(
            sa.update(db.remember_token)
            .where(r.series == series, r.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        if theft:
            # Sessions opened by this series may be the thief's: end the contact's remembered
            # sessions on this point of sale.
            await conn.execute(
                sa.update(db.account_session)
                .where(
                    s.contact_id == number,
                    s.point_of_sale_id == point.point_of_sale_id,
                    s.method == "remember",
                    s.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
        await audit.record(
            conn,
            institution_id=point.institution_id,
            action="identity.remember.stolen" if theft else "identity.remember.revoked",
            actor=_actor(number),
            at=now,
            point_of_sale_id=point.point_of_sale_id,
        )


# --- use cases -------------------------------------------------------------------------------


async def login(
    engine: AsyncEngine,
    point: ShopPoint,
    *,
    email: str,
    password: str,
    address: str,
    remember: bool,
    now: datetime,
) -> SignedIn:
    """Check the password (after the throttle) and open a session; a failure is recorded."""
    subjects = _subjects(email, address)
    async with transaction(engine) as conn:
        await _check_throttle(conn, point, subjects, now)
        try:
            number = await contacts.authenticate(conn, point.institution_id, email, password)
        except BadContactCredentials:
            failed = True
        else:
            failed = False
            session = await open_session(conn, point, number, method="password", now=now)
            token = (
                await _issue_remember(conn, point, number, secrets.token_hex(16), now)
                if remember
                else None
            )
    if failed:
        await _record_failure(engine, point, subjects, now)
        raise BadContactCredentials("unknown email or wrong password")
    return SignedIn(number, session, token)


async def logout(
    engine: AsyncEngine,
    point: ShopPoint,
    *,
    session_token: str | None,
    remember: str | None,
    now: datetime,
) -> None:
    """End the session and revoke the remember-me series (both optional; idempotent)."""
    number = None
    if session_token:
        s = db.account_session.c
        async with transaction(engine) as conn:
            number = await session_contact(conn, point, session_token, now)
            await conn.execute(
                sa.update(db.account_session)
                .where(s.token_hash == digest(session_token), s.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if number is not None:
                await audit.record(
                    conn,
                    institution_id=point.institution_id,
                    action="identity.session.closed",
                    actor=_actor(number),
                    at=now,
                    point_of_sale_id=point.point_of_sale_id,
                )
    if remember:
        series = remember.partition(".")[0]
        r = db.remember_token.c
        async with transaction(engine) as conn:
            row = (
                await conn.execute(
                    sa.select(r.contact_id, r.point_of_sale_id).where(r.series == series).limit(1)
                )
            ).first()
        if row is not None and row.point_of_sale_id == point.point_of_sale_id:
            await _revoke_series(engine, point, row.contact_id, series, now, theft=False)


async def _new_link(
    conn: AsyncConnection, point: ShopPoint, number: int, purpose: str, now: datetime
) -> str:
    token = secrets.token_urlsafe(32)
    lifetime = VERIFY_LIFETIME if purpose == "verify" else RESET_LIFETIME
    await conn.execute(
        sa.insert(db.account_token).values(
            institution_id=point.institution_id,
            point_of_sale_id=point.point_of_sale_id,
            contact_id=number,
            purpose=purpose,
            token_hash=digest(token),
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


async def register(
    engine: AsyncEngine,
    point: ShopPoint,
    general: ContactInput,
    *,
    password: str,
    criteria: list[str],
    authorizations: list[Authorization],
    now: datetime,
) -> SignedIn:
    """Create the contact and its login, send the verification mail, open a session."""
    if not point.registration_allowed:
        raise RegistrationClosed("this shop does not create accounts")
    async with transaction(engine) as conn:
        number = await contacts.create_contact_in(
            conn,
            point.institution_id,
            general,
            password=password,
            verified=False,
            point_of_sale_id=point.point_of_sale_id,
            sales_channel_id=point.sales_channel_id,
            criteria=criteria,
            authorizations=authorizations,
            actor=f"shop:{point.code}",
            now=now,
        )
        token = await _new_link(conn, point, number, "verify", now)
        assert general.email is not None
        await enqueue(
            conn,
            institution_id=point.institution_id,
            point_of_sale_id=point.point_of_sale_id,
            recipient=general.email.strip(),
            subject="Confirm your email address",
            body=(
                f"Hello {general.first_name or ''},\n\n"
                "please confirm your email address by opening this link:\n\n"
                f"{point.base_url}/account/verify?token={token}\n\n"
                f"The link is valid for {VERIFY_LIFETIME.days} days.\n"
            ),
            now=now,
        )
        session = await open_session(conn, point, number, method="password", now=now)
    return SignedIn(number, session)


async def _use_link(
    conn: AsyncConnection, point: ShopPoint, token: str, purpose: str, now: datetime
) -> int:
    t = db.account_token.c
    row = (
        await conn.execute(sa.select(db.account_token).where(t.token_hash == digest(token[:200])))
    ).first()
    if (
        row is None
        or row.purpose != purpose
        or row.point_of_sale_id != point.point_of_sale_id
        or row.used_at is not None
        or row.expires_at <= now
    ):
        raise InvalidAccountToken("this link is not valid (used, expired or unknown)")
    used = await conn.execute(
        sa.update(db.account_token).where(t.id == row.id, t.used_at.is_(None)).values(used_at=now)
    )
    if used.rowcount != 1:  # a concurrent use won
        raise InvalidAccountToken("this link is not valid (used, expired or unknown)")
    return int(row.contact_id)


async def verify_email(engine: AsyncEngine, point: ShopPoint, token: str, *, now: datetime) -> int:
    async with transaction(engine) as conn:
        number = await _use_link(conn, point, token, "verify", now)
        await contacts.mark_email_verified(
            conn, point.institution_id, number, actor=_actor(number), now=now
        )
    return number


async def request_reset(
    engine: AsyncEngine, point: ShopPoint, *, email: str, address: str, now: datetime
) -> None:
    """Mail a reset link if the email has an account; the caller cannot tell (no enumeration).
    Counts as an attempt for throttling, so the form cannot be used to flood a mailbox."""
    subjects = _subjects(email, address)
    async with transaction(engine) as conn:
        await _check_throttle(conn, point, subjects, now)
        number = await contacts.contact_by_login(conn, point.institution_id, email)
        if number is not None:
            token = await _new_link(conn, point, number, "reset", now)
            await enqueue(
                conn,
                institution_id=point.institution_id,
                point_of_sale_id=point.point_of_sale_id,
                recipient=normalize_email(email),
                subject="Reset your password",
                body=(
                    "Someone asked to reset the password of your account.\n"
                    "If it was you, choose a new password here:\n\n"
                    f"{point.base_url}/account/reset?token={token}\n\n"
                    "The link is valid for one hour. If it was not you, ignore this mail.\n"
                ),
                now=now,
            )
    await _record_failure(engine, point, subjects, now, "identity.reset.requested")


async def reset_password(
    engine: AsyncEngine, point: ShopPoint, token: str, new_password: str, *, now: datetime
) -> int:
    contacts.check_password(new_password)
    async with transaction(engine) as conn:
        number = await _use_link(conn, point, token, "reset", now)
        await contacts.reset_password(
            conn, point.institution_id, number, new_password, actor=_actor(number), now=now
        )
        s, r = db.account_session.c, db.remember_token.c
        await conn.execute(
            sa.update(db.account_session)
            .where(s.contact_id == number, s.institution_id == point.institution_id)
            .where(s.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        await conn.execute(
            sa.update(db.remember_token)
            .where(r.contact_id == number, r.institution_id == point.institution_id)
            .where(r.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    return number


async def sign_in_external(
    engine: AsyncEngine,
    point: ShopPoint,
    number: int,
    *,
    link: tuple[str, str] | None,
    now: datetime,
) -> SignedIn:
    """Open a session for a contact an external provider vouched for; ``link`` (issuer,
    subject) remembers the provider's account for next time, in the same transaction."""
    async with transaction(engine) as conn:
        if link is not None:
            await contacts.link_external_identity(
                conn,
                point.institution_id,
                number,
                provider=link[0],
                subject=link[1],
                actor=_actor(number),
                now=now,
            )
        session = await open_session(conn, point, number, method="oidc", now=now)
    return SignedIn(number, session)


async def register_external(
    engine: AsyncEngine,
    point: ShopPoint,
    general: ContactInput,
    *,
    verified: bool,
    link: tuple[str, str],
    now: datetime,
) -> SignedIn:
    """A new contact from an external provider's claims (no password), linked and signed in."""
    async with transaction(engine) as conn:
        number = await contacts.create_contact_in(
            conn,
            point.institution_id,
            general,
            password=None,
            verified=verified,
            point_of_sale_id=point.point_of_sale_id,
            sales_channel_id=point.sales_channel_id,
            actor=f"sso:{link[0]}"[:128],
            now=now,
        )
        await contacts.link_external_identity(
            conn,
            point.institution_id,
            number,
            provider=link[0],
            subject=link[1],
            actor=_actor(number),
            now=now,
        )
        session = await open_session(conn, point, number, method="oidc", now=now)
    return SignedIn(number, session)
