"""The waiting room's table: one row per visitor queued for a product's opening."""

from __future__ import annotations

import sqlalchemy as sa

from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata, ref

queue_ticket = sa.Table(
    "shop_queue_ticket",
    metadata,
    id_column(),
    institution_column(),
    ref("point_of_sale", index=False),  # ix_shop_queue_ticket_draw starts with it
    ref("product"),
    sa.Column("token", sa.String(64), nullable=False, unique=True),
    sa.Column("joined_at", UtcDateTime, nullable=False),
    # before the opening: a random draw, the order of admission; after it: None
    sa.Column("draw", sa.BigInteger, nullable=True),
    # after the opening: the admission time given at joining; before it: None
    sa.Column("admit_at", UtcDateTime, nullable=True),
    sa.Index("ix_shop_queue_ticket_draw", "point_of_sale_id", "product_id", "draw"),
)
