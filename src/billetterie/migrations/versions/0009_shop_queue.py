"""shop queue

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 12:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "shop_queue_ticket",
        sa.Column("id", Big, nullable=False),
        sa.Column("institution_id", Big, nullable=False),
        sa.Column("point_of_sale_id", Big, nullable=False),
        sa.Column("product_id", Big, nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("draw", sa.BigInteger(), nullable=True),
        sa.Column("admit_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institution.id"],
            name=op.f("fk_shop_queue_ticket_institution_id_institution"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["point_of_sale_id"],
            ["point_of_sale.id"],
            name=op.f("fk_shop_queue_ticket_point_of_sale_id_point_of_sale"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["product.id"],
            name=op.f("fk_shop_queue_ticket_product_id_product"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_queue_ticket")),
        sa.UniqueConstraint("token", name=op.f("uq_shop_queue_ticket_token")),
    )
    op.create_index(
        "ix_shop_queue_ticket_draw",
        "shop_queue_ticket",
        ["point_of_sale_id", "product_id", "draw"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_shop_queue_ticket_draw", table_name="shop_queue_ticket")
    op.drop_table("shop_queue_ticket")
