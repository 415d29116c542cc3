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
- an expired cart cannot be closed (``error.order.expired``): its places may be sold already.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.inventory.errors import HoldClosed
from billetterie.inventory.services import confirm_hold_in, in_transaction
from billetterie.sales import accounts, db, events
from billetterie.sales.barcode_keys import KeyVault, signing_key
from billetterie.sales.barcodes import BarcodePayload, issue
from billetterie.sales.carts import check_setup, load_order, running
from billetterie.sales.errors import (
    CardPaymentRequired,
    ContactRequired,
    EmptyOrder,
    OrderClosed,
    OrderExpired,
    PaymentMethodNotAllowed,
    UnknownAccount,
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
from billetterie.shared.statements import BulkInsert, Statement, bound

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
) -> accounts.Account:
    if kind == AccountKind.PENDING_ACCOUNT:
        # the point of sale's account: its id and limit per setup version (the balance is
        # never read from it: debits are conditional updates)
        key = (seller.institution_id, seller.point_of_sale_code, seller.setup_version)
        cache = engine_cache(conn, "sales.pending_accounts", limit=1024)
        known: accounts.Account | None = cache.get(key) if seller.setup_version else None
        if known is not None:
            return known
        found = await accounts.find_account(
            conn, seller.institution_id, kind, seller.point_of_sale_code
        )
        if found is not None and found.credit_limit == seller.pending_credit_limit:
            cache[key] = found  # committed already: safe to keep
            return found
        return await accounts.open_account(  # created or changed here: kept once committed
            conn,
            institution_id=seller.institution_id,
            kind=kind,
            code=seller.point_of_sale_code,
            currency=seller.currency,
            now=order.updated_at,
            credit_limit=seller.pending_credit_limit,
            point_of_sale_id=seller.point_of_sale_id,
        )
    code = reference if kind == AccountKind.VOUCHER else contact_number
    if not code:
        what = "a voucher code" if kind == AccountKind.VOUCHER else "the order's contact"
        raise UnknownAccount(f"paying by {kind.value.lower()} needs {what}")
    found = await accounts.find_account(conn, seller.institution_id, kind, code)
    if found is None:
        raise UnknownAccount(f"no {kind.value.lower()} {code}")
    return found


async def take_payments_in(
    conn: AsyncConnection,
    seller: Seller,
    order: Any,
    payments: Sequence[PaymentRequest],
    now: datetime,
    *,
    contact_number: str | None,
) -> list[Any]:
    """Record the payments and debit their accounts, inside the caller's transaction; a credit
    balance is the one of ``contact_number``. A payment with ``account_id`` was debited when it
    was held (a mixed card payment) and is only recorded. Returns the payment rows."""
    rows = []
    for p in payments:
        method = seller.method(p.payment_method_id)
        assert method is not None
        account_id = p.account_id  # held during a card payment: debited already
        kind = ACCOUNT_OF_PAYMENT.get(method.payment_type)
        if kind is not None and account_id is None:
            account = await _account_for(conn, seller, kind, order, p.reference, contact_number)
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
        payment = await _NEW_PAYMENT.one(
            conn,
            institution_id=seller.institution_id,
            order_id=order.id,
            payment_method_id=method.id,
            method_code=method.code,
            payment_type=method.payment_type,
            amount=p.amount,
            account_id=account_id,
            reference=p.reference,
            created_at=now,
        )
        rows.append(payment)
    return rows


