"""Accounts: gift vouchers, contacts' credit balances and resellers' pending accounts.

One mechanism for the three (see :mod:`billetterie.sales.db`): ``balance`` is what may still be
spent, ``credit_limit`` how far under zero it may go. A debit is one conditional update
(``... WHERE balance + credit_limit >= amount``), so two sales racing for the last euros of a
voucher or the last of a reseller's limit cannot both pass; a credit (refund, top-up) always
passes. Every movement of money writes a ledger entry with the balance after it, in the
caller's transaction.

A pending account belongs to a reseller's point of sale: sales closed there are debited to it
(the reseller is invoiced afterwards); refunds credit it back; its limit comes from the point of
sale's ``pendingAccountCreditLimit`` parameter in the setup file.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.sales import db
from billetterie.sales.errors import InsufficientFunds, UnknownAccount
from billetterie.sales.models import AccountKind
from billetterie.shared import audit, commit_work
from billetterie.shared.db import read, transaction
from billetterie.shared.errors import DomainError, InvalidRequest
from billetterie.shared.money import format_amount


class InvalidPeriod(DomainError):
    code = "error.request.invalid_period"
    http_status = 409


VOUCHER_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@dataclass(frozen=True)
class Account:
    id: int
    kind: AccountKind
    code: str
    currency: str
    balance: int
    credit_limit: int
    expires_at: datetime | None


def _account(row: Any) -> Account:
    return Account(
        row.id,
        AccountKind(row.kind),
        row.code,
        row.currency,
        row.balance,
        row.credit_limit,
        row.expires_at,
    )


async def find_account(
    conn: AsyncConnection, institution_id: int, kind: AccountKind, code: str
) -> Account | None:
    a = db.account.c
    row = (
        await conn.execute(
            sa.select(db.account).where(
                a.institution_id == institution_id, a.kind == kind.value, a.code == code
            )
        )
    ).first()
    return None if row is None else _account(row)


async def spendable(
    conn: AsyncConnection, institution_id: int, kind: AccountKind, code: str, *, now: datetime
) -> Account:
    """The voucher or credit balance ``code`` names when something is left to spend on it now,
    for a page that shows what it would pay before the buyer confirms. Refusals:
    ``error.payment.unknown_account`` (no such code), ``error.payment.insufficient_funds``
    (expired, or nothing left). A read without a lock: the debit itself decides."""
    account = await find_account(conn, institution_id, kind, code) if code else None
    if account is None:
        raise UnknownAccount(f"no {kind.value.lower()} {code}")
    if account.expires_at is not None and account.expires_at <= now:
        raise InsufficientFunds(f"{kind.value.lower()} {account.code} has expired")
    if account.balance + account.credit_limit <= 0:
        raise InsufficientFunds(f"nothing left on {kind.value.lower()} {account.code}")
    return account


async def open_account(
    conn: AsyncConnection,
    *,
    institution_id: int,
    kind: AccountKind,
    code: str,
    currency: str,
    now: datetime,
    credit_limit: int = 0,
    point_of_sale_id: int | None = None,
    expires_at: datetime | None = None,
) -> Account:
    """The account, created empty on first use; a pending account's limit follows the setup."""
    existing = await find_account(conn, institution_id, kind, code)
    if existing is not None:
        if existing.credit_limit != credit_limit and kind == AccountKind.PENDING_ACCOUNT:
            await conn.execute(
                sa.update(db.account)
                .where(db.account.c.id == existing.id)
                .values(credit_limit=credit_limit)
            )
            existing = await find_account(conn, institution_id, kind, code)
            assert existing is not None
        return existing
    await conn.execute(
        sa.insert(db.account).values(
            institution_id=institution_id,
            kind=kind.value,
            code=code,
            currency=currency,
            balance=0,
            credit_limit=credit_limit,
            point_of_sale_id=point_of_sale_id,
            expires_at=expires_at,
            created_at=now,
        )
    )
    created = await find_account(conn, institution_id, kind, code)
    assert created is not None
    return created


async def debit(
    conn: AsyncConnection,
    account: Account,
    *,
    institution_id: int,
    amount: int,
    order_id: int | None,
    description: str,
    now: datetime,
) -> int:
    """Take ``amount`` (> 0) from the account, or raise InsufficientFunds; the new balance."""
    _check_debit(account, amount, now)
    a = db.account.c
    balance = (
        await conn.execute(
            sa.update(db.account)
            .where(a.id == account.id, a.balance + a.credit_limit >= amount)
            .values(balance=a.balance - amount)
            .returning(a.balance)
        )
    ).scalar_one_or_none()
    if balance is None:
        raise InsufficientFunds(_refusal(account))
    await _entry(
        conn, account, institution_id, "DEBIT", amount, balance, order_id, description, now
    )
    return int(balance)


