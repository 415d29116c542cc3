"""seat indexes: the two a seat's every change paid for and no statement needs

Revision ID: 0011
Revises: 0010

A seat held or sold changes its state, which ``ix_performance_seat_pick`` (stock, state, rank)
keys on, so each change writes a new entry in every index of ``performance_seat``. Two of them
served nothing the others do not: ``ix_performance_seat_stock_id`` is the pick index's first
column, and ``ix_performance_seat_institution_id`` is read by no statement (a performance's
seats are found through ``(performance_id, seat_id)``, a stock's through the pick index; an
institution deleted with its seats scans the table once). They also misled generic plans: a
stock's free seats read through the stock index, filtering every seat of the stock on its
state, instead of the pick index's entries for that state.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("performance_seat") as batch_op:
        batch_op.drop_index("ix_performance_seat_stock_id")
        batch_op.drop_index("ix_performance_seat_institution_id")


def downgrade() -> None:
    with op.batch_alter_table("performance_seat") as batch_op:
        batch_op.create_index("ix_performance_seat_institution_id", ["institution_id"])
        batch_op.create_index("ix_performance_seat_stock_id", ["stock_id"])
