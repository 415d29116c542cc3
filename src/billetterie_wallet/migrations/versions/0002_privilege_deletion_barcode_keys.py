"""privileges can be deleted; the box office's barcode public keys

Revision ID: w0002
Revises: w0001
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "w0002"
down_revision = "w0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("privilege", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deletion_reason", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "barcode_key",
        sa.Column("id", BigId, nullable=False),
        sa.Column("organizer_id", BigId, nullable=False),
        sa.Column("key_id", sa.BigInteger(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organizer_id"],
            ["organizer.id"],
            name=op.f("fk_barcode_key_organizer_id_organizer"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_barcode_key")),
        sa.UniqueConstraint(
            "organizer_id", "key_id", name=op.f("uq_barcode_key_organizer_id_key_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("barcode_key")
    with op.batch_alter_table("privilege", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("deletion_reason")
