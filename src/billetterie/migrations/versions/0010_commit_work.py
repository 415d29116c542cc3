"""commit work: the shared rows of a sale written at commit, and seats in the change log

Revision ID: 0010
Revises: 0009

``inventory_change.seats`` records, per changed numbered stock, the seats a change took and
freed, so a process's seat index follows other processes' sales from the log without reading
the stock's free seats again.

On PostgreSQL, ``commit_work`` holds what a transaction must do to the rows every sale of an
institution shares (the stock counters, the change sequence, a reseller's pending account):
one row per transaction and institution, applied by a deferred constraint trigger at commit,
so those rows are locked only while the transaction commits (``billetterie.shared.commit_work``
describes the payload). SQLite writes them in the transaction itself (one writer at a time).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

Big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The function in three parts, so that a later migration can replace one (0012: the debits)
DECLARE = r"""
CREATE OR REPLACE FUNCTION billetterie_apply_commit_work() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    item jsonb;
    next_value bigint;
    balance_now bigint;
"""
DEBITS = r"""BEGIN
    -- the fixed order of every transaction: accounts by id, stocks by id, the sequence last
    FOR item IN
        SELECT value FROM jsonb_array_elements(COALESCE(NEW.payload -> 'debits', '[]'::jsonb))
        ORDER BY (value ->> 'account')::bigint
    LOOP
        UPDATE account SET balance = balance - (item ->> 'amount')::bigint
         WHERE id = (item ->> 'account')::bigint
           AND balance + credit_limit >= (item ->> 'amount')::bigint
        RETURNING balance INTO balance_now;
        IF NOT FOUND THEN
            RAISE EXCEPTION '%', item ->> 'refusal'
                USING ERRCODE = 'P0001', HINT = 'billetterie:insufficient_funds';
        END IF;
        INSERT INTO account_entry
            (institution_id, account_id, order_id, kind, amount, balance_after, description, at)
        VALUES (NEW.institution_id, (item ->> 'account')::bigint,
                (item ->> 'order')::bigint, 'DEBIT', (item ->> 'amount')::bigint,
                balance_now, item ->> 'description', NEW.at);
    END LOOP;
"""
COUNTS_AND_LOG = r"""    FOR item IN
        SELECT value FROM jsonb_array_elements(COALESCE(NEW.payload -> 'counts', '[]'::jsonb))
        ORDER BY (value ->> 0)::bigint
    LOOP
        UPDATE stock SET held = held + (item ->> 1)::int, sold = sold + (item ->> 2)::int
         WHERE id = (item ->> 0)::bigint
           AND (NOT (item ->> 3)::boolean OR capacity IS NULL
                OR capacity - held - sold - blocked >= (item ->> 1)::int + (item ->> 2)::int);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'not enough places left'
                USING ERRCODE = 'P0001', HINT = 'billetterie:not_available';
        END IF;
    END LOOP;
    IF jsonb_array_length(COALESCE(NEW.payload -> 'log', '[]'::jsonb)) > 0 THEN
        UPDATE inventory_sequence SET value = value + 1
         WHERE institution_id = NEW.institution_id
        RETURNING value INTO next_value;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the institution''s inventory has not been provisioned'
                USING ERRCODE = 'P0001', HINT = 'billetterie:unknown_inventory';
        END IF;
        INSERT INTO inventory_change
            (institution_id, sequence, stock_id, product_id, performance_id,
             held, sold, blocked, capacity, at, seats)
        SELECT NEW.institution_id, next_value, s.id, s.product_id, s.performance_id,
               s.held, s.sold, s.blocked, s.capacity, NEW.at,
               (NEW.payload -> 'seats' -> (s.id::text))::json
          FROM stock s
         WHERE s.id IN (SELECT value::bigint
                          FROM jsonb_array_elements_text(NEW.payload -> 'log'));
        PERFORM pg_notify('billetterie_inventory', NEW.institution_id || ':' || next_value);
    END IF;
    DELETE FROM commit_work WHERE id = NEW.id;
    RETURN NULL;
END;
$$;
"""
APPLY = DECLARE + DEBITS + COUNTS_AND_LOG


def upgrade() -> None:
    op.add_column("inventory_change", sa.Column("seats", sa.JSON(), nullable=True))
    op.create_table(
        "commit_work",
        sa.Column("id", Big, nullable=False),
        sa.Column("institution_id", Big, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
        sa.PrimaryKeyConstraint("id"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPLY)
        op.execute(
            "CREATE CONSTRAINT TRIGGER commit_work_at_commit AFTER INSERT ON commit_work "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            "EXECUTE FUNCTION billetterie_apply_commit_work()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS commit_work_at_commit ON commit_work")
        op.execute("DROP FUNCTION IF EXISTS billetterie_apply_commit_work()")
    op.drop_table("commit_work")
    op.drop_column("inventory_change", "seats")
