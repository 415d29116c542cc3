"""Identity tables."""

from __future__ import annotations

import sqlalchemy as sa

from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata, ref

operator = sa.Table(
    "operator",
    metadata,
    id_column(),
    institution_column(),
    ref("point_of_sale"),
    sa.Column("login", sa.String(64), nullable=False, unique=True),
    sa.Column("partner", sa.String(64), nullable=False),
    sa.Column("secret_hash", sa.String(255), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("calls_per_minute", sa.Integer, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
