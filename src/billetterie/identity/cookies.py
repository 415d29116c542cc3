"""The website contact cookie ``stx_contact_<organization>_<channel>_v1`` (seed 002).

Its value is the URL-encoding (RFC 3986 percent-encoding, every reserved byte encoded) of a
compact JSON object: ``individualTitle``, ``individualFirstname``, ``individualLastname``,
``nickname``, ``lang``, ``timestamp`` (last login, ISO-8601 UTC) and ``additionalData``.

``additionalData`` carries the contact number and email for the website only; the byte-level
scheme is in docs/api/cookies.md:

    v1.<wrapped key>.<nonce>.<ciphertext>.<signature>      (each part base64url, no padding)

- a fresh 32-byte key K, wrapped with the website's RSA public key: RSA-OAEP, SHA-256 for both
  the hash and MGF1, no label;
- a fresh 12-byte nonce; the plaintext is the JSON ``{"contactNumber", "email", "iat"}``,
  encrypted with AES-256-GCM under K, the cookie's name (ASCII) as associated data, the 16-byte
  tag appended to the ciphertext;
- an Ed25519 signature by the point of sale over the ASCII string
  ``v1.<wrapped key>.<nonce>.<ciphertext>``; its public key is served at
  ``/shop/<code>/.well-known/contact-cookie-key.pem``.

Without a website key on the point of sale the cookie goes without ``additionalData``.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "v1"


def cookie_name(organization_code: str, channel_code: str) -> str:
    return f"stx_contact_{organization_code}_{channel_code}_v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seal(
    *,
    contact_number: int,
    email: str | None,
    issued_at: datetime,
    name: str,
    website_public_key_pem: str,
    signing_key: ed25519.Ed25519PrivateKey,
) -> str:
    """``additionalData``: encrypted for the website, signed by the shop."""
    website_key = serialization.load_pem_public_key(website_public_key_pem.encode())
    assert isinstance(website_key, rsa.RSAPublicKey)
    key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    plaintext = json.dumps(
        {"contactNumber": contact_number, "email": email, "iat": int(issued_at.timestamp())},
        separators=(",", ":"),
    ).encode()
    wrapped = website_key.encrypt(
        key,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, name.encode("ascii"))
    signed = ".".join((VERSION, _b64(wrapped), _b64(nonce), _b64(ciphertext)))
    return f"{signed}.{_b64(signing_key.sign(signed.encode('ascii')))}"


def cookie_value(
    *,
    title: str | None,
    first_name: str | None,
    last_name: str | None,
    nickname: str | None,
    language: str,
    logged_in_at: datetime,
    additional_data: str | None,
) -> str:
    body = {
        "individualTitle": title,
        "individualFirstname": first_name,
        "individualLastname": last_name,
        "nickname": nickname,
        "lang": language,
        "timestamp": logged_in_at.isoformat(),
        "additionalData": additional_data,
    }
    return quote(json.dumps(body, separators=(",", ":"), ensure_ascii=False), safe="")
