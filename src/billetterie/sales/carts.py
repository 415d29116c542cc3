"""Carts: create or update an order, give up some of its places, let it expire.

Contract:

- a cart is an order in state RUNNING; its places are inventory holds that expire with it,
  ``orderAbandonDelay`` minutes after it was created (adding operations does not extend it);
- every change runs in one inventory transaction (:func:`inventory.services.in_transaction`):
  the holds, the order's operations and movements, the total and the audit entries commit
  together or not at all, and a lost seat race runs the whole change again;
- prices and sellability come from the catalog (:mod:`billetterie.catalog.offers`) at the time
  of the change and are copied onto the movements;
- a cart belongs to its sales channel: another channel's (or institution's) operator gets
  ``error.order.unknown``, as if it did not exist.
"""

from __future__ import annotations

import functools
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.catalog import db as catalog_db
from billetterie.catalog.offers import (
    Offer,
    area_blocks,
    block_labels,
    composed_offer,
    item_offer,
    performance_offer,
)
from billetterie.inventory.errors import NotAvailable
from billetterie.inventory.models import HeldPlace
from billetterie.inventory.returns import release_places_in
from billetterie.inventory.services import (
    SEATS_MISSING,
    Claimed,
    GroupHold,
    Hold,
    LostRace,
    NewHold,
    PlaceRequest,
    attempt_number,
    claim_best_seats,
    hold_places_in,
    in_transaction,
    new_holds,
    release_hold_in,
    seats_lacking,
    setup_version_read,
    write_hold_lines,
)
from billetterie.payments.services import cancel_payment
from billetterie.sales import accounts, db
from billetterie.sales.errors import (
    InvalidOperation,
    OrderClosed,
    OrderExpired,
    SetupChanged,
    TooManySeats,
    UnknownMovement,
    UnknownOrder,
)
from billetterie.sales.models import (
    CartRequest,
    ComposedLine,
    MovementState,
    OperationKind,
    OrderState,
    Seller,
    SimpleProductLine,
    SingleEntryLine,
)
from billetterie.sales.queries import OrderContents
from billetterie.shared import audit
from billetterie.shared.db import read
from billetterie.shared.errors import DomainError
from billetterie.shared.groups import Declined, Groups, Refused, RunAlone
from billetterie.shared.statements import BulkInsert, Statement, bound

MAX_LINES = 50


@dataclass(frozen=True)
class _Planned:
    """Places to hold for one operation, and how to price each held place."""

    kind: OperationKind
    product_id: int
    requests: tuple[PlaceRequest, ...]
    # per (performance id, seat category id) or (item id, timeslot id): the offers, one per place
    offers: dict[tuple[Any, Any], list[Offer]]
    quantity: int
    composed_parts: int = 1

    def amount_of(self, key: tuple[Any, Any], offer: Offer) -> int:
        """What one place of ``key`` sold at ``offer`` costs: a composed product's price is
        shared between its performances (the remainder on the first)."""
        if self.kind != OperationKind.COMPOSED_PRODUCT:
            return offer.amount
        return _split(offer.amount, self.composed_parts, list(self.offers).index(key))

    def amount(self) -> int:
        """What the operation's places cost together (every place held: all or nothing)."""
        return sum(
            self.amount_of(key, offer) for key, offers in self.offers.items() for offer in offers
        )


def cart_key(order_id: int) -> str:
    return f"order:{order_id}"


def _order_query(dialect: str, *, for_update: bool) -> Any:
    o = db.sales_order.c
    query = sa.select(db.sales_order).where(
        o.id == sa.bindparam("order_id"),
        o.institution_id == sa.bindparam("institution_id"),
        o.sales_channel_id == sa.bindparam("sales_channel_id"),
    )
    return query.with_for_update() if for_update and dialect == "postgresql" else query


