"""Closing an order: payments, the sale of its places, tickets with signed barcodes.

Contract of :func:`close_order`:

- one inventory transaction (:func:`inventory.services.in_transaction`) does everything: the
  order is claimed (``UPDATE ... WHERE state = 'RUNNING'``, so it closes once however many
  callers race), its movements sold, one ticket per movement issued with its barcode, the audit
  and event rows written, its payments recorded and accounts debited, and its holds confirmed
  — the shared rows (an account, the inventory's change sequence) last, so their locks are
  held only for the end of the transaction. A crash at any point leaves either a running
  cart or a closed order with all of its tickets, never something in between;
- the payments must be allowed on the point of sale for payment and add up to the order's
  total exactly (``error.payment.wrong_total``); a voucher or credit balance must hold the
  amount and a pending account stay within its credit limit
  (``error.payment.insufficient_funds``); card payments are not taken here but through the
  provider's page (:mod:`billetterie.sales.card`), which closes the order when it confirms;
- an expired cart cannot be closed (``error.order.expired``): its places may be sold already;
- on PostgreSQL, closes that arrive together share that transaction (:data:`close_groups`,
  :func:`close_orders_in`), each answered as if it ran alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.inventory.services import confirm_holds_in, in_transaction
from billetterie.sales import accounts, db, events
from billetterie.sales.barcode_keys import KeyVault, signing_key
from billetterie.sales.barcodes import BarcodePayload, issue
from billetterie.sales.carts import Answer, check_setup, running
from billetterie.sales.errors import (
    CardPaymentRequired,
    ContactRequired,
    EmptyOrder,
    OrderClosed,
    OrderExpired,
    PaymentMethodNotAllowed,
    UnknownAccount,
    UnknownOrder,
    WrongTotal,
)
from billetterie.sales.models import (
    ACCOUNT_OF_PAYMENT,
    AccountKind,
    MovementState,
    OrderState,
    PaymentRequest,
    Seller,
    TicketState,
)
from billetterie.sales.queries import OrderContents
from billetterie.shared import audit
from billetterie.shared.db import engine_cache
from billetterie.shared.errors import DomainError
from billetterie.shared.groups import Groups, Refused
from billetterie.shared.statements import BulkInsert, Statement, any_of

EVENT_VALIDITY = timedelta(hours=6)  # a barcode stays valid this long after a performance ends
DEFAULT_VALIDITY = timedelta(days=366)


def validity_of(labels: dict[str, Any], now: datetime) -> datetime:
    """Until when a ticket's barcode is valid: the performance's or timeslot's end (with a
    margin), the pass's validity, or a year."""
    if "end" in labels:
        return datetime.fromisoformat(labels["end"]) + EVENT_VALIDITY
    if "start" in labels and labels.get("duration") is not None:
        start = datetime.fromisoformat(labels["start"])
        return start + timedelta(seconds=int(labels["duration"])) + EVENT_VALIDITY
    if labels.get("validityDays"):
        return now + timedelta(days=int(labels["validityDays"]))
    return now + DEFAULT_VALIDITY


def check_payments(seller: Seller, payments: Sequence[PaymentRequest], total: int) -> None:
    """Methods allowed here for payment, amounts positive and adding up to ``total``."""
    for p in payments:
        method = seller.method(p.payment_method_id)
        if method is None or not method.for_payment:
            raise PaymentMethodNotAllowed(
                f"payment method {p.payment_method_id} is not accepted at this point of sale"
            )
        if p.amount <= 0:
            raise WrongTotal("every payment must be a positive amount")
    paid = sum(p.amount for p in payments)
    if paid != total:
        raise WrongTotal(f"the payments add up to {paid}, the order costs {total}")


