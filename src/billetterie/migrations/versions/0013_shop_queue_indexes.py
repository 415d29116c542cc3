"""shop queue indexes: the two its table declares and 0009 did not create

Revision ID: 0013
Revises: 0012

``shop_queue_ticket`` declared an index on each of its foreign keys, and 0009 created none of
them. A product or an institution deleted cascades to the queue's tickets, which then scanned
the table: ``ix_shop_queue_ticket_product_id`` and ``ix_shop_queue_ticket_institution_id`` are
created. The point of sale needs none of its own: ``ix_shop_queue_ticket_draw`` starts with it,
and the table now says so (``ref("point_of_sale", index=False)``).
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shop_queue_ticket") as batch_op:
        batch_op.create_index("ix_shop_queue_ticket_institution_id", ["institution_id"])
        batch_op.create_index("ix_shop_queue_ticket_product_id", ["product_id"])


def downgrade() -> None:
    with op.batch_alter_table("shop_queue_ticket") as batch_op:
        batch_op.drop_index("ix_shop_queue_ticket_product_id")
        batch_op.drop_index("ix_shop_queue_ticket_institution_id")
