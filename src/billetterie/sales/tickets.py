"""Tickets after the sale: their holder, printing, and control at the gate.

A ticket is NOT_PRINTED when issued; it becomes PRINTED when its PDF is delivered or an
external printing system (the wallet) takes it, CONTROLLED when scanned at the gate, CANCELLED
when its movement is cancelled and INVALIDATED when it is replaced. Only these moves exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.sales import db
from billetterie.sales.carts import load_order
from billetterie.sales.errors import InvalidOperation, UnknownMovement
from billetterie.sales.models import MovementState, Seller, TicketState
from billetterie.shared import audit
from billetterie.shared.db import transaction

HOLDER_FIELDS = ("contactNumber", "firstName", "lastName", "email")


async def set_holder(
    engine: AsyncEngine,
    seller: Seller,
    order_id: int,
    movement_id: int,
    holder: dict[str, Any],
    *,
    now: datetime,
) -> None:
    """Name a movement's ticket holder: a contact number, or a first and last name."""
    holder = {k: str(v).strip() for k, v in holder.items() if k in HOLDER_FIELDS and v}
    if not holder.get("contactNumber") and not (holder.get("firstName") and holder.get("lastName")):
        raise InvalidOperation("a holder is a contactNumber, or a firstName and a lastName")
    if "email" in holder and "@" not in holder["email"]:
        raise InvalidOperation("the holder's email is not an email address")
    m = db.movement.c
    async with transaction(engine) as conn:
        order = await load_order(conn, seller, order_id)
        updated = await conn.execute(
            sa.update(db.movement)
            .where(
                m.id == movement_id,
                m.order_id == order.id,
                m.state.in_([MovementState.RESERVED.value, MovementState.SOLD.value]),
            )
            .values(holder=holder)
        )
        if updated.rowcount != 1:
            raise UnknownMovement(f"no valid movement {movement_id} in order {order_id}")
        await audit.record(
            conn,
            institution_id=seller.institution_id,
            action="sales.movement.holder_set",
            actor=seller.actor,
            at=now,
            order_id=order_id,
            movement_id=movement_id,
        )


PRINTABLE = (TicketState.NOT_PRINTED.value,)