async def debit_at_commit(
    conn: AsyncConnection,
    account: Account,
    *,
    institution_id: int,
    amount: int,
    order_id: int | None,
    description: str,
    now: datetime,
) -> None:
    """:func:`debit`, done by the commit when the transaction collects its work on shared
    rows (:mod:`billetterie.shared.commit_work`): a reseller's pending account is shared by
    every sale of its point of sale. InsufficientFunds is then raised by the commit."""
    collector = commit_work.current(conn)
    if collector is None:
        await debit(
            conn,
            account,
            institution_id=institution_id,
            amount=amount,
            order_id=order_id,
            description=description,
            now=now,
        )
        return
    _check_debit(account, amount, now)
    collector.debit(
        institution_id,
        account_id=account.id,
        amount=amount,
        order_id=order_id,
        description=description,
        refusal=_refusal(account),
        at=now,
    )


def _check_debit(account: Account, amount: int, now: datetime) -> None:
    if amount <= 0:
        raise InvalidRequest("an amount to debit must be positive")
    if account.expires_at is not None and account.expires_at <= now:
        raise InsufficientFunds(f"{account.kind.value.lower()} {account.code} has expired")


def _refusal(account: Account) -> str:
    return (
        "over the pending account's credit limit"
        if account.kind == AccountKind.PENDING_ACCOUNT
        else f"not enough left on {account.kind.value.lower()} {account.code}"
    )


commit_work.on_refusal("insufficient_funds", InsufficientFunds)


async def credit(
    conn: AsyncConnection,
    account: Account,
    *,
    institution_id: int,
    amount: int,
    order_id: int | None,
    description: str,
    now: datetime,
) -> int:
    """Give ``amount`` (> 0) back to the account; the new balance."""
    if amount <= 0:
        raise InvalidRequest("an amount to credit must be positive")
    a = db.account.c
    balance = (
        await conn.execute(
            sa.update(db.account)
            .where(a.id == account.id)
            .values(balance=a.balance + amount)
            .returning(a.balance)
        )
    ).scalar_one()
    await _entry(
        conn, account, institution_id, "CREDIT", amount, balance, order_id, description, now
    )
    return int(balance)


async def release_held(
    conn: AsyncConnection,
    *,
    institution_id: int,
    order_id: int,
    held: Sequence[Mapping[str, Any]],
    reason: str,
    now: datetime,
) -> None:
    """Credit back the parts of a mixed card payment that were held (debited) while the card
    was being paid: ``held`` is what ``pending_payments["held"]`` records (account id and
    amount each). The caller clears or gives up that record in the same transaction, so a
    hold is given back once."""
    for part in held:
        row = (
            await conn.execute(
                sa.select(db.account).where(
                    db.account.c.institution_id == institution_id,
                    db.account.c.id == int(part["accountId"]),
                )
            )
        ).one()
        await credit(
            conn,
            _account(row),
            institution_id=institution_id,
            amount=int(part["amount"]),
            order_id=order_id,
            description=f"order {order_id}: {reason}",
            now=now,
        )


async def _entry(
    conn: AsyncConnection,
    account: Account,
    institution_id: int,
    kind: str,
    amount: int,
    balance: int,
    order_id: int | None,
    description: str,
    now: datetime,
) -> None:
    await conn.execute(
        sa.insert(db.account_entry).values(
            institution_id=institution_id,
            account_id=account.id,
            order_id=order_id,
            kind=kind,
            amount=amount,
            balance_after=balance,
            description=description[:255],
            at=now,
        )
    )


