"""Inventory tables.

``stock`` is one counter of places: a (performance, seat category, contingent) for events —
the contingent null for the general pool — or a product item (optionally a timeslot) for
simple products. ``capacity`` null means unlimited. Numbered seats of a performance are rows of
``performance_seat``; their counter keeps the same numbers so reads never count seats.

Every change writes ``inventory_change`` with the institution's next ``sequence`` value, taken
from ``inventory_sequence`` by an ``UPDATE ... RETURNING`` that holds the row lock until commit:
sequence order is commit order, so a reader following the log never skips a late commit.
"""

from __future__ import annotations

import sqlalchemy as sa

from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata, ref

Big = sa.BigInteger().with_variant(sa.Integer, "sqlite")

stock = sa.Table(
    "stock",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("key", sa.String(64), nullable=False, unique=True),
    sa.Column(
        "product_id",
        Big,
        sa.ForeignKey("product.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column(
        "performance_id",
        Big,
        sa.ForeignKey("performance.id", ondelete="CASCADE"),
        nullable=True,
        index=True,
    ),
    sa.Column(
        "seat_category_id",
        Big,
        sa.ForeignKey("seat_category.id", ondelete="CASCADE"),
        nullable=True,
    ),
    sa.Column(
        "contingent_id", Big, sa.ForeignKey("contingent.id", ondelete="CASCADE"), nullable=True
    ),
    sa.Column(
        "product_item_id",
        Big,
        sa.ForeignKey("product_item.id", ondelete="CASCADE"),
        nullable=True,
        index=True,
    ),
    sa.Column("timeslot_id", Big, sa.ForeignKey("timeslot.id", ondelete="CASCADE"), nullable=True),
    sa.Column("numbered", sa.Boolean, nullable=False),
    sa.Column("capacity", sa.Integer, nullable=True),  # None: unlimited
    sa.Column("held", sa.Integer, nullable=False, server_default="0"),
    sa.Column("sold", sa.Integer, nullable=False, server_default="0"),
    sa.Column("blocked", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint("held >= 0 AND sold >= 0 AND blocked >= 0", name="counts_positive"),
    sa.CheckConstraint(
        "capacity IS NULL OR held + sold + blocked <= capacity", name="within_capacity"
    ),
    # a stock with places held or sold is a record: what it counts belongs to carts and
    # orders, so the setup row it hangs on (a performance, a seat category, a contingent, a
    # product item, a timeslot) is never deleted by a setup change (``shared.db.Sync``)
    info={"records": "held or sold places"},
)
stock.info["records_count"] = sa.func.sum(stock.c.held + stock.c.sold)

performance_seat = sa.Table(
    "performance_seat",
    metadata,
    id_column(),
    # not indexed: no statement reads a seat by institution alone (migration 0011)
    institution_column(index=False),
    sa.Column(
        "performance_id", Big, sa.ForeignKey("performance.id", ondelete="CASCADE"), nullable=False
    ),
    # indexed as the first column of ix_performance_seat_pick (migration 0011)
    ref("stock", index=False),
    sa.Column("seat_id", Big, sa.ForeignKey("seat.id", ondelete="CASCADE"), nullable=False),
    sa.Column("block_id", Big, nullable=False),
    sa.Column("row", sa.String(8), nullable=False),
    sa.Column("row_order", sa.Integer, nullable=False),  # the row's place in its block
    sa.Column("number", sa.String(8), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),  # the seat's place in its row
    sa.Column("x", sa.Float, nullable=False),
    sa.Column("y", sa.Float, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),  # FREE HELD SOLD BLOCKED KILLED
    sa.Column(
        "hold_id", Big, sa.ForeignKey("hold.id", ondelete="SET NULL"), nullable=True, index=True
    ),
    sa.UniqueConstraint("performance_id", "seat_id"),
    sa.Index("ix_performance_seat_pick", "stock_id", "state", "rank"),
)

hold = sa.Table(
    "hold",
    metadata,
    id_column(),
    institution_column(),
    sa.Column(
        "sales_channel_id",
        Big,
        sa.ForeignKey("sales_channel.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("cart", sa.String(64), nullable=False, index=True),
    sa.Column("state", sa.String(12), nullable=False),  # ACTIVE CONFIRMED RELEASED EXPIRED
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.Index("ix_hold_expiry", "state", "expires_at"),
    info={"records": "holds"},  # never deleted by a setup change (``shared.db.Sync``)
)

hold_line = sa.Table(
    "hold_line",
    metadata,
    id_column(),
    institution_column(),
    ref("hold"),
    sa.Column(
        "stock_id", Big, sa.ForeignKey("stock.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("quantity", sa.Integer, nullable=False),
)

inventory_sequence = sa.Table(
    "inventory_sequence",
    metadata,
    sa.Column(
        "institution_id", Big, sa.ForeignKey("institution.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("value", Big, nullable=False),
)

inventory_change = sa.Table(
    "inventory_change",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("sequence", Big, nullable=False),
    sa.Column("stock_id", Big, nullable=False),
    sa.Column("product_id", Big, nullable=False),
    sa.Column("performance_id", Big, nullable=True),
    sa.Column("held", sa.Integer, nullable=False),
    sa.Column("sold", sa.Integer, nullable=False),
    sa.Column("blocked", sa.Integer, nullable=False),
    sa.Column("capacity", sa.Integer, nullable=True),
    sa.Column("at", UtcDateTime, nullable=False),
    # numbered stocks: {"taken": [seat ids], "freed": [seat ids]}; null when not told
    sa.Column("seats", sa.JSON, nullable=True),
    sa.UniqueConstraint("institution_id", "sequence", "stock_id"),
    sa.Index("ix_inventory_change_feed", "institution_id", "sequence"),
)
