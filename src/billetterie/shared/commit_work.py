"""Work on shared rows done at commit: the short end of a sale's critical section.

Every sale of an institution writes a few rows they all share: a stock's counters (held, sold),
the institution's inventory change sequence, and often one account (a reseller's pending
account). A row lock is held until commit, so when a transaction takes such a row and then
goes on with other statements, every other sale waits for those statements too — and for the
event loop that runs them. On PostgreSQL, a transaction therefore *collects* that work here
and writes one ``commit_work`` row; a deferred constraint trigger (migration 0010) applies it
while the transaction commits, so the shared rows are locked only for the commit itself. On
SQLite (one writer at a time, nothing to gain) and outside a collecting transaction, callers
write the rows at once.

The payload of one ``commit_work`` row (one per transaction and institution):

- ``debits``: ``{"account", "amount", "order", "description", "refusal"}`` — a conditional
  debit (``balance + credit_limit >= amount``) and its ledger entry; ``refusal`` is the message
  of the error raised when it does not fit;
- ``counts``: ``[stock id, held delta, sold delta, must fit]`` — counter changes;
- ``log``: stock ids whose counters go to the change log under one new sequence value, with
  ``seats[stock id] = {"taken": [...], "freed": [...]}`` for numbered stocks;

applied in that order (accounts by id, stocks by id, the sequence last: the same order as the
immediate path). When a conditional part does not fit, the trigger raises and the whole
transaction rolls back; :func:`refusal` turns that error back into the context's exception,
registered with :func:`on_refusal`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.shared.db import UtcDateTime, id_column, metadata
from billetterie.shared.statements import Statement

commit_work = sa.Table(
    "commit_work",
    metadata,
    id_column(),
    sa.Column("institution_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
)

# the commit's work, and the transaction's audit entries with it (one round trip for both)
_INSERT = Statement(
    lambda _: sa.text(
        "WITH entries AS ("
        " INSERT INTO audit_entry (institution_id, action, actor, at, data)"
        " SELECT e.institution_id, e.action, e.actor, e.at, e.data"
        " FROM jsonb_to_recordset(:audit) AS e(institution_id bigint, action varchar,"
        " actor varchar, at timestamptz, data json))"
        " INSERT INTO commit_work (institution_id, at, payload)"
        " VALUES (:institution_id, :at, :payload)"
    ).bindparams(
        sa.bindparam("audit", type_=postgresql.JSONB()),
        sa.bindparam("institution_id", type_=sa.BigInteger()),
        sa.bindparam("at", type_=UtcDateTime()),
        sa.bindparam("payload", type_=postgresql.JSONB()),
    )
)

HINT_PREFIX = "billetterie:"


@dataclass
class _Institution:
    at: datetime
    debits: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[int, list[Any]] = field(default_factory=dict)
    log: set[int] = field(default_factory=set)
    unknown: set[int] = field(default_factory=set)  # logged stocks whose seats were not told
    taken: dict[int, set[int]] = field(default_factory=dict)
    freed: dict[int, set[int]] = field(default_factory=dict)


class Collector:
    """What one transaction leaves to its commit, per institution."""

    def __init__(self) -> None:
        self._of: dict[int, _Institution] = {}

    def _institution(self, institution_id: int, at: datetime) -> _Institution:
        found = self._of.get(institution_id)
        if found is None:
            found = self._of[institution_id] = _Institution(at)
        return found

    def debit(
        self,
        institution_id: int,
        *,
        account_id: int,
        amount: int,
        order_id: int | None,
        description: str,
        refusal: str,
        at: datetime,
    ) -> None:
        self._institution(institution_id, at).debits.append(
            {
                "account": account_id,
                "amount": amount,
                "order": order_id,
                "description": description[:255],
                "refusal": refusal,
            }
        )

    def count(
        self, institution_id: int, stock_id: int, held: int, sold: int, *, check: bool, at: datetime
    ) -> None:
        entry = self._institution(institution_id, at).counts.setdefault(
            stock_id, [stock_id, 0, 0, False]
        )
        entry[1] += held
        entry[2] += sold
        entry[3] = entry[3] or check

    def log(
        self,
        institution_id: int,
        stock_ids: Iterable[int],
        at: datetime,
        *,
        taken: Mapping[int, Iterable[int]] | None = None,
        freed: Mapping[int, Iterable[int]] | None = None,
    ) -> None:
        """Log these stocks' counters at commit; ``taken``/``freed`` seats per stock (both
        None: not told, and the seat indexes read those stocks again)."""
        entry = self._institution(institution_id, at)
        stock_ids = set(stock_ids)
        entry.log.update(stock_ids)
        if taken is None and freed is None:
            entry.unknown.update(stock_ids)
        for stock_id, seats in (taken or {}).items():
            entry.taken.setdefault(stock_id, set()).update(seats)
            entry.freed.get(stock_id, set()).difference_update(seats)
        for stock_id, seats in (freed or {}).items():
            entry.freed.setdefault(stock_id, set()).update(seats)
            entry.taken.get(stock_id, set()).difference_update(seats)

    async def flush(self, conn: AsyncConnection, audit: Sequence[Mapping[str, Any]] = ()) -> bool:
        """One ``commit_work`` row per institution; the trigger applies it at commit. The
        transaction's ``audit`` entries go in the same statement, when there is one. Whether
        there was (else the caller writes the entries)."""
        rows = []
        for institution_id, entry in sorted(self._of.items()):
            counts = [c for c in entry.counts.values() if c[1] or c[2]]
            if not (entry.debits or counts or entry.log):
                continue
            rows.append(
                {
                    "institution_id": institution_id,
                    "at": entry.at,
                    "payload": {
                        "debits": entry.debits,
                        "counts": counts,
                        "log": sorted(entry.log),
                        "seats": seats_payload(entry.log - entry.unknown, entry.taken, entry.freed),
                    },
                }
            )
        self._of.clear()
        if not rows:
            return False
        for i, row in enumerate(rows):
            row["audit"] = list(audit) if i == 0 else []
        await _INSERT.execute_many(conn, rows)
        return True


def seats_payload(
    stock_ids: Iterable[int],
    taken: Mapping[int, Iterable[int]],
    freed: Mapping[int, Iterable[int]],
) -> dict[str, dict[str, list[int]]]:
    """``seats`` of the change log for these stocks, keyed by stock id (as text, the JSON
    way); a stock left out has seats not told (null in the log)."""
    out: dict[str, dict[str, list[int]]] = {}
    for stock_id in stock_ids:
        took = sorted(set(taken.get(stock_id, ())))
        gave = sorted(set(freed.get(stock_id, ())) - set(took))
        out[str(stock_id)] = {"taken": took, "freed": gave}
    return out


_current: contextvars.ContextVar[Collector | None] = contextvars.ContextVar(
    "commit_work", default=None
)


def current(conn: AsyncConnection) -> Collector | None:
    """The collector of the transaction running on ``conn``, when it collects (PostgreSQL)."""
    collector = _current.get()
    if collector is None or conn.dialect.name != "postgresql":
        return None
    return collector


def start() -> contextvars.Token[Collector | None]:
    return _current.set(Collector())


def stop(token: contextvars.Token[Collector | None]) -> None:
    _current.reset(token)


_refusals: dict[str, Callable[[str], BaseException]] = {}


def on_refusal(code: str, make: Callable[[str], BaseException]) -> None:
    """Register the exception a refused part of the commit work becomes (``code`` is the
    hint's suffix: ``insufficient_funds``, ``not_available``...)."""
    _refusals[code] = make


def refusal(exc: DBAPIError) -> tuple[str, BaseException | None] | None:
    """``(code, exception)`` when ``exc`` is the trigger refusing a conditional part; the
    exception is None when no context registered the code."""
    orig = exc.orig
    hint = getattr(orig, "hint", None)
    if hint is None:
        cause = getattr(orig, "__cause__", None)
        hint = getattr(cause, "hint", None)
    if not isinstance(hint, str) or not hint.startswith(HINT_PREFIX):
        return None
    code = hint[len(HINT_PREFIX) :]
    message = getattr(getattr(orig, "__cause__", None), "message", None) or str(orig)
    make = _refusals.get(code)
    return code, (make(str(message)) if make is not None else None)
