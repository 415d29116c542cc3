"""Sales tables.

An order (S-360's *file*) groups operations; an operation is one line of a cart request (a
performance's places, a simple product, a season ticket) and owns one inventory hold; a
movement is one place of an operation and, once the order is closed, has one ticket. What a
movement shows (product, performance, seat, tariff names) is copied onto it when it is created,
so tickets and order details never change when the catalog does.

Money moves through ``account`` rows — gift vouchers, contacts' credit balances and resellers'
pending accounts alike: ``balance`` is what may still be spent and ``credit_limit`` how far below
zero it may go (0 except for pending accounts), so every debit is one conditional update
``... WHERE balance + credit_limit >= amount``; ``account_entry`` is the ledger.
"""

from __future__ import annotations

import sqlalchemy as sa

from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata, ref

Big = sa.BigInteger().with_variant(sa.Integer, "sqlite")
VALID_TICKET = "state IN ('NOT_PRINTED', 'PRINTED', 'CONTROLLED')"
Money = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # thousandths, past int32

sales_order = sa.Table(
    "sales_order",
    metadata,
    id_column(),
    institution_column(),
    ref("point_of_sale"),
    ref("sales_channel"),
    sa.Column("secret_id", sa.String(40), nullable=False, unique=True),
    sa.Column("operator", sa.String(128), nullable=False),
    sa.Column("order_type", sa.String(16), nullable=False),  # SALE RESERVATION OPTION
    sa.Column("state", sa.String(16), nullable=False),  # RUNNING CLOSED CANCELED ABANDONNED
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total", Money, nullable=False),  # thousandths, movements still valid
    sa.Column("paid", Money, nullable=False),  # payments less refunds
    sa.Column("language", sa.String(8), nullable=False),
    sa.Column("contact_number", sa.String(32), nullable=True, index=True),
    sa.Column("external_reference", sa.String(128), nullable=True),
    sa.Column("purchaser", sa.JSON, nullable=False),  # name and email as given
    sa.Column("expires_at", UtcDateTime, nullable=True),  # a cart's; None once closed
    # a card payment under way: the payments to apply when the provider confirms it
    sa.Column("pending_payments", sa.JSON, nullable=True),
    sa.Column("origin_order_id", Big, sa.ForeignKey("sales_order.id"), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.Index("ix_sales_order_expiry", "state", "expires_at"),
    info={"records": "orders"},  # never deleted by a setup change (``shared.db.Sync``)
)

operation = sa.Table(
    "operation",
    metadata,
    id_column(),
    institution_column(),
    sa.Column(
        "order_id",
        Big,
        sa.ForeignKey("sales_order.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("kind", sa.String(16), nullable=False),  # SINGLE_ENTRY SIMPLE_PRODUCT COMPOSED
    sa.Column("product_id", Big, sa.ForeignKey("product.id", ondelete="RESTRICT"), nullable=False),
    sa.Column("hold_id", Big, sa.ForeignKey("hold.id", ondelete="SET NULL"), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),  # RESERVED SOLD ABANDONED CANCELED
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    info={"records": "order lines"},
)

movement = sa.Table(
    "movement",
    metadata,
    id_column(),
    institution_column(),
    sa.Column(
        "order_id",
        Big,
        sa.ForeignKey("sales_order.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column(
        "operation_id",
        Big,
        sa.ForeignKey("operation.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("product_id", Big, nullable=False, index=True),
    # no foreign key, but ``info["names"]`` tells ``shared.db.Sync`` what it points at: a
    # setup change never deletes a performance that movements name
    sa.Column("performance_id", Big, nullable=True, index=True, info={"names": "performance"}),
    sa.Column("seat_category_id", Big, nullable=True),
    sa.Column("audience_sub_category_id", Big, nullable=False),
    sa.Column("price_level_id", Big, nullable=True),
    sa.Column("product_item_id", Big, nullable=True),
    sa.Column("timeslot_id", Big, nullable=True),
    sa.Column("contingent_id", Big, nullable=True),
    sa.Column("stock_id", Big, nullable=False),
    sa.Column("performance_seat_id", Big, nullable=True),
    sa.Column("amount", Money, nullable=False),  # this place's share of the price
    sa.Column("vat_rate", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # RESERVED SOLD ABANDONED CANCELED
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("holder", sa.JSON, nullable=True),  # setMovementContactData
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("cancelled_at", UtcDateTime, nullable=True),
    sa.Column("refund_order_id", Big, sa.ForeignKey("sales_order.id"), nullable=True),
    info={"records": "places in orders"},
)

ticket = sa.Table(
    "ticket",
    metadata,
    id_column(),
    institution_column(),
    sa.Column(
        "order_id",
        Big,
        sa.ForeignKey("sales_order.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column(
        "movement_id",
        Big,
        sa.ForeignKey("movement.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("product_id", Big, nullable=False),
    sa.Column("performance_id", Big, nullable=True),
    sa.Column("barcode", sa.String(255), nullable=True, unique=True),
    sa.Column("state", sa.String(16), nullable=False),  # NOT_PRINTED PRINTED CONTROLLED ...
    sa.Column("issued_at", UtcDateTime, nullable=False),
    sa.Column("printed_at", UtcDateTime, nullable=True),
    sa.Column("controlled_at", UtcDateTime, nullable=True),
    sa.Column("cancelled_at", UtcDateTime, nullable=True),
    sa.Index("ix_ticket_listing", "institution_id", "product_id", "issued_at"),
    # one valid ticket per movement; a reissued one leaves its INVALIDATED predecessor beside it
    sa.Index(
        "uq_ticket_valid_movement",
        "movement_id",
        unique=True,
        postgresql_where=sa.text(VALID_TICKET),
        sqlite_where=sa.text(VALID_TICKET),
    ),
)

payment = sa.Table(
    "payment",
    metadata,
    id_column(),
    institution_column(),
    sa.Column(
        "order_id",
        Big,
        sa.ForeignKey("sales_order.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("payment_method_id", Big, nullable=False),
    sa.Column("method_code", sa.String(16), nullable=False),
    sa.Column("payment_type", sa.String(24), nullable=False),
    sa.Column("amount", Money, nullable=False),  # > 0 paid, < 0 refunded
    sa.Column("account_id", Big, sa.ForeignKey("account.id"), nullable=True),
    sa.Column("reference", sa.String(128), nullable=True),  # voucher code, card payment
    sa.Column("created_at", UtcDateTime, nullable=False),
)

account = sa.Table(
    "account",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("kind", sa.String(16), nullable=False),  # VOUCHER CREDIT PENDING_ACCOUNT
    sa.Column("code", sa.String(64), nullable=False),  # voucher code, contact number, pos code
    sa.Column("point_of_sale_id", Big, nullable=True),  # a pending account's
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("balance", Money, nullable=False),
    sa.Column("credit_limit", Money, nullable=False, server_default="0"),
    sa.Column("expires_at", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("institution_id", "kind", "code"),
    sa.CheckConstraint("balance + credit_limit >= 0", name="within_limit"),
)

account_entry = sa.Table(
    "account_entry",
    metadata,
    id_column(),
    institution_column(),
    ref("account"),
    sa.Column("order_id", Big, nullable=True, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # DEBIT CREDIT (ledger side of the owner)
    sa.Column("amount", Money, nullable=False),  # > 0
    sa.Column("balance_after", Money, nullable=False),
    sa.Column("description", sa.String(255), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Index("ix_account_entry_statement", "account_id", "at"),
)
