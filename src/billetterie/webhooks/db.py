"""Webhook tables: subscriptions (from the setup file) and the log of delivery attempts."""

from __future__ import annotations

import sqlalchemy as sa

from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata, ref

webhook_subscription = sa.Table(
    "webhook_subscription",
    metadata,
    id_column(),
    institution_column(),
    ref("point_of_sale"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("events", sa.JSON, nullable=False),  # ["order.closed", ...]
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("payload", sa.String(8), nullable=False),  # ping | full
    sa.Column("filter", sa.JSON, nullable=False),  # {"products": [...], "productFamilies": [...]}
    sa.Column("secret", sa.String(255), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

# One row per HTTP attempt (or per attempt that could not be made); the operator's log.
webhook_attempt = sa.Table(
    "webhook_attempt",
    metadata,
    id_column(),
    institution_column(),
    sa.Column(
        "point_of_sale_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False
    ),
    sa.Column(
        "subscription_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False
    ),
    sa.Column("subscription_code", sa.String(16), nullable=False),
    sa.Column("delivery_id", sa.String(32), nullable=False, index=True),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("subject_id", sa.String(64), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("response_code", sa.Integer, nullable=True),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Index("ix_webhook_attempt_listing", "institution_id", "point_of_sale_id", "id"),
)