async def _account_for(
    conn: AsyncConnection,
    seller: Seller,
    kind: AccountKind,
    order: Any,
    reference: str | None,
    contact_number: str | None,
    opened: dict[Any, accounts.Account] | None = None,
) -> accounts.Account:
    """The account a payment of ``kind`` debits. ``opened``: the pending accounts this
    transaction opened or changed already, by key (not kept for the process: the transaction
    may still roll back)."""
    if kind == AccountKind.PENDING_ACCOUNT:
        # the point of sale's account: its id and limit per setup version (the balance is
        # never read from it: debits are conditional updates)
        key = (seller.institution_id, seller.point_of_sale_code, seller.setup_version)
        cache = engine_cache(conn, "sales.pending_accounts", limit=1024)
        known: accounts.Account | None = cache.get(key) if seller.setup_version else None
        if known is None and opened is not None:
            known = opened.get(key)
        if known is not None:
            return known
        found = await accounts.find_account(
            conn, seller.institution_id, kind, seller.point_of_sale_code
        )
        if found is not None and found.credit_limit == seller.pending_credit_limit:
            cache[key] = found  # committed already: safe to keep
            return found
        account = await accounts.open_account(  # created or changed here: not kept
            conn,
            institution_id=seller.institution_id,
            kind=kind,
            code=seller.point_of_sale_code,
            currency=seller.currency,
            now=order.updated_at,
            credit_limit=seller.pending_credit_limit,
            point_of_sale_id=seller.point_of_sale_id,
        )
        if opened is not None:
            opened[key] = account
        return account
    code = reference if kind == AccountKind.VOUCHER else contact_number
    if not code:
        what = "a voucher code" if kind == AccountKind.VOUCHER else "the order's contact"
        raise UnknownAccount(f"paying by {kind.value.lower()} needs {what}")
    found = await accounts.find_account(conn, seller.institution_id, kind, code)
    if found is None:
        raise UnknownAccount(f"no {kind.value.lower()} {code}")
    return found


async def take_payments_of(
    conn: AsyncConnection,
    sales: Sequence[tuple[Seller, Any, Sequence[PaymentRequest], str | None]],
    now: datetime,
) -> dict[int, list[Any]]:
    """Record the payments of each ``(seller, order, payments, contact number)`` and debit
    their accounts, inside the caller's transaction, the payments in one statement; a credit
    balance is the one of the contact number. A payment with ``account_id`` was debited when
    it was held (a mixed card payment) and is only recorded. The payment rows per order id."""
    rows = []
    opened: dict[Any, accounts.Account] = {}
    for seller, order, payments, contact_number in sales:
        for p in payments:
            method = seller.method(p.payment_method_id)
            assert method is not None
            account_id = p.account_id  # held during a card payment: debited already
            kind = ACCOUNT_OF_PAYMENT.get(method.payment_type)
            if kind is not None and account_id is None:
                account = await _account_for(
                    conn, seller, kind, order, p.reference, contact_number, opened
                )
                await accounts.debit_at_commit(
                    conn,
                    account,
                    institution_id=seller.institution_id,
                    amount=p.amount,
                    order_id=order.id,
                    description=f"order {order.id}",
                    now=now,
                )
                account_id = account.id
            rows.append(
                {
                    "institution_id": seller.institution_id,
                    "order_id": order.id,
                    "payment_method_id": method.id,
                    "method_code": method.code,
                    "payment_type": method.payment_type,
                    "amount": p.amount,
                    "account_id": account_id,
                    "reference": p.reference,
                    "created_at": now,
                }
            )
    paid: dict[int, list[Any]] = {order.id: [] for _, order, _, _ in sales}
    for payment in await _NEW_PAYMENTS.rows(conn, rows):
        paid[payment.order_id].append(payment)
    return paid