_ORDER = Statement(functools.partial(_order_query, for_update=False))
_ORDER_FOR_UPDATE = Statement(functools.partial(_order_query, for_update=True))
_SETUP_VERSION = Statement(lambda _: catalog_db.setup_version_query())
_NEW_ORDERS = BulkInsert(
    db.sales_order,
    [
        "institution_id",
        "point_of_sale_id",
        "sales_channel_id",
        "secret_id",
        "operator",
        "order_type",
        "state",
        "currency",
        "total",
        "paid",
        "language",
        "contact_number",
        "external_reference",
        "purchaser",
        "expires_at",
        "created_at",
        "updated_at",
    ],
)
_NEW_OPERATIONS = BulkInsert(
    db.operation,
    [
        "institution_id",
        "order_id",
        "kind",
        "product_id",
        "hold_id",
        "state",
        "quantity",
        "created_at",
    ],
)
_NEW_MOVEMENTS = BulkInsert(
    db.movement,
    [
        "institution_id",
        "order_id",
        "operation_id",
        "product_id",
        "performance_id",
        "seat_category_id",
        "audience_sub_category_id",
        "price_level_id",
        "product_item_id",
        "timeslot_id",
        "contingent_id",
        "stock_id",
        "performance_seat_id",
        "amount",
        "vat_rate",
        "state",
        "labels",
        "created_at",
    ],
)
_ORDER_TOTAL = Statement(
    lambda _: (
        sa.update(db.sales_order)
        .where(db.sales_order.c.id == sa.bindparam("order_id"))
        .values(bound(db.sales_order, "total", "updated_at"))
        .returning(*db.sales_order.c)
    )
)


async def load_order(
    conn: AsyncConnection, seller: Seller, order_id: int, *, for_update: bool = False
) -> Any:
    """The order if the seller's sales channel may see it, else UnknownOrder."""
    row = await (_ORDER_FOR_UPDATE if for_update else _ORDER).first(
        conn,
        order_id=order_id,
        institution_id=seller.institution_id,
        sales_channel_id=seller.sales_channel_id,
    )
    if row is None:
        raise UnknownOrder(f"no order {order_id}")
    return row


async def check_setup(conn: AsyncConnection, seller: Seller) -> None:
    """Refuse to sell from a point of sale read at another setup version than the
    institution's now (SetupChanged); the version is read in the sale's own transaction, so
    prices and rules cached for it are the ones in force."""
    if not seller.setup_version:
        return
    version = setup_version_read(seller.institution_id)
    if version is None:
        version = await _SETUP_VERSION.scalar(conn, institution_id=seller.institution_id)
    if version != seller.setup_version:
        raise SetupChanged("the institution's setup changed; read the point of sale again")


def running(order: Any, now: datetime) -> None:
    """Refuse anything but a running cart that has not expired."""
    if order.state != OrderState.RUNNING.value:
        raise OrderClosed(f"order {order.id} is {order.state}")
    if order.expires_at is not None and order.expires_at <= now:
        raise OrderExpired(f"order {order.id} expired at {order.expires_at.isoformat()}")


async def _plan_single_entry(
    conn: AsyncConnection, seller: Seller, line: SingleEntryLine, now: datetime
) -> _Planned:
    if not line.attributions:
        raise InvalidOperation("an operation needs at least one attribution")
    offers: dict[tuple[Any, Any], list[Offer]] = defaultdict(list)
    seats: dict[tuple[int, int], list[int]] = defaultdict(list)
    product_id = None
    for a in line.attributions:
        _check_quantity(a.quantity)
        if a.seat_ids and len(a.seat_ids) != a.quantity:
            raise InvalidOperation("give as many seatIds as the quantity")
        offer = await performance_offer(
            conn,
            institution_id=seller.institution_id,
            sales_channel_id=seller.sales_channel_id,
            performance_id=a.performance_id,
            seat_category_id=a.seat_category_id,
            audience_sub_category_id=a.audience_sub_category_id,
            price_level_id=a.price_level_id,
            now=now,
            setup_version=seller.setup_version,
        )
        if product_id is not None and offer.product_id != product_id:
            raise InvalidOperation("one operation sells one product's performances")
        product_id = offer.product_id
        key = (a.performance_id, a.seat_category_id)
        offers[key].extend([offer] * a.quantity)
        seats[key].extend(a.seat_ids)
    preferred = await area_blocks(conn, seller.institution_id, line.preferred_area_ids)
    requests = []
    for (performance_id, category_id), places in offers.items():
        given = tuple(seats[(performance_id, category_id)])
        if given and len(given) != len(places):
            raise InvalidOperation("give seatIds for every attribution of a category, or none")
        requests.append(
            PlaceRequest(
                quantity=len(places),
                performance_id=performance_id,
                seat_category_id=category_id,
                seat_ids=given,
                preferred_blocks=() if given else preferred,
            )
        )
    assert product_id is not None
    return _Planned(
        OperationKind.SINGLE_ENTRY,
        product_id,
        tuple(requests),
        offers,
        sum(a.quantity for a in line.attributions),
    )


