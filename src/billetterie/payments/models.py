"""Payment intents and the provider port. No framework imports.

A :class:`PaymentProvider` is what a card processor must offer (Stripe Checkout fits): a hosted
payment page reached by redirect (:meth:`~PaymentProvider.start`), a signed webhook that
confirms the outcome (:meth:`~PaymentProvider.parse_event`), refunds, and a status query for
reconciliation. The built-in test provider implements it; so would a real adapter, and both
pass ``tests/test_payment_contract.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class PaymentState(StrEnum):
    PENDING = "PENDING"  # started; the buyer is on the provider's page
    SUCCEEDED = "SUCCEEDED"  # the provider confirmed the charge (webhook)
    FAILED = "FAILED"  # the last attempt was declined; the buyer may try again
    CANCELLED = "CANCELLED"  # given up by the box office (cart expired, order reopened)
    REFUNDED = "REFUNDED"  # refunded in full


class EventKind(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class RefundState(StrEnum):
    PENDING = "PENDING"  # recorded; the provider has not confirmed it yet
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"  # refused by the provider; the amount is refundable again


@dataclass(frozen=True)
class PaymentIntent:
    """One attempt to collect ``amount`` (thousandths of ``currency``) for an order.
    ``reference`` is the provider's (None only while the intent is being started)."""

    id: int
    institution_id: int
    order_id: int
    amount: int
    currency: str
    provider: str
    reference: str | None
    state: PaymentState
    return_url: str
    redirect_url: str | None
    refunded_amount: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class StartedPayment:
    """Where to send the buyer, and the provider's reference for the payment."""

    reference: str
    redirect_url: str


@dataclass(frozen=True)
class ProviderEvent:
    """A verified webhook: ``event_id`` is unique per provider (the same event may arrive
    more than once)."""

    event_id: str
    kind: EventKind
    reference: str
    amount: int
    currency: str


@dataclass(frozen=True)
class ProviderStatus:
    reference: str
    state: PaymentState
    amount: int
    refunded_amount: int


@dataclass(frozen=True)
class Refund:
    id: int
    intent_id: int
    amount: int
    state: RefundState
    provider_reference: str | None


class PaymentProvider(Protocol):
    """The port a card processor's adapter implements.

    Contracts (checked by the contract test):

    - ``start`` creates the provider-side payment for ``intent`` (amount, currency, return URL)
      and answers a unique reference and the hosted page URL. It may call the network.
    - ``parse_event`` verifies the webhook's signature and freshness and parses it; it raises
      ``InvalidSignature`` / ``StaleEvent`` / ``MalformedEvent`` (``payments.errors``) and never
      anything else. It does no I/O.
    - ``refund`` refunds ``amount`` of a succeeded payment; the same ``idempotency_key`` twice
      refunds once and answers the same refund reference, also once nothing is left to refund
      (a retry whose first answer was lost); more than is left raises ``RefundRefused``; a
      transient failure raises ``ProviderUnavailable`` (the refund job retries with the same
      key).
    - ``status`` tells what the provider knows of a reference (``UnknownPayment`` if nothing).
    """

    name: str

    async def start(self, intent: PaymentIntent) -> StartedPayment: ...

    def parse_event(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> ProviderEvent: ...

    async def refund(self, reference: str, amount: int, *, idempotency_key: str) -> str: ...

    async def status(self, reference: str) -> ProviderStatus: ...