async def issue_tickets_in(
    conn: AsyncConnection,
    seller: Seller,
    movements: Sequence[Any],
    vault: KeyVault,
    now: datetime,
    *,
    with_barcodes: bool = True,
    codes: dict[int, str] | None = None,
) -> list[int]:
    """One NOT_PRINTED ticket per movement, signed barcodes included unless asked not to: one
    insert for them all, the organization's key looked up once. A barcode signs its ticket's
    id: on PostgreSQL the ids are drawn from the table's sequence first and each ticket is
    written with its barcode; elsewhere the tickets are inserted, then their barcodes set."""
    rows = [
        {
            "institution_id": seller.institution_id,
            "order_id": m.order_id,
            "movement_id": m.id,
            "product_id": m.product_id,
            "performance_id": m.performance_id,
            "state": TicketState.NOT_PRINTED.value,
            "issued_at": now,
        }
        for m in movements
    ]
    issued: dict[int, str] = {}
    if with_barcodes and conn.dialect.name == "postgresql":
        ticket_ids = sorted(int(r.id) for r in await _NEXT_TICKET_IDS.rows(conn, count=len(rows)))
        pairs = list(zip(ticket_ids, movements, strict=True))
        issued = await _sign(conn, seller.institution_id, seller.organization_id, pairs, vault, now)
        for row, ticket_id in zip(rows, ticket_ids, strict=True):
            row["id"], row["barcode"] = ticket_id, issued[ticket_id]
        await _NEW_SIGNED_TICKETS.rows(conn, rows)
    else:
        ticket_ids = [int(r.id) for r in await _NEW_TICKETS.rows(conn, rows)]
        if with_barcodes:
            issued = await set_barcodes_in(
                conn,
                seller.institution_id,
                seller.organization_id,
                list(zip(ticket_ids, movements, strict=True)),
                vault,
                now,
            )
    if codes is not None:
        codes.update(issued)
    return ticket_ids


_TICKET_COLUMNS = [
    "institution_id",
    "order_id",
    "movement_id",
    "product_id",
    "performance_id",
    "state",
    "issued_at",
]
_NEW_TICKETS = BulkInsert(db.ticket, _TICKET_COLUMNS)
_NEW_SIGNED_TICKETS = BulkInsert(db.ticket, [*_TICKET_COLUMNS, "id", "barcode"])
_NEXT_TICKET_IDS = Statement(  # PostgreSQL: ``count`` ids of the ticket table's sequence
    lambda _: sa.select(
        sa.func.nextval(sa.func.pg_get_serial_sequence("ticket", "id")).label("id")
    ).select_from(sa.func.generate_series(1, sa.bindparam("count", type_=sa.Integer)))
)
_SET_BARCODE = Statement(
    lambda _: (
        sa.update(db.ticket)
        .where(db.ticket.c.id == sa.bindparam("ticket_id"))
        .values(barcode=sa.bindparam("code", type_=db.ticket.c.barcode.type))
    )
)
_NEW_PAYMENTS = BulkInsert(
    db.payment,
    [
        "institution_id",
        "order_id",
        "payment_method_id",
        "method_code",
        "payment_type",
        "amount",
        "account_id",
        "reference",
        "created_at",
    ],
)


async def _sign(
    conn: AsyncConnection,
    institution_id: int,
    organization_id: int,
    tickets: Iterable[tuple[int, Any]],
    vault: KeyVault,
    now: datetime,
) -> dict[int, str]:
    """A barcode for each ``(ticket id, movement)``, signed with the organization's active
    key (created on first use), by ticket id."""
    key = await signing_key(
        conn, vault, institution_id=institution_id, organization_id=organization_id, now=now
    )
    issued_at = now.replace(microsecond=0)
    return {
        ticket_id: issue(
            BarcodePayload(
                key_id=key.key_id,
                institution_id=institution_id,
                ticket_id=ticket_id,
                performance_id=movement.performance_id or 0,
                issued_at=issued_at,
                valid_until=max(validity_of(movement.labels, now), now + timedelta(hours=1)),
            ),
            key.private_key,
        )
        for ticket_id, movement in tickets
    }


async def set_barcodes_in(
    conn: AsyncConnection,
    institution_id: int,
    organization_id: int,
    tickets: Sequence[tuple[int, Any]],
    vault: KeyVault,
    now: datetime,
) -> dict[int, str]:
    """Sign a barcode for each ``(ticket id, movement)`` with the organization's active key
    (created on first use) and store them; the barcodes by ticket id."""
    codes = await _sign(conn, institution_id, organization_id, tickets, vault, now)
    await _SET_BARCODE.execute_many(
        conn, [{"ticket_id": ticket_id, "code": code} for ticket_id, code in codes.items()]
    )
    return codes