async def _plan_simple(
    conn: AsyncConnection, seller: Seller, line: SimpleProductLine, now: datetime
) -> _Planned:
    _check_quantity(line.quantity)
    offer = await item_offer(
        conn,
        institution_id=seller.institution_id,
        sales_channel_id=seller.sales_channel_id,
        product_item_id=line.item_id,
        timeslot_id=line.timeslot_id,
        audience_sub_category_id=line.audience_sub_category_id,
        price_level_id=line.price_level_id,
        now=now,
    )
    request = PlaceRequest(
        quantity=line.quantity, product_item_id=line.item_id, timeslot_id=line.timeslot_id
    )
    return _Planned(
        OperationKind.SIMPLE_PRODUCT,
        offer.product_id,
        (request,),
        {(line.item_id, line.timeslot_id): [offer] * line.quantity},
        line.quantity,
    )


async def _plan_composed(
    conn: AsyncConnection, seller: Seller, line: ComposedLine, now: datetime
) -> _Planned:
    _check_quantity(line.quantity)
    offer = await composed_offer(
        conn,
        institution_id=seller.institution_id,
        sales_channel_id=seller.sales_channel_id,
        product_id=line.product_id,
        seat_category_id=line.seat_category_id,
        audience_sub_category_id=line.audience_sub_category_id,
        price_level_id=line.price_level_id,
        now=now,
    )
    # the subscriber sits on the same seats at every performance, when there are such seats
    requests = tuple(
        PlaceRequest(
            quantity=line.quantity,
            performance_id=p,
            seat_category_id=c,
            same_seats=offer.product_id,
        )
        for p, c in offer.performances
    )
    return _Planned(
        OperationKind.COMPOSED_PRODUCT,
        offer.product_id,
        requests,
        {key: [offer] * line.quantity for key in offer.performances},
        line.quantity,
        composed_parts=len(offer.performances),
    )


def _check_quantity(quantity: int) -> None:
    if not 1 <= quantity <= 1000:
        raise InvalidOperation("a quantity must be between 1 and 1000")


def _place_key(place: HeldPlace) -> tuple[Any, Any]:
    if place.performance_id is not None:
        return (place.performance_id, place.seat_category_id)
    return (place.product_item_id, place.timeslot_id)


def _split(amount: int, parts: int, index: int) -> int:
    """Share ``index`` of ``amount`` in ``parts``: equal shares, the remainder on the first."""
    share, remainder = divmod(amount, parts)
    return share + (remainder if index == 0 else 0)


async def _seats_per_performance(conn: AsyncConnection, order_id: int) -> dict[int, int]:
    m = db.movement.c
    rows = (
        await conn.execute(
            sa.select(m.performance_id, sa.func.count())
            .where(
                m.order_id == order_id,
                m.performance_id.is_not(None),
                m.state == MovementState.RESERVED.value,
            )
            .group_by(m.performance_id)
        )
    ).all()
    return {r[0]: r[1] for r in rows}


