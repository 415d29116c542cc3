"""A standalone barcode verifier: copy this file into a scanner; it needs only ``cryptography``.

It implements the format of ``docs/barcodes.md`` (version 1) without importing billetterie::

    from barcode_verifier import verify_barcode
    claims = verify_barcode(scanned_text, {key_id: raw_public_key_32_bytes}, now_unix)

``keys`` holds the raw 32-byte Ed25519 public keys published at ``GET /api/v1/barcodes/keys``
(field ``publicKey``, base64). The result is a dict of the signed fields; a refusal raises
``BarcodeRejected`` whose ``code`` is one of ``error.barcode.malformed``,
``error.barcode.unknown_key``, ``error.barcode.invalid_signature``, ``error.barcode.expired``.
Check the ticket id against the revocation list afterwards.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_BODY = struct.Struct(">BIIQQII8s")  # 41 bytes, then a 64-byte signature


class BarcodeRejected(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def verify_barcode(code: str, keys: Mapping[int, bytes], now_unix: int) -> dict[str, int]:
    text = code.strip().upper()
    if len(text) != 168:
        raise BarcodeRejected("error.barcode.malformed", "wrong length")
    try:
        raw = base64.b32decode(text)
    except (binascii.Error, ValueError):
        raise BarcodeRejected("error.barcode.malformed", "not base32") from None
    body, signature = raw[:41], raw[41:]
    version, key_id, institution, ticket, performance, issued, until, _nonce = _BODY.unpack(body)
    if version != 1 or until < issued:
        raise BarcodeRejected("error.barcode.malformed", "unknown version or bad window")
    if key_id not in keys:
        raise BarcodeRejected("error.barcode.unknown_key", f"key {key_id} unknown")
    try:
        Ed25519PublicKey.from_public_bytes(keys[key_id]).verify(signature, body)
    except (InvalidSignature, ValueError):
        raise BarcodeRejected("error.barcode.invalid_signature", "bad signature") from None
    if now_unix > until:
        raise BarcodeRejected("error.barcode.expired", "expired")
    return {
        "key_id": key_id,
        "institution_id": institution,
        "ticket_id": ticket,
        "performance_id": performance,
        "issued_at": issued,
        "valid_until": until,
    }