async def issue_voucher(
    engine: AsyncEngine,
    *,
    institution_id: int,
    currency: str,
    amount: int,
    now: datetime,
    expires_at: datetime | None = None,
    code: str | None = None,
    actor: str,
) -> Account:
    """A new gift voucher worth ``amount``; its code is random unless given."""
    if amount <= 0:
        raise InvalidRequest("a voucher's amount must be positive")
    code = code or "".join(secrets.choice(VOUCHER_ALPHABET) for _ in range(12))
    async with transaction(engine) as conn:
        if await find_account(conn, institution_id, AccountKind.VOUCHER, code) is not None:
            raise InvalidRequest(f"voucher {code} exists already")
        account = await open_account(
            conn,
            institution_id=institution_id,
            kind=AccountKind.VOUCHER,
            code=code,
            currency=currency,
            now=now,
            expires_at=expires_at,
        )
        await credit(
            conn,
            account,
            institution_id=institution_id,
            amount=amount,
            order_id=None,
            description="voucher issued",
            now=now,
        )
        await audit.record(
            conn,
            institution_id=institution_id,
            action="sales.voucher.issued",
            actor=actor,
            at=now,
            code=code,
            amount=amount,
        )
        found = await find_account(conn, institution_id, AccountKind.VOUCHER, code)
    assert found is not None
    return found


async def add_credit(
    engine: AsyncEngine,
    *,
    institution_id: int,
    contact_number: str,
    currency: str,
    amount: int,
    description: str,
    now: datetime,
    actor: str,
) -> Account:
    """Put ``amount`` on a contact's credit balance (a goodwill gesture, a refund to credit)."""
    async with transaction(engine) as conn:
        account = await open_account(
            conn,
            institution_id=institution_id,
            kind=AccountKind.CREDIT,
            code=contact_number,
            currency=currency,
            now=now,
        )
        await credit(
            conn,
            account,
            institution_id=institution_id,
            amount=amount,
            order_id=None,
            description=description,
            now=now,
        )
        await audit.record(
            conn,
            institution_id=institution_id,
            action="sales.credit.added",
            actor=actor,
            at=now,
            contact_number=contact_number,
            amount=amount,
        )
        found = await find_account(conn, institution_id, AccountKind.CREDIT, contact_number)
    assert found is not None
    return found


@dataclass(frozen=True)
class StatementLine:
    at: datetime
    order_id: int | None
    kind: str
    amount: int
    balance_after: int
    description: str


async def statement(
    engine: AsyncEngine,
    *,
    institution_id: int,
    kind: AccountKind,
    code: str,
    start: datetime,
    end: datetime,
) -> tuple[Account, int, list[StatementLine]]:
    """An account's ledger over ``[start, end)``: the account, the balance at ``start`` and
    the entries in order."""
    if end <= start:
        raise InvalidPeriod("a statement's end must come after its start")
    e = db.account_entry.c
    async with read(engine) as conn:
        account = await find_account(conn, institution_id, kind, code)
        if account is None:
            raise UnknownAccount(f"no {kind.value.lower()} account {code}")
        before = (
            await conn.execute(
                sa.select(e.balance_after)
                .where(e.account_id == account.id, e.at < start)
                .order_by(e.at.desc(), e.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        rows = (
            await conn.execute(
                sa.select(db.account_entry)
                .where(e.account_id == account.id, e.at >= start, e.at < end)
                .order_by(e.at, e.id)
            )
        ).all()
    lines = [
        StatementLine(r.at, r.order_id, r.kind, r.amount, r.balance_after, r.description)
        for r in rows
    ]
    return account, int(before or 0), lines


async def ledger(conn: AsyncConnection, account_id: int, limit: int = 200) -> list[StatementLine]:
    """The account's latest ledger entries, oldest first."""
    e = db.account_entry.c
    rows = (
        await conn.execute(
            sa.select(db.account_entry)
            .where(e.account_id == account_id)
            .order_by(e.at.desc(), e.id.desc())
            .limit(limit)
        )
    ).all()
    return [
        StatementLine(r.at, r.order_id, r.kind, r.amount, r.balance_after, r.description)
        for r in reversed(rows)
    ]


def statement_csv(account: Account, opening: int, lines: Sequence[StatementLine]) -> str:
    """The statement as CSV (amounts with a decimal point, as on an invoice)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date", "order", "kind", "debit", "credit", "balance", "description"])
    writer.writerow(["", "", "OPENING", "", "", format_amount(opening), ""])
    for line in lines:
        writer.writerow(
            [
                line.at.isoformat(),
                line.order_id or "",
                line.kind,
                format_amount(line.amount) if line.kind == "DEBIT" else "",
                format_amount(line.amount) if line.kind == "CREDIT" else "",
                format_amount(line.balance_after),
                line.description,
            ]
        )
    closing = lines[-1].balance_after if lines else opening
    writer.writerow(["", "", "CLOSING", "", "", format_amount(closing), account.currency])
    return out.getvalue()