def _order_row(seller: Seller, request: CartRequest, now: datetime, total: int) -> dict[str, Any]:
    """A new cart's row, written with its total."""
    return {
        "institution_id": seller.institution_id,
        "point_of_sale_id": seller.point_of_sale_id,
        "sales_channel_id": seller.sales_channel_id,
        "secret_id": secrets.token_urlsafe(24),
        "operator": seller.operator,
        "order_type": request.order_type.value,
        "state": OrderState.RUNNING.value,
        "currency": seller.currency,
        "total": total,
        "paid": 0,
        "language": request.language or seller.language,
        "contact_number": request.contact_number,
        "external_reference": request.external_reference,
        "purchaser": request.purchaser,
        "expires_at": now + timedelta(minutes=seller.abandon_delay_minutes),
        "created_at": now,
        "updated_at": now,
    }


async def _hold(
    conn: AsyncConnection,
    seller: Seller,
    order: Any,
    planned: _Planned,
    now: datetime,
    hold_id: int,
    lines_to: list[dict[str, Any]],
    claimed: Claimed | None = None,
) -> Hold:
    """Hold the planned places of one operation for the cart ``order`` (its hold written,
    its lines left in ``lines_to``; ``claimed``: seats its group claimed for it already)."""
    return await hold_places_in(
        conn,
        institution_id=seller.institution_id,
        sales_channel_id=seller.sales_channel_id,
        contingent_ids=sorted(seller.contingent_ids),
        cart=cart_key(order.id),
        requests=planned.requests,
        expires_at=order.expires_at,
        now=now,
        split_allowed=seller.split_allowed,
        actor=seller.actor,
        setup_version=seller.setup_version,
        hold_id=hold_id,
        lines_to=lines_to,
        claimed=claimed,
    )


async def _movement_rows(
    conn: AsyncConnection,
    seller: Seller,
    order: Any,
    planned: _Planned,
    hold: Hold,
    operation_id: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """The movements of one operation: a held place each, priced by its offer."""
    places = hold.places
    blocks = await block_labels(
        conn,
        seller.institution_id,
        [p.block_id for p in places if p.block_id is not None],
        setup_version=seller.setup_version,
    )
    remaining = {key: list(offers) for key, offers in planned.offers.items()}
    parts = {key: i for i, key in enumerate(planned.offers)}
    rows = []
    for place in places:
        key = _place_key(place)
        offer = remaining[key].pop(0)
        labels = dict(offer.labels)
        if planned.kind == OperationKind.COMPOSED_PRODUCT:
            performances = labels.pop("performances")
            labels |= performances[parts[key]]
        if place.seat_id is not None:
            labels |= {
                "row": place.row,
                "number": place.number,
                **blocks.get(place.block_id or 0, {}),
            }
        rows.append(
            {
                "institution_id": seller.institution_id,
                "order_id": order.id,
                "operation_id": operation_id,
                "product_id": offer.product_id,
                "performance_id": place.performance_id,
                "seat_category_id": place.seat_category_id,
                "audience_sub_category_id": offer.audience_sub_category_id,
                "price_level_id": offer.price_level_id,
                "product_item_id": place.product_item_id,
                "timeslot_id": place.timeslot_id,
                "contingent_id": place.contingent_id,
                "stock_id": place.stock_id,
                "performance_seat_id": place.seat_id,
                "amount": planned.amount_of(key, offer),
                "vat_rate": offer.vat_rate,
                "state": MovementState.RESERVED.value,
                "labels": labels,
                "created_at": now,
            }
        )
    return rows


async def close_emptied_operations(
    conn: AsyncConnection, operation_ids: set[int], *, was: MovementState, becomes: MovementState
) -> None:
    """Operations none of whose movements is still ``was`` take the state ``becomes``."""
    m, op = db.movement.c, db.operation.c
    for operation_id in sorted(operation_ids):
        left = (
            await conn.execute(
                sa.select(sa.func.count()).where(
                    m.operation_id == operation_id, m.state == was.value
                )
            )
        ).scalar_one()
        if left == 0:
            await conn.execute(
                sa.update(db.operation).where(op.id == operation_id).values(state=becomes.value)
            )


async def refresh_total(conn: AsyncConnection, order_id: int, now: datetime) -> int:
    """The order's total: what its reserved and sold movements cost."""
    m, o = db.movement.c, db.sales_order.c
    total = (
        await conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(m.amount), 0)).where(
                m.order_id == order_id,
                m.state.in_([MovementState.RESERVED.value, MovementState.SOLD.value]),
            )
        )
    ).scalar_one()
    await conn.execute(
        sa.update(db.sales_order).where(o.id == order_id).values(total=total, updated_at=now)
    )
    return int(total)


