"""The built-in test card provider: a hosted card page served by billetterie itself.

It plays a card processor for the demo and the tests, through the same port a real adapter
implements (:class:`~billetterie.payments.models.PaymentProvider`):

- ``start`` draws a reference (``tp_…``) and points at ``/payments/test/{reference}``;
- the page (``payments.api``) takes a card: 4242 4242 4242 4242 succeeds, 4000 0000 0000 0002
  is declined; any other number is not a test card. Expiry (MM/YY, not past) and CVC (3 or 4
  digits) are validated;
- :meth:`TestCardProvider.charge` books the outcome in its own ledger
  (``payment_test_ledger``) and answers the webhook it sends, signed like Stripe's:
  ``Billetterie-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``;
- ``refund`` and ``status`` read and write that ledger.

Its "session store" is billetterie's own intent table (amount, currency, return URL), which a
real processor would keep on its side.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.payments import db
from billetterie.payments.errors import (
    InvalidPayment,
    InvalidSignature,
    MalformedEvent,
    ProviderUnavailable,
    RefundRefused,
    StaleEvent,
    UnknownPayment,
)
from billetterie.payments.models import (
    EventKind,
    PaymentIntent,
    PaymentState,
    ProviderEvent,
    ProviderStatus,
    StartedPayment,
)
from billetterie.shared.clock import Clock
from billetterie.shared.db import read, transaction

SIGNATURE_HEADER = "billetterie-signature"
TOLERANCE_SECONDS = 300
SUCCESS_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
TEST_CARDS = {SUCCESS_CARD: EventKind.SUCCEEDED, DECLINED_CARD: EventKind.FAILED}
EVENT_TYPES = {"payment.succeeded": EventKind.SUCCEEDED, "payment.failed": EventKind.FAILED}
_TYPE_OF = {kind: name for name, kind in EVENT_TYPES.items()}
REFERENCE = re.compile(r"^tp_[A-Za-z0-9_-]{16,64}$")


class InvalidCard(InvalidPayment):
    """The card form is wrong; ``fields`` maps each field to its message."""

    code = "error.payment.invalid_card"


@dataclass(frozen=True)
class Card:
    number: str  # digits only
    expiry_month: int
    expiry_year: int  # four digits
    cvc: str

    @property
    def last4(self) -> str:
        return self.number[-4:]


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def read_card(number: str, expiry: str, cvc: str, *, now: datetime) -> Card:
    """Validate the card form; raises :class:`InvalidCard` with every field's problem."""
    problems: dict[str, str] = {}
    digits = re.sub(r"[\s-]", "", number)
    if not re.fullmatch(r"[0-9]{12,19}", digits) or not _luhn(digits):
        problems["card_number"] = "not a valid card number"
    elif digits not in TEST_CARDS:
        problems["card_number"] = "not a test card: use 4242 4242 4242 4242 or 4000 0000 0000 0002"
    match = re.fullmatch(r"\s*(0[1-9]|1[0-2])\s*/\s*([0-9]{2})\s*", expiry)
    month = year = 0
    if match is None:
        problems["expiry"] = "expiry must be MM/YY"
    else:
        month, year = int(match.group(1)), 2000 + int(match.group(2))
        if (year, month) < (now.year, now.month):
            problems["expiry"] = "this card has expired"
    if not re.fullmatch(r"[0-9]{3,4}", cvc.strip()):
        problems["cvc"] = "the CVC is 3 or 4 digits"
    if problems:
        raise InvalidCard("the card details are not valid", fields=problems)
    return Card(digits, month, year, cvc.strip())


