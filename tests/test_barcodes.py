"""Signed barcodes: round trip, every refusal with its code, QR capacity, and the standalone
verifier agreeing with the library on the same codes."""

from __future__ import annotations

import ast
import base64
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from billetterie.sales import barcode_verifier
from billetterie.sales.barcodes import (
    CODE_LENGTH,
    BarcodeError,
    BarcodePayload,
    ExpiredBarcode,
    InvalidBarcodeSignature,
    MalformedBarcode,
    UnknownBarcodeKey,
    decode,
    issue,
    verify,
)

ISSUED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
UNTIL = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def payload(**changes: object) -> BarcodePayload:
    base = BarcodePayload(
        key_id=7,
        institution_id=3,
        ticket_id=123456789,
        performance_id=42,
        issued_at=ISSUED,
        valid_until=UNTIL,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    code = issue(payload(), KEY)
    assert len(code) == CODE_LENGTH == 168
    assert set(code) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    result = verify(code, {7: KEY.public_key()}, ISSUED + timedelta(days=1))
    assert (result.key_id, result.institution_id, result.ticket_id, result.performance_id) == (
        7,
        3,
        123456789,
        42,
    )
    assert (result.issued_at, result.valid_until) == (ISSUED, UNTIL)
    assert len(result.nonce) == 8


def test_two_codes_for_one_ticket_differ_by_nonce() -> None:
    first, second = issue(payload(), KEY), issue(payload(), KEY)
    assert first != second
    assert decode(first)[0].nonce != decode(second)[0].nonce


def test_largest_values_fit_and_performance_zero_means_none() -> None:
    code = issue(payload(key_id=2**32 - 1, ticket_id=2**64 - 1, performance_id=0), KEY)
    result = verify(code, {2**32 - 1: KEY.public_key()}, ISSUED)
    assert (result.ticket_id, result.performance_id) == (2**64 - 1, 0)


@pytest.mark.parametrize("error", ["l", "m"])
def test_fits_a_qr_code_of_version_10_at_most(error: str) -> None:
    code = issue(payload(key_id=2**32 - 1, ticket_id=2**64 - 1), KEY)
    qr = segno.make(code, error=error)
    assert qr.mode == "alphanumeric"
    assert isinstance(qr.version, int) and qr.version <= 10
    assert qr.version == {"l": 6, "m": 7}[error]  # as docs/barcodes.md says


def test_unknown_key_is_refused() -> None:
    code = issue(payload(), KEY)
    with pytest.raises(UnknownBarcodeKey) as caught:
        verify(code, {8: KEY.public_key()}, ISSUED)
    assert caught.value.code == "error.barcode.unknown_key"


def test_other_key_under_the_same_id_is_an_invalid_signature() -> None:
    code = issue(payload(), OTHER_KEY)
    with pytest.raises(InvalidBarcodeSignature) as caught:
        verify(code, {7: KEY.public_key()}, ISSUED)
    assert caught.value.code == "error.barcode.invalid_signature"


def test_every_tampered_byte_is_refused() -> None:
    raw = base64.b32decode(issue(payload(), KEY))
    keys = {7: KEY.public_key()}
    for index in range(len(raw)):
        tampered = bytearray(raw)
        tampered[index] ^= 0x01
        code = base64.b32encode(bytes(tampered)).decode()
        with pytest.raises(BarcodeError) as caught:
            verify(code, keys, ISSUED)
        # The version byte and the key id decide the refusal; a flipped high byte of a time can
        # end the window before it starts; every other byte breaks the signature.
        if index == 0:
            assert caught.value.code == "error.barcode.malformed"
        elif 1 <= index <= 4:
            assert caught.value.code == "error.barcode.unknown_key"
        elif 25 <= index <= 32:
            assert caught.value.code in {
                "error.barcode.malformed",
                "error.barcode.invalid_signature",
            }
        else:
            assert caught.value.code == "error.barcode.invalid_signature"


def test_expiry_is_checked_after_the_signature() -> None:
    code = issue(payload(), KEY)
    keys = {7: KEY.public_key()}
    assert verify(code, keys, UNTIL).ticket_id == 123456789  # the last second still counts
    with pytest.raises(ExpiredBarcode) as caught:
        verify(code, keys, UNTIL + timedelta(seconds=1))
    assert caught.value.code == "error.barcode.expired"
    assert caught.value.extra == {"validUntil": UNTIL.isoformat()}
    forged = issue(payload(), OTHER_KEY)
    with pytest.raises(InvalidBarcodeSignature):
        verify(forged, keys, UNTIL + timedelta(days=1))


@pytest.mark.parametrize(
    "code",
    ["", "A" * 167, "A" * 169, "1" * 168, "é" * 168, "A" * 160 + "========"],
)
def test_malformed_codes(code: str) -> None:
    with pytest.raises(MalformedBarcode) as caught:
        verify(code, {7: KEY.public_key()}, ISSUED)
    assert caught.value.code == "error.barcode.malformed"


def test_unknown_version_is_malformed() -> None:
    code = issue(payload(version=2), KEY)
    with pytest.raises(MalformedBarcode, match="version 2"):
        verify(code, {7: KEY.public_key()}, ISSUED)


def test_out_of_range_fields_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="ticket_id"):
        issue(payload(ticket_id=2**64), KEY)
    with pytest.raises(ValueError, match="before"):
        issue(payload(valid_until=ISSUED - timedelta(seconds=1)), KEY)
    with pytest.raises(ValueError, match="timezone"):
        issue(payload(issued_at=datetime(2026, 1, 1)), KEY)