# (connection, the order's row, the operations added or tickets issued, its contents when known)
Answer = Callable[[AsyncConnection, Any, list[int], OrderContents | None], Awaitable[Any]]


async def create_or_update_order(
    engine: AsyncEngine,
    seller: Seller,
    request: CartRequest,
    *,
    now: datetime,
    answer: Answer | None = None,
) -> tuple[int, list[int], Any]:
    """Create a cart, or add operations to the running cart ``request.order_id``.

    All or nothing: when one line cannot be held (``error.order.availability``), priced or sold
    here, nothing changes. Returns the order id, the ids of the operations added, and what
    ``answer(conn, order id, operation ids)`` made of them at the end of the transaction (the
    caller's rendering of the cart as it commits), or None. On PostgreSQL the carts a process
    receives while its earlier ones are in the database run together (:data:`cart_groups`).
    """
    if len(request.lines) > MAX_LINES:
        raise InvalidOperation(f"at most {MAX_LINES} operations per call")
    return await cart_groups.submit(engine, _Pending(seller, request, now, answer))


@dataclass(frozen=True)
class _Pending:
    seller: Seller
    request: CartRequest
    now: datetime
    answer: Answer | None


async def _run_carts(
    engine: AsyncEngine, group: list[_Pending]
) -> list[tuple[int, list[int], Any] | Declined]:
    """One transaction for the carts of ``group`` (:func:`carts_in`)."""
    result: list[tuple[int, list[int], Any] | Declined] = await in_transaction(
        engine, lambda conn: carts_in(conn, group), setup_of=group[0].seller.institution_id
    )
    return result


cart_groups: Groups[_Pending, tuple[int, list[int], Any]] = Groups(
    _run_carts,
    key=lambda p: p.seller.institution_id,
    distinct=lambda p: p.request.order_id,  # None (a new cart) never conflicts
    # a group's carts hold their seats one after the other: its transaction, and the wait of
    # a claim for a seat it holds, grow with its size
    size=16,
    # fewer groups at once: larger ones, and fewer running transactions claiming the same seats
    concurrent=2,
)


@dataclass
class _Cart:
    """One cart of a group, as the steps of :func:`carts_in` fill it in."""

    pending: _Pending
    order: Any  # its row; None for a new cart until it is written
    planned: list[_Planned]
    new: bool = False  # the cart is created here
    wrote: bool = False  # its checks wrote (an update's new purchaser)
    added: int = 0  # what the added movements cost (each priced by ``_Planned.amount_of``)
    holds: list[Hold] = field(default_factory=list)
    operations: list[Any] = field(default_factory=list)
    movements: list[Any] = field(default_factory=list)

    @property
    def seller(self) -> Seller:
        return self.pending.seller


async def _prepared(conn: AsyncConnection, pending: _Pending) -> _Cart:
    """A cart checked and planned: its setup version, its order (an update's, locked), its
    lines priced, its seats per performance; an update's new purchaser written."""
    seller, request, now = pending.seller, pending.request, pending.now
    await check_setup(conn, seller)
    if request.order_id is None:
        if not request.lines:
            raise InvalidOperation("a new order needs at least one operation")
        order = None
    else:
        order = await load_order(conn, seller, request.order_id, for_update=True)
        running(order, now)
        if order.pending_payments is not None:
            raise OrderClosed(f"order {order.id} awaits a card payment; reopen it first")
    planned = []
    for line in request.lines:
        if isinstance(line, SingleEntryLine):
            planned.append(await _plan_single_entry(conn, seller, line, now))
        elif isinstance(line, SimpleProductLine):
            planned.append(await _plan_simple(conn, seller, line, now))
        else:
            planned.append(await _plan_composed(conn, seller, line, now))
    counts = {} if order is None else await _seats_per_performance(conn, order.id)
    for plan in planned:
        for r in plan.requests:
            if r.performance_id is not None:
                counts[r.performance_id] = counts.get(r.performance_id, 0) + r.quantity
    if counts and max(counts.values()) > seller.max_seats_per_performance:
        raise TooManySeats(f"at most {seller.max_seats_per_performance} seats per performance here")
    if order is not None and (
        request.contact_number or request.external_reference or request.purchaser
    ):
        o = db.sales_order.c
        values: dict[str, Any] = {}
        if request.contact_number:
            values["contact_number"] = request.contact_number
        if request.external_reference:
            values["external_reference"] = request.external_reference
        if request.purchaser:
            values["purchaser"] = request.purchaser
        await conn.execute(sa.update(db.sales_order).where(o.id == order.id).values(**values))
        wrote = True
    else:
        wrote = False
    return _Cart(
        pending,
        order,
        planned,
        new=order is None,
        wrote=wrote,
        added=sum(p.amount() for p in planned),
    )