async def issue_tickets_in(
    conn: AsyncConnection,
    seller: Seller,
    order_id: int,
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
            "order_id": order_id,
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
_NEW_PAYMENT = Statement(
    lambda _: (
        sa.insert(db.payment)
        .values(
            bound(
                db.payment,
                "institution_id",
                "order_id",
                "payment_method_id",
                "method_code",
                "payment_type",
                "amount",
                "account_id",
                "reference",
                "created_at",
            )
        )
        .returning(*db.payment.c)
    )
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


_CLOSE_ORDER = Statement(
    lambda _: (
        sa.update(db.sales_order)
        .where(
            db.sales_order.c.id == sa.bindparam("order_id"),
            db.sales_order.c.state == OrderState.RUNNING.value,
        )
        .values(
            state=OrderState.CLOSED.value,
            closed_at=sa.bindparam("now", type_=db.sales_order.c.closed_at.type),
            updated_at=sa.bindparam("now", type_=db.sales_order.c.updated_at.type),
            expires_at=None,
            pending_payments=None,
            paid=sa.bindparam("paid", type_=db.sales_order.c.paid.type),
            contact_number=sa.bindparam("contact", type_=db.sales_order.c.contact_number.type),
        )
        .returning(*db.sales_order.c)
    )
)


def _sell(table: sa.Table, *, counted: bool = False) -> Statement:
    """The order's reserved rows of ``table`` (movements, operations) sold (``counted``: each
    with ``of_order``, how many rows of the table the order has in any state)."""

    def build(_: str) -> Any:
        returned: list[Any] = list(table.c)
        if counted:
            other = table.alias("of_order")
            returned.append(
                sa.select(sa.func.count())
                .where(other.c.order_id == sa.bindparam("order"))
                .scalar_subquery()
                .label("of_order")
            )
        return (
            sa.update(table)
            .where(
                table.c.order_id == sa.bindparam("order"),
                table.c.state == MovementState.RESERVED.value,
            )
            .values(state=MovementState.SOLD.value)
            .returning(*returned)
        )

    return Statement(build)


_SELL_MOVEMENTS = _sell(db.movement, counted=True)
_SELL_OPERATIONS = _sell(db.operation)


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
    closed: list[Any] | None = None,
    setup_checked: bool = False,
) -> list[int]:
    """:func:`close_order` inside the caller's transaction; returns the ticket ids. With
    ``closed``, the closed order's row and, when this close wrote all of them (an order with
    nothing but its reserved places, no earlier payment), its :class:`OrderContents` are
    appended to it, so the caller renders it without reading it back. ``setup_checked``: the
    transaction checked the seller's setup version (:func:`check_setup`)."""
    order = await load_order(conn, seller, order_id, for_update=True)
    if card_confirmation:
        if order.state != OrderState.RUNNING.value:
            raise OrderClosed(f"order {order.id} is {order.state}")
    else:
        running(order, now)
        if order.pending_payments is not None:
            raise OrderClosed(f"order {order.id} awaits a card payment; reopen it first")
    # sold first, checked after: a refusal rolls the whole transaction back
    movements = sorted(await _SELL_MOVEMENTS.rows(conn, order=order.id), key=lambda r: r.id)
    if not movements:
        raise EmptyOrder(f"order {order.id} has nothing to sell")
    contact = contact_number or order.contact_number
    if contact is None and any(r.labels.get("contactRequired") for r in movements):
        raise ContactRequired("these products are sold to a known contact: give contactReference")
    if not card_confirmation and any(
        (method := seller.method(p.payment_method_id)) is not None and method.payment_type == "CARD"
        for p in payments
    ):
        raise CardPaymentRequired(
            "card payments go through createPaymentsAndCloseOrder and the payment page"
        )
    check_payments(seller, payments, order.total)
    complete = movements[0].of_order == len(movements) and not order.paid and closed is not None
    closed_row = await _CLOSE_ORDER.first(
        conn, order_id=order.id, now=now, paid=order.total, contact=contact
    )
    if closed_row is None:
        raise OrderClosed(f"order {order.id} was just closed")
    operations = await _SELL_OPERATIONS.rows(conn, order=order.id)
    hold_ids = sorted({r.hold_id for r in operations if r.hold_id is not None})
    codes: dict[int, str] = {}
    ticket_ids = await issue_tickets_in(
        conn, seller, order.id, movements, vault, now, with_barcodes=with_barcodes, codes=codes
    )
    await audit.record(
        conn,
        institution_id=seller.institution_id,
        action="sales.order.closed",
        actor=seller.actor,
        at=now,
        order_id=order.id,
        total=order.total,
        tickets=len(ticket_ids),
    )
    await events.order_closed(
        conn,
        seller,
        order.id,
        now,
        labels=[r.labels for r in movements],
        setup_version=seller.setup_version if setup_checked else 0,
    )
    # Last, the rows every close of the point of sale or the institution shares: the pending
    # account (or voucher) and, through the holds, the inventory's change sequence. Their locks
    # are held until commit, so taking them last keeps concurrent closes' waits short.
    paid = await take_payments_in(conn, seller, order, payments, now, contact_number=contact)
    if closed is not None:
        closed.append(closed_row)
        if complete:
            closed.append(
                OrderContents(
                    sorted(operations, key=lambda r: r.id),
                    movements,
                    [
                        SimpleNamespace(
                            id=ticket_id,
                            movement_id=movement.id,
                            state=TicketState.NOT_PRINTED.value,
                            barcode=codes.get(ticket_id),
                        )
                        for ticket_id, movement in zip(ticket_ids, movements, strict=True)
                    ],
                    paid,
                )
            )
    for hold_id in hold_ids:
        try:
            await confirm_hold_in(
                conn,
                institution_id=seller.institution_id,
                hold_id=hold_id,
                now=now,
                actor=seller.actor,
            )
        except HoldClosed:
            raise OrderExpired(f"order {order.id}'s places are no longer held") from None
    return ticket_ids


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
    answer: Callable[[AsyncConnection, Any, list[int], OrderContents | None], Awaitable[Any]]
    | None = None,
) -> tuple[list[int], Any]:
    """Close a running cart with its payments (see the module's contract); the ticket ids,
    and what ``answer(conn, order row, ticket ids, contents or None)`` made of the closed
    order at the end of the transaction, or None."""

    async def work(conn: AsyncConnection) -> tuple[list[int], Any]:
        await check_setup(conn, seller)
        closed: list[Any] = []
        tickets = await close_order_in(
            conn,
            seller,
            order_id,
            payments,
            contact_number=contact_number,
            with_barcodes=with_barcodes,
            vault=vault,
            now=now,
            closed=closed,
            setup_checked=True,
        )
        if answer is None:
            return tickets, None
        return tickets, await answer(conn, closed[0], tickets, closed[1] if closed[1:] else None)

    result: tuple[list[int], Any] = await in_transaction(
        engine, work, setup_of=seller.institution_id
    )
    return result
