"""The outbox job that pays a requested refund back (topic ``payments.refund``).

:func:`~billetterie.payments.services.request_refund` writes the job in the transaction that
asks for the refund (a card confirmation for an order that can no longer close, a
cancellation); the worker's dispatcher runs :class:`RefundRunner` after commit:

- the refund is reloaded; one already settled is left as it is (the job is done);
- the provider is called with the refund's idempotency key ``refund-<id>``, the same on every
  attempt, so a retry after a crash or a lost answer refunds once;
- the provider refunded: the refund is SUCCEEDED (the intent REFUNDED once refunded in full);
- the provider refused (``error.payment.refund_refused``): the refund is FAILED and the job
  final; the amount is refundable again;
- anything else (the provider unreachable, a 5xx, a timeout): the refund stays PENDING and the
  outbox retries with backoff, up to the dispatcher's ``max_attempts``; the job's attempts and
  last error are shown with the refund (:func:`~billetterie.payments.services.order_card_payments`).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.payments.errors import ProviderUnavailable, RefundRefused, UnknownPayment
from billetterie.payments.services import REFUND_TOPIC, PaymentGateway, execute_refund
from billetterie.shared.clock import Clock
from billetterie.shared.outbox import FinalError, Job, RetryLater

TOPIC = REFUND_TOPIC


class RefundRunner:
    """The handler of ``payments.refund`` for one engine and gateway (bound per process)."""

    def __init__(self, engine: AsyncEngine, gateway: PaymentGateway, clock: Clock) -> None:
        self.engine = engine
        self.gateway = gateway
        self.clock = clock

    async def __call__(self, job: Job) -> None:
        try:
            await execute_refund(
                self.engine,
                self.gateway,
                institution_id=job.institution_id,
                refund_id=int(job.payload["refund_id"]),
                now=self.clock.now(),
            )
        except (RefundRefused, UnknownPayment) as refusal:
            raise FinalError(f"{refusal.code}: {refusal}") from None
        except ProviderUnavailable as busy:
            raise RetryLater(f"{busy.code}: {busy}") from None