async def _lacks_seats(conn: AsyncConnection, cart: _Cart) -> bool:
    """Whether the cart's holds would be refused for want of seats (told by reads only)."""
    seller = cart.seller
    return await seats_lacking(
        conn,
        institution_id=seller.institution_id,
        sales_channel_id=seller.sales_channel_id,
        contingent_ids=sorted(seller.contingent_ids),
        requests=[r for plan in cart.planned for r in plan.requests],
        now=cart.pending.now,
        split_allowed=seller.split_allowed,
        setup_version=seller.setup_version,
    )


async def carts_in(
    conn: AsyncConnection, group: Sequence[_Pending]
) -> list[tuple[int, list[int], Any] | Declined]:
    """:func:`create_or_update_order` for each cart of ``group`` (one institution's, each
    order once) inside the caller's transaction: each checked and planned, the new orders
    written in one statement, each cart's places held, then the operations and the movements
    of them all in one statement each. A cart whose seats are missing, found before anything
    is written for it (:func:`~billetterie.inventory.services.seats_lacking`), is
    :class:`Declined` and the others go on; the first cart refused after that raises
    :class:`Refused` (the transaction must roll back), and the first whose seat races are lost
    round after round on a second attempt raises :class:`RunAlone` when other carts share the
    transaction."""
    declined: dict[int, Declined] = {}
    indexed: list[tuple[int, _Cart]] = []
    for index, pending in enumerate(group):
        try:
            cart = await _prepared(conn, pending)
            lacking = await _lacks_seats(conn, cart)
        except DomainError as error:
            raise Refused(index, error) from None
        if not lacking:
            indexed.append((index, cart))
        elif cart.wrote:  # its new purchaser must not stay: the transaction rolls back
            raise Refused(index, NotAvailable(SEATS_MISSING))
        else:
            declined[index] = Declined(NotAvailable(SEATS_MISSING))
    carts = [cart for _, cart in indexed]
    new = [cart for cart in carts if cart.new]
    rows = [_order_row(c.seller, c.pending.request, c.pending.now, c.added) for c in new]
    for cart, order in zip(new, await _NEW_ORDERS.rows(conn, rows), strict=True):
        cart.order = order
        await audit.record(
            conn,
            institution_id=cart.seller.institution_id,
            action="sales.order.created",
            actor=cart.seller.actor,
            at=cart.pending.now,
            order_id=order.id,
        )
    # the holds of them all in one statement, their best seats claimed together, then each
    # one's places, then all their lines
    hold_ids = await new_holds(
        conn,
        [
            NewHold(
                cart.seller.institution_id,
                cart.seller.sales_channel_id,
                cart_key(cart.order.id),
                cart.order.expires_at,
                cart.pending.now,
            )
            for cart in carts
            for _ in cart.planned
        ],
    )
    claimed = await claim_best_seats(
        conn,
        institution_id=group[0].seller.institution_id,
        holds=[
            GroupHold(
                hold_id,
                plan.requests,
                cart.seller.sales_channel_id,
                sorted(cart.seller.contingent_ids),
                cart.seller.split_allowed,
                cart.seller.setup_version,
            )
            for (cart, plan), hold_id in zip(
                ((cart, plan) for cart in carts for plan in cart.planned), hold_ids, strict=True
            )
        ],
    )
    next_hold = iter(hold_ids)
    lines: list[dict[str, Any]] = []
    for index, cart in indexed:
        try:
            for plan in cart.planned:
                cart.holds.append(
                    await _hold(
                        conn,
                        cart.seller,
                        cart.order,
                        plan,
                        cart.pending.now,
                        next(next_hold),
                        lines,
                        claimed,
                    )
                )
        except DomainError as error:
            raise Refused(index, error) from None
        except LostRace:
            if len(indexed) == 1 or attempt_number() == 0:  # the transaction starts again
                raise
            # lost again: its seats keep going to other running transactions, and the group
            # is not run again for it (it would most likely lose them again), it runs alone
            raise RunAlone(index) from None
    await write_hold_lines(conn, lines)
    operations = iter(
        await _NEW_OPERATIONS.rows(
            conn,
            [
                {
                    "institution_id": cart.seller.institution_id,
                    "order_id": cart.order.id,
                    "kind": plan.kind.value,
                    "product_id": plan.product_id,
                    "hold_id": hold.id,
                    "state": MovementState.RESERVED.value,
                    "quantity": plan.quantity,
                    "created_at": cart.pending.now,
                }
                for cart in carts
                for plan, hold in zip(cart.planned, cart.holds, strict=True)
            ],
        )
    )
    movement_rows = []
    for cart in carts:
        for plan, hold in zip(cart.planned, cart.holds, strict=True):
            operation = next(operations)
            cart.operations.append(operation)
            movement_rows += await _movement_rows(
                conn, cart.seller, cart.order, plan, hold, operation.id, cart.pending.now
            )
    by_operation: dict[int, list[Any]] = {}
    for movement in await _NEW_MOVEMENTS.rows(conn, movement_rows):
        by_operation.setdefault(movement.operation_id, []).append(movement)
    results: list[tuple[int, list[int], Any] | Declined] = []
    for cart in carts:
        seller, now, order = cart.seller, cart.pending.now, cart.order
        cart.movements = [m for op in cart.operations for m in by_operation.get(op.id, [])]
        operation_ids = [int(op.id) for op in cart.operations]
        if cart.new:
            total = cart.added
        else:  # the order's (locked), plus the added movements
            total = int(order.total) + cart.added
            order = await _ORDER_TOTAL.one(conn, order_id=order.id, total=total, updated_at=now)
        await audit.record(
            conn,
            institution_id=seller.institution_id,
            action="sales.order.updated",
            actor=seller.actor,
            at=now,
            order_id=order.id,
            operations=operation_ids,
            total=total,
        )
        contents = OrderContents(cart.operations, cart.movements) if cart.new else None
        answer = cart.pending.answer
        rendered = None if answer is None else await answer(conn, order, operation_ids, contents)
        results.append((int(order.id), operation_ids, rendered))
    for index in sorted(declined):
        results.insert(index, declined[index])
    return results


