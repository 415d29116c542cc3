"""Operators and their API tokens (``POST /tnai/backend-apis/v1/auth``).

A token is an HS256 JWT: ``sub`` = institution code, ``aud`` = operator login, ``iss`` =
partner, plus ``pos`` (point of sale id) and ``iat``/``exp``. It is checked on every call, and the
operator is re-read so a disabled operator stops at once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.identity import db
from billetterie.identity.errors import BadCredentials, ExpiredToken, InvalidToken
from billetterie.identity.models import Operator
from billetterie.shared import audit

_hasher = PasswordHasher()
# Verified against when the login is unknown, so both paths cost the same.
_DUMMY_HASH = _hasher.hash("billetterie-no-such-operator")


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def _operator(row: sa.Row[tuple[object, ...]]) -> Operator:
    return Operator(
        id=row.id,
        institution_id=row.institution_id,
        login=row.login,
        partner=row.partner,
        point_of_sale_id=row.point_of_sale_id,
        calls_per_minute=row.calls_per_minute,
    )


async def authenticate(
    conn: AsyncConnection,
    *,
    login: str,
    partner: str,
    secret: str,
    institution_code: str,
    key: str,
    lifetime: timedelta,
    now: datetime,
) -> str:
    """Check an operator's secret and issue a token. The partner must match the operator's."""
    row = (await conn.execute(sa.select(db.operator).where(db.operator.c.login == login))).first()
    try:
        _hasher.verify(row.secret_hash if row is not None else _DUMMY_HASH, secret)
    except (VerificationError, InvalidHashError):
        raise BadCredentials("unknown operator or wrong secret") from None
    if row is None or not row.enabled or row.partner != partner:
        raise BadCredentials("unknown operator or wrong secret")
    claims = {
        "sub": institution_code,
        "aud": login,
        "iss": partner,
        "pos": row.point_of_sale_id,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
    }
    return jwt.encode(claims, key, algorithm="HS256")


@dataclass(frozen=True)
class TokenClaims:
    institution_code: str
    login: str
    partner: str
    point_of_sale_id: int | None


def decode_token(token: str, *, key: str, now: datetime) -> TokenClaims:
    """Check a token's signature and expiry (no database); raises InvalidToken/ExpiredToken."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["HS256"],
            options={
                "verify_aud": False,
                "verify_exp": False,
                "require": ["sub", "aud", "iss", "exp"],
            },
        )
    except jwt.PyJWTError:
        raise InvalidToken("the token is not valid") from None
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= now.timestamp():
        raise ExpiredToken("the token has expired; authenticate again")
    pos = claims.get("pos")
    return TokenClaims(
        str(claims["sub"]),
        str(claims["aud"]),
        str(claims["iss"]),
        pos if isinstance(pos, int) else None,
    )


async def operator_for(conn: AsyncConnection, claims: TokenClaims) -> Operator:
    """The operator a decoded token stands for; raises if it is gone, disabled or changed."""
    row = (
        await conn.execute(sa.select(db.operator).where(db.operator.c.login == claims.login))
    ).first()
    if (
        row is None
        or not row.enabled
        or row.partner != claims.partner
        or row.point_of_sale_id != claims.point_of_sale_id
    ):
        raise InvalidToken("the token's operator no longer exists or has changed")
    return _operator(row)


async def set_operator(
    conn: AsyncConnection,
    *,
    institution_id: int,
    point_of_sale_id: int,
    login: str,
    partner: str,
    secret: str,
    now: datetime,
    actor: str,
) -> Operator:
    """Create the operator or reset its secret, partner and point of sale (idempotent)."""
    values = {
        "institution_id": institution_id,
        "point_of_sale_id": point_of_sale_id,
        "partner": partner,
        "secret_hash": hash_secret(secret),
        "enabled": True,
    }
    existing = (
        await conn.execute(sa.select(db.operator.c.id).where(db.operator.c.login == login))
    ).first()
    if existing is None:
        await conn.execute(sa.insert(db.operator).values(login=login, created_at=now, **values))
    else:
        await conn.execute(
            sa.update(db.operator).where(db.operator.c.id == existing[0]).values(**values)
        )
    await audit.record(
        conn,
        institution_id=institution_id,
        action="identity.operator.saved",
        actor=actor,
        at=now,
        login=login,
    )
    row = (await conn.execute(sa.select(db.operator).where(db.operator.c.login == login))).one()
    return _operator(row)


async def operator_login_point_of_sale(conn: AsyncConnection, login: str) -> int | None:
    row = (
        await conn.execute(
            sa.select(db.operator.c.point_of_sale_id).where(db.operator.c.login == login)
        )
    ).first()
    return None if row is None else int(row[0])


@dataclass(frozen=True)
class OperatorSpec:
    login: str
    partner: str
    point_of_sale_id: int
    calls_per_minute: int | None
    secret_hash: str | None


async def sync_operators(
    conn: AsyncConnection, institution_id: int, specs: list[OperatorSpec], *, now: datetime
) -> int:
    """Create or update operators by login (a setup import); returns how many changed.

    A new operator without a secret hash gets a random secret nobody knows (set one with
    ``billetterie operators create``); an existing one keeps its secret unless a hash is given.
    Operators missing from ``specs`` are left as they are.
    """
    o = db.operator.c
    existing = {
        r.login: r
        for r in (
            await conn.execute(sa.select(db.operator).where(o.institution_id == institution_id))
        ).all()
    }
    changes = 0
    for spec in specs:
        values: dict[str, object] = {
            "partner": spec.partner,
            "point_of_sale_id": spec.point_of_sale_id,
            "calls_per_minute": spec.calls_per_minute,
        }
        if spec.secret_hash:
            values["secret_hash"] = spec.secret_hash
        row = existing.get(spec.login)
        if row is None:
            values.setdefault("secret_hash", hash_secret(secrets.token_urlsafe(32)))
            await conn.execute(
                sa.insert(db.operator).values(
                    institution_id=institution_id,
                    login=spec.login,
                    enabled=True,
                    created_at=now,
                    **values,
                )
            )
            changes += 1
        elif any(getattr(row, column) != value for column, value in values.items()):
            await conn.execute(sa.update(db.operator).where(o.id == row.id).values(**values))
            changes += 1
    return changes


async def list_operators(conn: AsyncConnection, institution_id: int) -> list[Operator]:
    o = db.operator.c
    rows = (
        await conn.execute(
            sa.select(db.operator).where(o.institution_id == institution_id).order_by(o.id)
        )
    ).all()
    return [_operator(r) for r in rows]