def _orders_query(dialect: str) -> Any:
    o = db.sales_order.c
    query = (
        sa.select(db.sales_order)
        .where(any_of(o.id, "order_ids", dialect), o.institution_id == sa.bindparam("institution"))
        .order_by(o.id)  # rows locked in id order: two groups of closes never deadlock
    )
    return query.with_for_update() if dialect == "postgresql" else query


_ORDERS_FOR_UPDATE = Statement(_orders_query)
_SET_CONTACT = Statement(
    lambda _: (
        sa.update(db.sales_order)
        .where(db.sales_order.c.id == sa.bindparam("order_id"))
        .values(contact_number=sa.bindparam("contact", type_=db.sales_order.c.contact_number.type))
    )
)


def _close_orders(dialect: str) -> Any:
    o = db.sales_order.c
    return (
        sa.update(db.sales_order)
        .where(any_of(o.id, "order_ids", dialect), o.state == OrderState.RUNNING.value)
        .values(
            state=OrderState.CLOSED.value,
            closed_at=sa.bindparam("now", type_=o.closed_at.type),
            updated_at=sa.bindparam("now", type_=o.updated_at.type),
            expires_at=None,
            pending_payments=None,
            paid=o.total,
        )
        .returning(*db.sales_order.c)
    )


_CLOSE_ORDERS = Statement(_close_orders)


def _sell(table: sa.Table, *, counted: bool = False) -> Statement:
    """The reserved rows of ``table`` (movements, operations) of the orders ``order_ids``
    sold (``counted``: each with ``of_order``, how many rows of the table its order has in
    any state)."""

    def build(dialect: str) -> Any:
        returned: list[Any] = list(table.c)
        if counted:
            other = table.alias("of_order")
            returned.append(
                sa.select(sa.func.count())
                .where(other.c.order_id == table.c.order_id)
                .correlate(table)
                .scalar_subquery()
                .label("of_order")
            )
        return (
            sa.update(table)
            .where(
                any_of(table.c.order_id, "order_ids", dialect),
                table.c.state == MovementState.RESERVED.value,
            )
            .values(state=MovementState.SOLD.value)
            .returning(*returned)
        )

    return Statement(build)


_SELL_MOVEMENTS = _sell(db.movement, counted=True)
_SELL_OPERATIONS = _sell(db.operation)


@dataclass(frozen=True)
class CloseRequest:
    """One order to close (see the module's contract); ``contact_number``: the order's
    contact set at close; ``card_confirmation``: the card provider confirmed its payment (the
    order waits for it, and its expiry no longer counts)."""

    seller: Seller
    order_id: int
    payments: tuple[PaymentRequest, ...]
    contact_number: str | None = None
    with_barcodes: bool = True
    card_confirmation: bool = False


@dataclass
class Closed:
    """A closed order: its row, its ticket ids and, when the close wrote all of it (nothing
    but its reserved places, no earlier payment), its :class:`OrderContents`."""

    order: Any
    ticket_ids: list[int]
    contents: OrderContents | None


def _check_order(close: CloseRequest, order: Any, now: datetime) -> None:
    if order is None or order.sales_channel_id != close.seller.sales_channel_id:
        raise UnknownOrder(f"no order {close.order_id}")
    if close.card_confirmation:
        if order.state != OrderState.RUNNING.value:
            raise OrderClosed(f"order {order.id} is {order.state}")
        return
    running(order, now)
    if order.pending_payments is not None:
        raise OrderClosed(f"order {order.id} awaits a card payment; reopen it first")


def _check_sale(close: CloseRequest, order: Any, movements: Sequence[Any]) -> None:
    """What the order's movements, sold here, and the payments must be."""
    seller = close.seller
    if not movements:
        raise EmptyOrder(f"order {order.id} has nothing to sell")
    contact = close.contact_number or order.contact_number
    if contact is None and any(r.labels.get("contactRequired") for r in movements):
        raise ContactRequired("these products are sold to a known contact: give contactReference")
    if not close.card_confirmation and any(
        (method := seller.method(p.payment_method_id)) is not None and method.payment_type == "CARD"
        for p in close.payments
    ):
        raise CardPaymentRequired(
            "card payments go through createPaymentsAndCloseOrder and the payment page"
        )
    check_payments(seller, close.payments, order.total)


