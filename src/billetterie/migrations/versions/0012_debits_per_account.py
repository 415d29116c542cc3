"""debits per account: a transaction's debits of one account applied in two statements

Revision ID: 0012
Revises: 0011

A group of closes on a reseller's pending account debits it once per order; the commit-time
work (migration 0010) ran an ``UPDATE account`` and an ``INSERT INTO account_entry`` for each
debit. It now sums the transaction's debits of each account: one conditional ``UPDATE`` with
the total (debits in sequence all fit exactly when their total does), then one ``INSERT`` of
all their ledger entries, each with the balance right after it (in the order they were
collected). When the total does not fit, the debits are applied one by one as before, so the
error raised is the refusal of the first debit that does not fit. Stocks and the change log
are applied as in 0010.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

DEBITS = r"""BEGIN
    -- the fixed order of every transaction: accounts by id, stocks by id, the sequence last
    FOR owed IN
        SELECT (value ->> 'account')::bigint AS id, sum((value ->> 'amount')::bigint) AS total
          FROM jsonb_array_elements(COALESCE(NEW.payload -> 'debits', '[]'::jsonb))
         GROUP BY 1
         ORDER BY 1
    LOOP
        UPDATE account SET balance = balance - owed.total
         WHERE id = owed.id AND balance + credit_limit >= owed.total
        RETURNING balance INTO balance_now;
        IF NOT FOUND THEN
            -- the first debit that does not fit raises its own refusal
            FOR item IN
                SELECT value
                  FROM jsonb_array_elements(NEW.payload -> 'debits') WITH ORDINALITY AS d(value, n)
                 WHERE (value ->> 'account')::bigint = owed.id
                 ORDER BY n
            LOOP
                UPDATE account SET balance = balance - (item ->> 'amount')::bigint
                 WHERE id = owed.id AND balance + credit_limit >= (item ->> 'amount')::bigint;
                IF NOT FOUND THEN
                    RAISE EXCEPTION '%', item ->> 'refusal'
                        USING ERRCODE = 'P0001', HINT = 'billetterie:insufficient_funds';
                END IF;
            END LOOP;
            RAISE EXCEPTION 'the debits of account % do not fit', owed.id
                USING ERRCODE = 'P0001', HINT = 'billetterie:insufficient_funds';
        END IF;
        INSERT INTO account_entry
            (institution_id, account_id, order_id, kind, amount, balance_after, description, at)
        SELECT NEW.institution_id, owed.id, (value ->> 'order')::bigint, 'DEBIT',
               (value ->> 'amount')::bigint,
               balance_now + owed.total
                 - sum((value ->> 'amount')::bigint) OVER (ORDER BY n),
               value ->> 'description', NEW.at
          FROM jsonb_array_elements(NEW.payload -> 'debits') WITH ORDINALITY AS d(value, n)
         WHERE (value ->> 'account')::bigint = owed.id
         ORDER BY n;
    END LOOP;
"""


def _migration_0010() -> Any:
    """Migration 0010's module: its function's parts, the stocks and the log kept as they are."""
    path = Path(__file__).with_name("0010_commit_work.py")
    spec = importlib.util.spec_from_file_location("billetterie_migration_0010", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _apply() -> str:
    previous = _migration_0010()
    return str(previous.DECLARE + "    owed record;\n" + DEBITS + previous.COUNTS_AND_LOG)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_apply())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(str(_migration_0010().APPLY))