async def abandon_movements(
    engine: AsyncEngine,
    seller: Seller,
    order_id: int,
    movement_ids: Sequence[int],
    *,
    now: datetime,
) -> None:
    """Take movements out of a running cart and release their places. Idempotent for
    movements already abandoned; refused for another order's movements."""
    if not movement_ids:
        raise InvalidOperation("name the movements to abandon")

    async def work(conn: AsyncConnection) -> None:
        order = await load_order(conn, seller, order_id, for_update=True)
        running(order, now)
        if order.pending_payments is not None:
            raise OrderClosed(f"order {order.id} awaits a card payment; reopen it first")
        await release_movements_in(conn, seller, order, movement_ids, now)

    await in_transaction(engine, work)


async def release_movements_in(
    conn: AsyncConnection, seller: Seller, order: Any, movement_ids: Sequence[int], now: datetime
) -> list[int]:
    """Abandon reserved movements of a running cart, inside the caller's transaction."""
    m, op = db.movement.c, db.operation.c
    rows = (
        await conn.execute(
            sa.select(m.id, m.state, m.stock_id, m.performance_seat_id, op.hold_id, m.operation_id)
            .join(db.operation, op.id == m.operation_id)
            .where(m.order_id == order.id, m.id.in_(sorted(set(movement_ids))))
        )
    ).all()
    if len(rows) != len(set(movement_ids)):
        raise UnknownMovement("some of these movements are not in this order")
    reserved = [r for r in rows if r.state == MovementState.RESERVED.value]
    if not reserved:
        return []
    await release_places_in(
        conn,
        institution_id=seller.institution_id,
        places=[(r.hold_id, r.stock_id, r.performance_seat_id) for r in reserved],
        now=now,
        actor=seller.actor,
    )
    ids = sorted(r.id for r in reserved)
    await conn.execute(
        sa.update(db.movement)
        .where(m.id.in_(ids))
        .values(state=MovementState.ABANDONED.value, cancelled_at=now)
    )
    await close_emptied_operations(
        conn,
        {r.operation_id for r in reserved},
        was=MovementState.RESERVED,
        becomes=MovementState.ABANDONED,
    )
    await refresh_total(conn, order.id, now)
    await audit.record(
        conn,
        institution_id=seller.institution_id,
        action="sales.movements.abandoned",
        actor=seller.actor,
        at=now,
        order_id=order.id,
        movements=ids,
    )
    return ids