@given(st.text(max_size=200))
def test_any_text_is_refused_with_a_barcode_code(text: str) -> None:
    with pytest.raises(BarcodeError):
        verify(text, {7: KEY.public_key()}, ISSUED)


@given(st.binary(min_size=105, max_size=105))
def test_any_105_bytes_are_refused_with_a_barcode_code(raw: bytes) -> None:
    with pytest.raises(BarcodeError):
        verify(base64.b32encode(raw).decode(), {7: KEY.public_key()}, ISSUED)


# --- the standalone verifier ----------------------------------------------------------------


def raw_public(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_standalone_verifier_imports_only_the_standard_library_and_cryptography() -> None:
    source = Path(barcode_verifier.__file__).read_text(encoding="utf-8")
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) == {"cryptography"}


def test_standalone_verifier_agrees_with_the_library() -> None:
    code = issue(payload(), KEY)
    claims = barcode_verifier.verify_barcode(code, {7: raw_public(KEY)}, int(ISSUED.timestamp()))
    assert claims == {
        "key_id": 7,
        "institution_id": 3,
        "ticket_id": 123456789,
        "performance_id": 42,
        "issued_at": int(ISSUED.timestamp()),
        "valid_until": int(UNTIL.timestamp()),
    }


@pytest.mark.parametrize(
    ("code", "keys", "now", "expected"),
    [
        ("A" * 10, {7: b""}, 0, "error.barcode.malformed"),
        (issue(payload(), KEY), {8: raw_public(KEY)}, 0, "error.barcode.unknown_key"),
        (issue(payload(), OTHER_KEY), {7: raw_public(KEY)}, 0, "error.barcode.invalid_signature"),
        (
            issue(payload(), KEY),
            {7: raw_public(KEY)},
            int(UNTIL.timestamp()) + 1,
            "error.barcode.expired",
        ),
    ],
)
def test_standalone_verifier_refusals(
    code: str, keys: dict[int, bytes], now: int, expected: str
) -> None:
    with pytest.raises(barcode_verifier.BarcodeRejected) as caught:
        barcode_verifier.verify_barcode(code, keys, now)
    assert caught.value.code == expected
