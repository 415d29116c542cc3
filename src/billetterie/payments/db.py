"""Payment tables. Every row carries ``institution_id``."""

from __future__ import annotations

import sqlalchemy as sa

from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata, ref

Big = sa.BigInteger().with_variant(sa.Integer, "sqlite")

payment_intent = sa.Table(
    "payment_intent",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("order_id", Big, nullable=False, index=True),  # the sales order (file)
    sa.Column("amount", Big, nullable=False),  # thousandths
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("reference", sa.String(255), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("return_url", sa.String(2048), nullable=False),
    sa.Column("redirect_url", sa.String(2048), nullable=True),
    sa.Column("refunded_amount", Big, nullable=False, server_default="0"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("provider", "reference"),
)

payment_refund = sa.Table(
    "payment_refund",
    metadata,
    id_column(),
    institution_column(),
    ref("payment_intent"),
    sa.Column("amount", Big, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("provider_reference", sa.String(255), nullable=True),
    sa.Column("reason", sa.String(255), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# Webhook events already applied: the same event twice changes nothing the second time.
payment_event = sa.Table(
    "payment_event",
    metadata,
    id_column(),
    institution_column(),
    ref("payment_intent"),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("provider", "event_id"),
)

# The built-in test provider's own books (what a processor would keep on its side): one row
# per charge attempt outcome and per refund, keyed by an idempotency key.
payment_test_ledger = sa.Table(
    "payment_test_ledger",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("reference", sa.String(255), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # CHARGE, DECLINE, REFUND
    sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
    sa.Column("external_id", sa.String(255), nullable=False),  # event id or refund reference
    sa.Column("amount", Big, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("card_last4", sa.String(4), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
