"""The box office's signed barcodes, as the wallet's scanner checks them (pure, no database).

The wallet does not import the box office: this is its own reading of the barcode format the
box office publishes (docs/barcodes.md, version 1): 105 bytes in base32 (168 characters,
upper case, no padding), every integer big-endian::

    version (1) | key id (4) | institution (4) | ticket (8) | performance (8)
    | issued at (4, Unix s) | valid until (4, Unix s) | nonce (8) | Ed25519 signature (64)

The signature covers the first 41 bytes, with the key named by the key id. :func:`verify`
answers the claims or raises :class:`BarcodeRefused` whose ``code`` is, in the order checked,
``error.barcode.malformed``, ``error.barcode.unknown_key`` (never registered, or retired),
``error.barcode.invalid_signature`` or ``error.barcode.expired``, and nothing else for any
input string.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNED = struct.Struct(">BIIQQII8s")  # the 41 signed bytes
SIGNATURE_SIZE = 64
LENGTH = (SIGNED.size + SIGNATURE_SIZE) * 8 // 5  # 168 base32 characters
VERSION = 1
PUBLIC_KEY_SIZE = 32
MAX_KEY_ID = 2**32 - 1


class BarcodeRefused(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Claims:
    key_id: int
    institution_id: int
    ticket_id: int
    performance_id: int
    issued_at: int  # Unix seconds
    valid_until: int


def _split(code: str) -> tuple[Claims, bytes, bytes]:
    text = code.strip().upper()
    if len(text) != LENGTH:
        raise BarcodeRefused(
            "error.barcode.malformed", f"a barcode has {LENGTH} characters, not {len(text)}"
        )
    try:
        raw = base64.b32decode(text)
    except (binascii.Error, ValueError):
        raise BarcodeRefused("error.barcode.malformed", "not a base32 barcode") from None
    signed, signature = raw[: SIGNED.size], raw[SIGNED.size :]
    version, key_id, institution, ticket, performance, issued, until, _nonce = SIGNED.unpack(signed)
    if version != VERSION:
        raise BarcodeRefused("error.barcode.malformed", f"unknown barcode version {version}")
    if until < issued:
        raise BarcodeRefused("error.barcode.malformed", "the validity ends before it starts")
    claims = Claims(key_id, institution, ticket, performance, issued, until)
    return claims, signed, signature


def verify(code: str, keys: Mapping[int, bytes], now_unix: int) -> Claims:
    """The claims of an authentic, unexpired barcode. ``keys`` maps the key ids still
    verifiable to raw 32-byte Ed25519 public keys. Valid up to and including ``valid until``."""
    claims, signed, signature = _split(code)
    raw_key = keys.get(claims.key_id)
    if raw_key is None:
        raise BarcodeRefused(
            "error.barcode.unknown_key", f"barcode key {claims.key_id} is unknown or retired"
        )
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(signature, signed)
    except (InvalidSignature, ValueError):
        raise BarcodeRefused(
            "error.barcode.invalid_signature", "the barcode's signature does not verify"
        ) from None
    if now_unix > claims.valid_until:
        raise BarcodeRefused("error.barcode.expired", "the barcode's validity has ended")
    return claims


def check_public_key(raw: bytes) -> None:
    """Raises ValueError unless ``raw`` is a usable Ed25519 public key."""
    if len(raw) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key has {PUBLIC_KEY_SIZE} bytes, not {len(raw)}")
    Ed25519PublicKey.from_public_bytes(raw)