def _by_order(rows: Iterable[Any]) -> dict[int, list[Any]]:
    found: dict[int, list[Any]] = {}
    for row in sorted(rows, key=lambda r: r.id):
        found.setdefault(row.order_id, []).append(row)
    return found


async def close_orders_in(
    conn: AsyncConnection,
    closes: Sequence[CloseRequest],
    *,
    vault: KeyVault,
    now: datetime,
    setup_checked: bool = False,
) -> list[Closed]:
    """Close ``closes`` (orders of one institution, each once) inside the caller's
    transaction, with one statement for each step of them all: the orders read and locked,
    their movements and operations sold, the orders closed, their tickets and payments
    written, their holds confirmed. The first close refused raises :class:`Refused` (roll
    back; the others can be run again without it). ``setup_checked``: the transaction checked
    the sellers' setup version (:func:`check_setup`)."""
    institution_id = closes[0].seller.institution_id
    assert all(c.seller.institution_id == institution_id for c in closes)
    orders = {
        r.id: r
        for r in await _ORDERS_FOR_UPDATE.rows(
            conn, order_ids=sorted({c.order_id for c in closes}), institution=institution_id
        )
    }
    for index, close in enumerate(closes):
        try:
            _check_order(close, orders.get(close.order_id), now)
        except DomainError as error:
            raise Refused(index, error) from None
    order_ids = sorted(orders)
    # sold first, checked after: a refusal rolls the whole transaction back
    movements = _by_order(await _SELL_MOVEMENTS.rows(conn, order_ids=order_ids))
    for index, close in enumerate(closes):
        try:
            _check_sale(close, orders[close.order_id], movements.get(close.order_id, []))
        except DomainError as error:
            raise Refused(index, error) from None
    contacts = [
        {"order_id": c.order_id, "contact": c.contact_number}
        for c in closes
        if c.contact_number and c.contact_number != orders[c.order_id].contact_number
    ]
    if contacts:
        await _SET_CONTACT.execute_many(conn, contacts)
    closed_rows = {r.id: r for r in await _CLOSE_ORDERS.rows(conn, order_ids=order_ids, now=now)}
    for index, close in enumerate(closes):
        if close.order_id not in closed_rows:
            raise Refused(index, OrderClosed(f"order {close.order_id} was just closed"))
    operations = _by_order(await _SELL_OPERATIONS.rows(conn, order_ids=order_ids))
    codes: dict[int, str] = {}
    ticket_ids: dict[int, list[int]] = {}
    for (_, with_barcodes), alike in itertools.groupby(
        sorted(closes, key=lambda c: (c.seller.organization_id, c.with_barcodes)),
        key=lambda c: (c.seller.organization_id, c.with_barcodes),
    ):
        of_organization = list(alike)
        sold = [m for c in of_organization for m in movements[c.order_id]]
        issued = await issue_tickets_in(
            conn,
            of_organization[0].seller,
            sold,
            vault,
            now,
            with_barcodes=with_barcodes,
            codes=codes,
        )
        for movement, ticket_id in zip(sold, issued, strict=True):
            ticket_ids.setdefault(movement.order_id, []).append(ticket_id)
    for close in closes:
        order = orders[close.order_id]
        await audit.record(
            conn,
            institution_id=institution_id,
            action="sales.order.closed",
            actor=close.seller.actor,
            at=now,
            order_id=order.id,
            total=order.total,
            tickets=len(ticket_ids[order.id]),
        )
        await events.order_closed(
            conn,
            close.seller,
            order.id,
            now,
            labels=[r.labels for r in movements[order.id]],
            setup_version=close.seller.setup_version if setup_checked else 0,
        )
    # Last, the rows every close of the point of sale or the institution shares: the pending
    # account (or voucher) and, through the holds, the inventory's change sequence. Their locks
    # are held until commit, so taking them last keeps concurrent closes' waits short.
    paid = await take_payments_of(
        conn,
        [
            (
                c.seller,
                orders[c.order_id],
                c.payments,
                c.contact_number or orders[c.order_id].contact_number,
            )
            for c in closes
        ],
        now,
    )
    holds: dict[int, int] = {}  # hold id -> index of its close
    for index, close in enumerate(closes):
        for r in operations.get(close.order_id, []):
            if r.hold_id is not None:
                holds[r.hold_id] = index
    confirmed = await confirm_holds_in(
        conn,
        institution_id=institution_id,
        holds={hold_id: closes[index].seller.actor for hold_id, index in sorted(holds.items())},
        now=now,
    )
    for hold_id, index in sorted(holds.items()):
        if hold_id not in confirmed:
            order_id = closes[index].order_id
            raise Refused(index, OrderExpired(f"order {order_id}'s places are no longer held"))
    result = []
    for close in closes:
        order, sold = orders[close.order_id], movements[close.order_id]
        contents = None
        if sold[0].of_order == len(sold) and not order.paid:
            contents = OrderContents(
                operations.get(order.id, []),
                sold,
                [
                    SimpleNamespace(
                        id=ticket_id,
                        movement_id=movement.id,
                        state=TicketState.NOT_PRINTED.value,
                        barcode=codes.get(ticket_id),
                    )
                    for ticket_id, movement in zip(ticket_ids[order.id], sold, strict=True)
                ],
                paid[order.id],
            )
        result.append(Closed(closed_rows[order.id], ticket_ids[order.id], contents))
    return result