async def expire_orders(engine: AsyncEngine, *, now: datetime, limit: int = 200) -> int:
    """Mark running carts past their expiry ABANDONNED and release their holds, one inventory
    transaction per cart. Returns how many. Safe to run in several processes at once: each
    order is claimed with ``... WHERE state = 'RUNNING'``."""
    o, m, op = db.sales_order.c, db.movement.c, db.operation.c
    async with read(engine) as conn:
        due = (
            await conn.execute(
                sa.select(o.id, o.institution_id)
                .where(o.state == OrderState.RUNNING.value, o.expires_at <= now)
                .order_by(o.id)
                .limit(limit)
            )
        ).all()

    async def expire(conn: AsyncConnection, order_id: int, institution_id: int) -> int:
        claimed = await conn.execute(
            sa.update(db.sales_order)
            .where(o.id == order_id, o.state == OrderState.RUNNING.value)
            .values(state=OrderState.ABANDONNED.value, updated_at=now)
        )
        if claimed.rowcount != 1:
            return 0
        pending = (
            await conn.execute(sa.select(o.pending_payments).where(o.id == order_id))
        ).scalar_one()
        if pending is not None:  # the buyer never came back from the payment page
            await cancel_payment(
                conn,
                institution_id=institution_id,
                intent_id=int(pending["intentId"]),
                now=now,
                actor="sweeper",
            )
            await accounts.release_held(
                conn,
                institution_id=institution_id,
                order_id=order_id,
                held=pending.get("held", []),
                reason="cart expired during the card payment",
                now=now,
            )
        holds = (
            await conn.execute(
                sa.select(op.hold_id).where(
                    op.order_id == order_id,
                    op.state == MovementState.RESERVED.value,
                    op.hold_id.is_not(None),
                )
            )
        ).all()
        for (hold_id,) in sorted(holds):
            await release_hold_in(
                conn, institution_id=institution_id, hold_id=hold_id, now=now, actor="sweeper"
            )
        for table, column in ((db.movement, m), (db.operation, op)):
            await conn.execute(
                sa.update(table)
                .where(column.order_id == order_id, column.state == MovementState.RESERVED.value)
                .values(state=MovementState.ABANDONED.value)
            )
        await audit.record(
            conn,
            institution_id=institution_id,
            action="sales.order.abandoned",
            actor="sweeper",
            at=now,
            order_id=order_id,
        )
        return 1

    expired = 0
    for order_id, institution_id in due:

        async def work(
            conn: AsyncConnection, order: int = order_id, i: int = institution_id
        ) -> int:
            return await expire(conn, order, i)

        expired += await in_transaction(engine, work)
    return expired
