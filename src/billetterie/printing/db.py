"""Printing tables: the interfaces, the schedule claims of their functions, what each ticket is
in the wallet (keyed by ticket id), the wallet's history of it, and the execution log."""

from __future__ import annotations

import sqlalchemy as sa

from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata, ref

Big = sa.BigInteger().with_variant(sa.Integer, "sqlite")

printing_interface = sa.Table(
    "printing_interface",
    metadata,
    id_column(),
    institution_column(),
    ref("organization"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),  # WALLET
    sa.Column("url", sa.String(2000), nullable=False),  # ends with organizer/tickets
    sa.Column("login", sa.String(128), nullable=False),
    sa.Column("api_key", sa.String(255), nullable=False),
    sa.Column("products", sa.JSON, nullable=False),  # product codes
    sa.Column("schedule", sa.JSON, nullable=False),  # {"injection": 300, ...} seconds
    sa.Column("batch_size", sa.Integer, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("feedback_key", sa.Text, nullable=True),  # the wallet's opaque position
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

# When each function of an interface is next due; claimed by a conditional update so that
# several processes running the loops start one run each time.
printing_schedule = sa.Table(
    "printing_schedule",
    metadata,
    institution_column(),
    sa.Column(
        "interface_id",
        Big,
        sa.ForeignKey("printing_interface.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("function", sa.String(16), primary_key=True),
    sa.Column("next_run_at", UtcDateTime, nullable=False),
)

# A ticket as the wallet has it. One row per ticket sent; the "processed" marks of the push
# functions are the *_pushed_at columns.
printing_ticket = sa.Table(
    "printing_ticket",
    metadata,
    sa.Column("ticket_id", Big, sa.ForeignKey("ticket.id", ondelete="CASCADE"), primary_key=True),
    institution_column(),
    sa.Column(
        "interface_id",
        Big,
        sa.ForeignKey("printing_interface.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("kind", sa.String(16), nullable=False),  # TICKET PRIVILEGE
    sa.Column("injected_at", UtcDateTime, nullable=False),
    sa.Column("deletion_pushed_at", UtcDateTime, nullable=True),
    sa.Column("controlled_pushed_at", UtcDateTime, nullable=True),
    sa.Column("mobile_status", sa.String(32), nullable=False),
    sa.Column("wallet_owner", sa.String(320), nullable=True),  # the owner's email
    sa.Column("owner_contact_number", sa.String(32), nullable=True),
    sa.Column("holder", sa.JSON, nullable=True),
    sa.Column("transfer_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("feedback_at", UtcDateTime, nullable=True),
)

printing_ticket_history = sa.Table(
    "printing_ticket_history",
    metadata,
    id_column(),
    institution_column(),
    sa.Column(
        "ticket_id",
        Big,
        sa.ForeignKey("printing_ticket.ticket_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("actor", sa.String(320), nullable=True),
    sa.Column("device", sa.String(128), nullable=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
)

printing_execution = sa.Table(
    "printing_execution",
    metadata,
    id_column(),
    institution_column(),
    sa.Column(
        "interface_id",
        Big,
        sa.ForeignKey("printing_interface.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("interface_code", sa.String(16), nullable=False),
    sa.Column("function", sa.String(16), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),  # schedule cli
    sa.Column("status", sa.String(16), nullable=False),  # RUNNING SUCCEEDED PARTIAL FAILED
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.Column("sent", sa.Integer, nullable=False),
    sa.Column("accepted", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_printing_execution_listing", "institution_id", "id"),
)
