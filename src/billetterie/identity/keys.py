"""Each point of sale's own keys, made on first use and kept in ``identity_key``:

- ``cookie``: Ed25519, signs the website contact cookie's ``additionalData``;
- ``saml``: RSA 2048 with a self-signed certificate, signs SAML assertions and responses;
- ``oidc``: RSA 2048, signs ID tokens and access tokens (RS256), published as a JWKS.

Private keys are stored as PKCS#8 PEM. Two processes making the same key at once: the unique
constraint keeps the first, the other reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.identity import db
from billetterie.shared.db import read, transaction

PURPOSES = ("cookie", "saml", "oidc")


@dataclass(frozen=True)
class StoredKey:
    private_pem: str
    certificate_pem: str | None

    def private_key(self) -> ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.private_pem.encode(), password=None)
        assert isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey)
        return key

    def public_pem(self) -> str:
        return (
            self.private_key()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


def _pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _new_key(purpose: str, subject: str, now: datetime) -> StoredKey:
    if purpose == "cookie":
        return StoredKey(_pem(ed25519.Ed25519PrivateKey.generate()), None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if purpose == "oidc":
        return StoredKey(_pem(key), None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject[:64])])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return StoredKey(_pem(key), certificate.public_bytes(serialization.Encoding.PEM).decode())


async def point_of_sale_key(
    engine: AsyncEngine,
    *,
    institution_id: int,
    point_of_sale_id: int,
    purpose: str,
    subject: str,
    now: datetime,
) -> StoredKey:
    """The point of sale's key for ``purpose``, made if it has none yet."""
    assert purpose in PURPOSES, purpose
    k = db.identity_key.c
    query = sa.select(k.private_key, k.certificate).where(
        k.point_of_sale_id == point_of_sale_id, k.purpose == purpose
    )
    async with read(engine) as conn:
        row = (await conn.execute(query)).first()
    if row is not None:
        return StoredKey(row.private_key, row.certificate)
    made = _new_key(purpose, subject, now)
    try:
        async with transaction(engine) as conn:
            await conn.execute(
                sa.insert(db.identity_key).values(
                    institution_id=institution_id,
                    point_of_sale_id=point_of_sale_id,
                    purpose=purpose,
                    private_key=made.private_pem,
                    certificate=made.certificate_pem,
                    created_at=now,
                )
            )
    except IntegrityError:
        async with read(engine) as conn:
            row = (await conn.execute(query)).one()
        return StoredKey(row.private_key, row.certificate)
    return made