@dataclass(frozen=True)
class SignedWebhook:
    headers: dict[str, str]
    body: bytes


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class TestCardProvider:
    """The test processor. ``base_url`` prefixes the hosted page's URL (empty: a path)."""

    name = "test"
    __test__ = False  # not a pytest class

    def __init__(
        self, engine: AsyncEngine, clock: Clock, *, secret: str, base_url: str = ""
    ) -> None:
        if not secret:
            raise ValueError("the test provider needs a webhook secret")
        self.engine = engine
        self.clock = clock
        self._secret = secret
        self.base_url = base_url.rstrip("/")

    async def start(self, intent: PaymentIntent) -> StartedPayment:
        reference = "tp_" + secrets.token_urlsafe(18)
        return StartedPayment(reference, f"{self.base_url}/payments/test/{reference}")

    def sign_body(self, body: bytes, *, now: datetime) -> dict[str, str]:
        return {"Billetterie-Signature": sign(self._secret, body, int(now.timestamp()))}

    def parse_event(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> ProviderEvent:
        header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), "")
        fields = [item.strip().partition("=") for item in header.split(",")]
        timestamps = [value for key, _, value in fields if key == "t"]
        signatures = [value for key, _, value in fields if key == "v1"]
        if (
            len(timestamps) != 1
            or not re.fullmatch(r"[0-9]{1,12}", timestamps[0])
            or not signatures
        ):
            raise InvalidSignature(f"the {SIGNATURE_HEADER} header is missing or malformed")
        timestamp = int(timestamps[0])
        expected = sign(self._secret, body, timestamp).rpartition("v1=")[2].encode()
        if not any(hmac.compare_digest(expected, s.encode("utf-8", "replace")) for s in signatures):
            raise InvalidSignature("the webhook's signature does not match its body")
        if abs(now.timestamp() - timestamp) > TOLERANCE_SECONDS:
            raise StaleEvent(f"the webhook was signed at {timestamp}, too far from now")
        try:
            data = orjson.loads(body)
            event = ProviderEvent(
                event_id=_text(data["id"]),
                kind=EVENT_TYPES[data["type"]],
                reference=_text(data["reference"]),
                amount=_amount(data["amount"]),
                currency=_text(data["currency"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise MalformedEvent("the webhook's body is not a payment event") from None
        return event

    async def charge(
        self, intent: PaymentIntent, card: Card, *, now: datetime
    ) -> tuple[EventKind, SignedWebhook]:
        """Book the outcome of a card on ``intent`` and answer the webhook to send. A payment
        already charged is not charged again: the answer is its original event."""
        assert intent.reference is not None
        outcome = TEST_CARDS[card.number]
        for _ in range(2):
            async with read(self.engine) as conn:
                charged = await self._charge_row(conn, intent.reference)
            if charged is not None:
                return EventKind.SUCCEEDED, self._webhook(charged, EventKind.SUCCEEDED, now)
            suffix = (
                "charge" if outcome is EventKind.SUCCEEDED else "decline:" + secrets.token_hex(8)
            )
            row = {
                "institution_id": intent.institution_id,
                "reference": intent.reference,
                "kind": "CHARGE" if outcome is EventKind.SUCCEEDED else "DECLINE",
                "idempotency_key": f"{intent.reference}:{suffix}",
                "external_id": "evt_" + secrets.token_urlsafe(18),
                "amount": intent.amount,
                "currency": intent.currency,
                "card_last4": card.last4,
                "created_at": now,
            }
            try:
                async with transaction(self.engine) as conn:
                    await conn.execute(sa.insert(db.payment_test_ledger).values(row))
            except IntegrityError:
                continue  # a concurrent submit charged it first: answer that charge
            return outcome, self._webhook(row, outcome, now)
        raise ProviderUnavailable("the payment is being charged; retry")  # pragma: no cover

    def _webhook(self, row: Any, kind: EventKind, now: datetime) -> SignedWebhook:
        get = row._mapping if isinstance(row, sa.Row) else row
        body = orjson.dumps(
            {
                "id": get["external_id"],
                "type": _TYPE_OF[kind],
                "reference": get["reference"],
                "amount": get["amount"],
                "currency": get["currency"],
                "created": int(now.timestamp()),
            }
        )
        return SignedWebhook(self.sign_body(body, now=now), body)

    @staticmethod
    async def _charge_row(conn: AsyncConnection, reference: str) -> Any:
        ledger = db.payment_test_ledger
        return (
            await conn.execute(
                sa.select(ledger).where(ledger.c.reference == reference, ledger.c.kind == "CHARGE")
            )
        ).first()

    async def refund(self, reference: str, amount: int, *, idempotency_key: str) -> str:
        ledger = db.payment_test_ledger
        key = f"{reference}:refund:{idempotency_key}"
        for _ in range(2):
            async with read(self.engine) as conn:
                done = (
                    await conn.execute(
                        sa.select(ledger.c.external_id).where(ledger.c.idempotency_key == key)
                    )
                ).scalar_one_or_none()
                if done is not None:
                    return str(done)
                charged = await self._charge_row(conn, reference)
                if charged is None:
                    raise RefundRefused(f"payment {reference!r} was not charged")
                refunded = (
                    await conn.execute(
                        sa.select(sa.func.coalesce(sa.func.sum(ledger.c.amount), 0)).where(
                            ledger.c.reference == reference, ledger.c.kind == "REFUND"
                        )
                    )
                ).scalar_one()
            if not 0 < amount <= charged.amount - int(refunded):
                raise RefundRefused(f"refundable: {charged.amount - int(refunded)}; asked {amount}")
            refund_reference = "re_" + secrets.token_urlsafe(18)
            try:
                async with transaction(self.engine) as conn:
                    await conn.execute(
                        sa.insert(ledger).values(
                            institution_id=charged.institution_id,
                            reference=reference,
                            kind="REFUND",
                            idempotency_key=key,
                            external_id=refund_reference,
                            amount=amount,
                            currency=charged.currency,
                            created_at=self.clock.now(),
                        )
                    )
            except IntegrityError:
                continue  # the same refund was booked concurrently: answer it
            return refund_reference
        raise ProviderUnavailable("the refund is being booked; retry")  # pragma: no cover

    async def status(self, reference: str) -> ProviderStatus:
        ledger, intents = db.payment_test_ledger, db.payment_intent
        async with read(self.engine) as conn:
            intent = (
                await conn.execute(
                    sa.select(intents.c.amount).where(
                        intents.c.provider == self.name, intents.c.reference == reference
                    )
                )
            ).first()
            rows = (
                await conn.execute(sa.select(ledger).where(ledger.c.reference == reference))
            ).all()
        if intent is None and not rows:
            raise UnknownPayment(f"no test payment {reference!r}")
        charged = [r for r in rows if r.kind == "CHARGE"]
        refunded = sum(r.amount for r in rows if r.kind == "REFUND")
        amount = charged[0].amount if charged else (intent.amount if intent else 0)
        if charged:
            state = PaymentState.REFUNDED if refunded >= amount else PaymentState.SUCCEEDED
        elif rows:
            state = PaymentState.FAILED
        else:
            state = PaymentState.PENDING
        return ProviderStatus(reference, state, amount, refunded)


def _text(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 255 or not value.isprintable():
        raise ValueError("not a short printable string")
    return value


def _amount(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("not an amount")
    return value
