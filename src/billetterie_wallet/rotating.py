"""Rotating barcodes: the box office's signed barcode plus a time-based code.

Implements RFC 6238 (TOTP) over RFC 4226 (HOTP) section 5.3's dynamic truncation, with a 15 s
time step (X = 15, T0 = 0), 8 digits and HMAC-SHA1 or HMAC-SHA256 (RFC 6238 section 1.2 allows
both). Skipped: the RFC's resynchronisation of drifting clocks (section 6); the validator accepts
exactly one step either side (section 5.2's recommended "one time step network delay").

Secrets: each activation group (``activationParameters.groupId``) has a random 32-byte secret.
A ticket's secret is ``HMAC-SHA256(group secret, barcode)``, so a scanner that knows only the group
secret validates any code of the group offline, from the barcode the QR carries. The ticket's
secret reaches a device only from the activation time on.

QR payload: ``BW1|<groupId, percent-encoded>|<code>|<barcode as given>``; the barcode comes last
and is taken whole, so it may contain any character.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, unquote

STEP_SECONDS = 15
DIGITS = 8
WINDOW = 1  # steps accepted either side of the scanner's current step
PREFIX = "BW1"
MAX_GROUP = 100  # the lengths injection accepts
MAX_BARCODE = 512
ALGORITHMS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256}


def hotp(secret: bytes, counter: int, *, digits: int = DIGITS, algorithm: str = "SHA256") -> str:
    """RFC 4226 HOTP value of ``counter`` (section 5.3's dynamic truncation)."""
    digest = hmac.new(secret, struct.pack(">Q", counter), ALGORITHMS[algorithm]).digest()
    offset = digest[-1] & 0x0F
    binary = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def time_step(at: datetime, step: int = STEP_SECONDS) -> int:
    return int(at.timestamp()) // step


def totp(
    secret: bytes,
    at: datetime,
    *,
    step: int = STEP_SECONDS,
    digits: int = DIGITS,
    algorithm: str = "SHA256",
) -> str:
    """RFC 6238 TOTP value at ``at``."""
    return hotp(secret, time_step(at, step), digits=digits, algorithm=algorithm)


def ticket_secret(group_secret: bytes, barcode: str) -> bytes:
    return hmac.new(group_secret, barcode.encode("utf-8"), hashlib.sha256).digest()


def decode_secret(value: str) -> bytes:
    return base64.b64decode(value)


def encode_secret(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def payload(group_id: str, barcode: str, code: str) -> str:
    return f"{PREFIX}|{quote(group_id, safe='')}|{code}|{barcode}"


@dataclass(frozen=True)
class Payload:
    group_id: str
    code: str
    barcode: str


def parse_payload(text: str) -> Payload | None:
    parts = text.split("|", 3)
    if len(parts) != 4 or parts[0] != PREFIX:
        return None
    _, group, code, barcode = parts
    if len(code) != DIGITS or not code.isdigit() or not barcode or not group:
        return None
    group = unquote(group)
    if len(group) > MAX_GROUP or len(barcode) > MAX_BARCODE:
        return None
    return Payload(group, code, barcode)


def check_code(
    secret: bytes, code: str, at: datetime, *, algorithm: str = "SHA256", window: int = WINDOW
) -> int | None:
    """The step offset (-window..window) at which ``code`` is valid at ``at``; None if none."""
    current = time_step(at)
    for offset in sorted(range(-window, window + 1), key=abs):
        expected = hotp(secret, current + offset, algorithm=algorithm)
        if hmac.compare_digest(expected, code):
            return offset
    return None