async def close_order_in(
    conn: AsyncConnection,
    seller: Seller,
    order_id: int,
    payments: Sequence[PaymentRequest],
    *,
    contact_number: str | None,
    with_barcodes: bool,
    vault: KeyVault,
    now: datetime,
    card_confirmation: bool = False,
) -> Closed:
    """One :func:`close_orders_in` inside the caller's transaction; its refusal raised."""
    close = CloseRequest(
        seller, order_id, tuple(payments), contact_number, with_barcodes, card_confirmation
    )
    try:
        (closed,) = await close_orders_in(conn, [close], vault=vault, now=now)
    except Refused as refused:
        raise refused.error from None
    return closed


async def close_order(
    engine: AsyncEngine,
    seller: Seller,
    order_id: int,
    payments: Sequence[PaymentRequest],
    *,
    contact_number: str | None = None,
    with_barcodes: bool = True,
    vault: KeyVault,
    now: datetime,
    answer: Answer | None = None,
) -> tuple[list[int], Any]:
    """Close a running cart with its payments (see the module's contract); the ticket ids,
    and what ``answer(conn, order row, ticket ids, contents or None)`` made of the closed
    order at the end of the transaction, or None. On PostgreSQL the closes a process receives
    while its earlier ones are in the database run together (:data:`close_groups`)."""
    close = CloseRequest(seller, order_id, tuple(payments), contact_number, with_barcodes)
    return await close_groups.submit(engine, _Pending(close, vault, now, answer))


@dataclass(frozen=True)
class _Pending:
    close: CloseRequest
    vault: KeyVault
    now: datetime
    answer: Answer | None


async def _run_closes(engine: AsyncEngine, group: list[_Pending]) -> list[tuple[list[int], Any]]:
    """One transaction for the closes of ``group`` (one institution's, each order once)."""
    closes = [p.close for p in group]
    now = max(p.now for p in group)

    async def work(conn: AsyncConnection) -> list[tuple[list[int], Any]]:
        for index, close in enumerate(closes):
            try:
                await check_setup(conn, close.seller)
            except DomainError as error:
                raise Refused(index, error) from None
        closed = await close_orders_in(
            conn, closes, vault=group[0].vault, now=now, setup_checked=True
        )
        answers = []
        for pending, done in zip(group, closed, strict=True):
            answer = None
            if pending.answer is not None:
                answer = await pending.answer(conn, done.order, done.ticket_ids, done.contents)
            answers.append((done.ticket_ids, answer))
        return answers

    result: list[tuple[list[int], Any]] = await in_transaction(
        engine, work, setup_of=closes[0].seller.institution_id
    )
    return result


close_groups: Groups[_Pending, tuple[list[int], Any]] = Groups(
    _run_closes,
    key=lambda p: (p.close.seller.institution_id, id(p.vault)),
    distinct=lambda p: p.close.order_id,
)
