"""Signed ticket barcodes: a compact Ed25519-signed payload for a QR code (pure, no database).

Format (version 1, every integer big-endian; ``docs/barcodes.md`` has the byte table)::

    offset size  field
         0    1  version (1)
         1    4  key id (the signing key's id, see ``barcode_keys``)
         5    4  institution id
         9    8  ticket id
        17    8  performance id (0 when the ticket is not for one performance)
        25    4  issued at, Unix seconds (UTC)
        29    4  valid until, Unix seconds (UTC)
        33    8  nonce (random)
        41   64  Ed25519 signature of bytes 0..40
       105       total

The 105 bytes are encoded in RFC 4648 base32, upper case, without padding: 168 characters from
``A-Z2-7``, all in the QR alphanumeric set, so the code fits a version 10 QR code at error
correction M (311 alphanumeric characters); it takes version 7 (45 x 45 modules).

:func:`verify` checks, in this order, the shape (``error.barcode.malformed``), the key id
(``error.barcode.unknown_key``), the signature (``error.barcode.invalid_signature``) and only
then the validity window (``error.barcode.expired``), so a reported expiry is authentic.
Revocation is not part of the code: scanners check the revocation list by ticket id.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from billetterie.shared.errors import DomainError

VERSION = 1
_BODY = struct.Struct(">BIIQQII8s")
BODY_SIZE = _BODY.size  # 41
SIGNATURE_SIZE = 64
CODE_SIZE = BODY_SIZE + SIGNATURE_SIZE  # 105 bytes
CODE_LENGTH = CODE_SIZE * 8 // 5  # 168 base32 characters, no padding needed
NONCE_SIZE = 8
_U32 = 2**32 - 1
_U64 = 2**64 - 1


class BarcodeError(DomainError):
    """A scanned code that must not open the door."""

    code = "error.barcode.malformed"
    http_status = 400


class MalformedBarcode(BarcodeError):
    code = "error.barcode.malformed"


class UnknownBarcodeKey(BarcodeError):
    code = "error.barcode.unknown_key"


class InvalidBarcodeSignature(BarcodeError):
    code = "error.barcode.invalid_signature"


class ExpiredBarcode(BarcodeError):
    code = "error.barcode.expired"


@dataclass(frozen=True)
class BarcodePayload:
    """What a barcode states. ``performance_id`` is 0 for tickets not tied to one performance
    (passes, memberships). Times are whole seconds, UTC. ``nonce`` is 8 random bytes; leave it
    empty when building a payload to :func:`issue` and one is drawn."""

    key_id: int
    institution_id: int
    ticket_id: int
    performance_id: int
    issued_at: datetime
    valid_until: datetime
    nonce: bytes = b""
    version: int = VERSION


def _seconds(value: datetime, name: str) -> int:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    seconds = int(value.timestamp())
    if not 0 <= seconds <= _U32:
        raise ValueError(f"{name} is outside the barcode's range (1970..2106)")
    return seconds


def _check_range(name: str, value: int, top: int) -> None:
    if not 0 <= value <= top:
        raise ValueError(f"{name} must be between 0 and {top}")


def encode_body(payload: BarcodePayload) -> bytes:
    """The 41 signed bytes of ``payload`` (its nonce must be set)."""
    _check_range("key_id", payload.key_id, _U32)
    _check_range("institution_id", payload.institution_id, _U32)
    _check_range("ticket_id", payload.ticket_id, _U64)
    _check_range("performance_id", payload.performance_id, _U64)
    issued = _seconds(payload.issued_at, "issued_at")
    until = _seconds(payload.valid_until, "valid_until")
    if until < issued:
        raise ValueError("valid_until is before issued_at")
    if len(payload.nonce) != NONCE_SIZE:
        raise ValueError(f"the nonce must be {NONCE_SIZE} bytes")
    return _BODY.pack(
        payload.version,
        payload.key_id,
        payload.institution_id,
        payload.ticket_id,
        payload.performance_id,
        issued,
        until,
        payload.nonce,
    )


def issue(payload: BarcodePayload, private_key: Ed25519PrivateKey) -> str:
    """The barcode string of ``payload`` signed with ``private_key`` (whose id must be
    ``payload.key_id``). Draws a fresh nonce when ``payload.nonce`` is empty, so two codes for
    the same ticket differ. Raises ``ValueError`` for out-of-range fields (a programming error,
    not user input)."""
    if not payload.nonce:
        payload = BarcodePayload(
            key_id=payload.key_id,
            institution_id=payload.institution_id,
            ticket_id=payload.ticket_id,
            performance_id=payload.performance_id,
            issued_at=payload.issued_at,
            valid_until=payload.valid_until,
            nonce=secrets.token_bytes(NONCE_SIZE),
            version=payload.version,
        )
    body = encode_body(payload)
    raw = body + private_key.sign(body)
    return base64.b32encode(raw).decode("ascii")


def decode(code: str) -> tuple[BarcodePayload, bytes, bytes]:
    """Parse without verifying: the payload, the signed bytes and the signature.
    Raises :class:`MalformedBarcode`."""
    text = code.strip().upper()
    if len(text) != CODE_LENGTH:
        raise MalformedBarcode(f"a barcode has {CODE_LENGTH} characters, this one {len(text)}")
    try:
        raw = base64.b32decode(text)
    except (binascii.Error, ValueError):
        raise MalformedBarcode("not a base32 barcode") from None
    body, signature = raw[:BODY_SIZE], raw[BODY_SIZE:]
    version, key_id, institution_id, ticket_id, performance_id, issued, until, nonce = _BODY.unpack(
        body
    )
    if version != VERSION:
        raise MalformedBarcode(f"unknown barcode version {version}")
    if until < issued:
        raise MalformedBarcode("the validity window ends before it starts")
    payload = BarcodePayload(
        key_id=key_id,
        institution_id=institution_id,
        ticket_id=ticket_id,
        performance_id=performance_id,
        issued_at=datetime.fromtimestamp(issued, UTC),
        valid_until=datetime.fromtimestamp(until, UTC),
        nonce=nonce,
        version=version,
    )
    return payload, body, signature


def verify(code: str, public_keys: Mapping[int, Ed25519PublicKey], now: datetime) -> BarcodePayload:
    """The payload of an authentic, unexpired ``code``.

    ``public_keys`` maps key ids to the keys still verifiable (active and previous ones; retired
    keys left out). A code is valid up to and including its ``valid_until`` second. Raises
    :class:`MalformedBarcode`, :class:`UnknownBarcodeKey`, :class:`InvalidBarcodeSignature` or
    :class:`ExpiredBarcode`; nothing else for any input string.
    """
    payload, body, signature = decode(code)
    key = public_keys.get(payload.key_id)
    if key is None:
        raise UnknownBarcodeKey(f"barcode key {payload.key_id} is unknown or retired")
    try:
        key.verify(signature, body)
    except InvalidSignature:
        raise InvalidBarcodeSignature("the barcode's signature does not match") from None
    if now > payload.valid_until:
        raise ExpiredBarcode(
            f"the barcode was valid until {payload.valid_until.isoformat()}",
            validUntil=payload.valid_until.isoformat(),
        )
    return payload
