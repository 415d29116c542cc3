"""Read the ticket shop's contact cookie on the institution's website.

The shop writes ``stx_contact_<organization>_<channel>_v1`` on the website's parent domain
when a contact signs in. Its names are readable as they are; the contact number and email
(``additionalData``) are encrypted for the website and signed by the shop::

    from billetterie_partner.cookies import fetch_shop_key, read_contact_cookie

    shop_key = fetch_shop_key("https://shop.example.org", "WEBSHOP")       # once, then cache
    cookie = read_contact_cookie(
        request.cookies["stx_contact_DEMO_WEB_v1"],
        cookie_name="stx_contact_DEMO_WEB_v1",
        website_private_key=open("website-key.pem", "rb").read(),
        shop_public_key=shop_key,
    )
    cookie.first_name, cookie.contact_number, cookie.email

The scheme (docs/api/cookies.md): ``v1.<wrapped key>.<nonce>.<ciphertext>.<signature>``, each
part base64url without padding; the Ed25519 signature covers the ASCII text before the last
dot; the key is RSA-OAEP-SHA256-wrapped; the data is AES-256-GCM with the cookie's name as
associated data. :class:`CookieError` is raised for anything that does not verify.

This module depends on ``cryptography`` and ``httpx`` only.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["ContactCookie", "CookieError", "fetch_shop_key", "read_contact_cookie"]


class CookieError(ValueError):
    """The cookie is malformed, not signed by the shop, or not encrypted for this website."""


@dataclass(frozen=True)
class ContactCookie:
    title: str | None
    first_name: str | None
    last_name: str | None
    nickname: str | None
    language: str | None
    logged_in_at: datetime | None
    contact_number: int | None  # None when the shop has no key of the website
    email: str | None
    issued_at: datetime | None


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise CookieError("a part of additionalData is not base64url") from None


def _key(pem: bytes | str, *, private: bool) -> Any:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        if private:
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_pem_public_key(data)
    except ValueError:
        raise CookieError("a key is not a PEM key") from None


def open_additional_data(
    token: str,
    *,
    cookie_name: str,
    website_private_key: bytes | str,
    shop_public_key: bytes | str,
) -> dict[str, Any]:
    """Verify the shop's signature, then decrypt; the decrypted JSON object."""
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != "v1":
        raise CookieError("additionalData is not a v1 token")
    signed, signature = ".".join(parts[:4]), _unb64(parts[4])
    shop_key = _key(shop_public_key, private=False)
    if not isinstance(shop_key, ed25519.Ed25519PublicKey):
        raise CookieError("the shop's key is not an Ed25519 public key")
    try:
        shop_key.verify(signature, signed.encode("ascii"))
    except InvalidSignature:
        raise CookieError("additionalData is not signed by this shop") from None
    website_key = _key(website_private_key, private=True)
    if not isinstance(website_key, rsa.RSAPrivateKey):
        raise CookieError("the website's key is not an RSA private key")
    try:
        key = website_key.decrypt(
            _unb64(parts[1]),
            padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
        )
        plaintext = AESGCM(key).decrypt(
            _unb64(parts[2]), _unb64(parts[3]), cookie_name.encode("ascii")
        )
    except (ValueError, InvalidTag):
        raise CookieError("additionalData is not encrypted for this website") from None
    data = json.loads(plaintext)
    if not isinstance(data, dict):
        raise CookieError("additionalData is not an object")
    return data


def read_contact_cookie(
    value: str,
    *,
    cookie_name: str,
    website_private_key: bytes | str | None = None,
    shop_public_key: bytes | str | None = None,
) -> ContactCookie:
    """The cookie's contents; ``additionalData`` is opened when both keys are given."""
    try:
        body = json.loads(unquote(value))
    except ValueError:
        raise CookieError("the cookie is not URL-encoded JSON") from None
    if not isinstance(body, dict):
        raise CookieError("the cookie is not a JSON object")
    secret: dict[str, Any] = {}
    token = body.get("additionalData")
    if token and website_private_key is not None and shop_public_key is not None:
        secret = open_additional_data(
            str(token),
            cookie_name=cookie_name,
            website_private_key=website_private_key,
            shop_public_key=shop_public_key,
        )
    stamp = body.get("timestamp")
    issued = secret.get("iat")
    return ContactCookie(
        title=body.get("individualTitle"),
        first_name=body.get("individualFirstname"),
        last_name=body.get("individualLastname"),
        nickname=body.get("nickname"),
        language=body.get("lang"),
        logged_in_at=datetime.fromisoformat(stamp) if isinstance(stamp, str) else None,
        contact_number=secret.get("contactNumber"),
        email=secret.get("email"),
        issued_at=datetime.fromtimestamp(issued, UTC) if isinstance(issued, int) else None,
    )


def fetch_shop_key(
    shop_url: str, point_of_sale_code: str, *, client: httpx.Client | None = None
) -> bytes:
    """The shop's Ed25519 public key (PEM) for a point of sale; cache it, it rarely changes."""
    url = f"{shop_url.rstrip('/')}/shop/{point_of_sale_code}/.well-known/contact-cookie-key.pem"
    response = client.get(url) if client is not None else httpx.get(url, timeout=10.0)
    response.raise_for_status()
    return response.content
