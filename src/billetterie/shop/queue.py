"""The waiting room of a hot on-sale: fair admission to a product's pages at its opening.

A point of sale turns it on with its setup ``parameters``: ``queueRatePerMinute`` (visitors let
in per minute), ``queueMinutesBefore`` (how long before the opening the room opens; 30 by
default) and ``queueMinutesAfter`` (how long after the opening it stays; 60 by default). The
opening is the start of the product's sales period on the point of sale's channel.

- While the room is open, the product's page, its performances' pages and adding its places to
  a cart need an **admission**; without one the visitor is sent to ``/queue/<product>``, where
  they get a queue token (``bt_queue_<product>`` cookie, HttpOnly) and a row here.
- **Before the opening** every joiner draws a random number; at the opening they are let in in
  the order of their draws, one every ``60 / queueRatePerMinute`` seconds: arriving early buys
  no better place than arriving a minute before the opening.
- **After the opening** a joiner is given the next free slot at joining (never before now), so
  the room drains at the configured rate and lets newcomers straight in once it is empty. Two
  joining in the same instant may share a slot (the rate is a target, not a lock).
- **Admission** is a cookie ``bt_admit_<product>`` signed with the box office's key (HMAC-SHA256
  over the point of sale, the product, the token and the expiry), good for ``ADMISSION``; a
  forged, expired or other product's cookie counts as none.

The room decides who may see and choose; the sale path still re-checks availability in the
database whatever the room said.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from starlette.responses import Response

from billetterie.shared.clock import as_utc
from billetterie.shared.db import read, transaction
from billetterie.shop import offers
from billetterie.shop.errors import QueueRequired, UnknownShopProduct
from billetterie.shop.queue_db import queue_ticket
from billetterie.shop.web import Page, run

router = APIRouter(include_in_schema=False)
ADMISSION = timedelta(minutes=30)
TOKEN_COOKIE = "bt_queue_{}"
ADMISSION_COOKIE = "bt_admit_{}"
MAX_RATE = 100_000


@dataclass(frozen=True, slots=True)
class Room:
    product_id: int
    opening: datetime
    interval: timedelta  # between two admissions
    opens: datetime
    closes: datetime

    def open(self, now: datetime) -> bool:
        return self.opens <= now < self.closes


def _whole(parameters: dict[str, Any], name: str, default: int) -> int | None:
    """A whole-number parameter (its default when absent; None when it is not one)."""
    raw = parameters.get(name)
    if raw is None:
        return default
    text = str(raw).strip()
    return int(text) if text.isdigit() and int(text) <= MAX_RATE else None


def room_of(page: Page, product: dict[str, Any]) -> Room | None:
    """The product's waiting room on this point of sale, open or not; None when the point of
    sale has none (or its parameters are not whole numbers) or the product no opening."""
    parameters = page.context.point_of_sale.parameters or {}
    rate = _whole(parameters, "queueRatePerMinute", 0)
    before = _whole(parameters, "queueMinutesBefore", 30)
    after = _whole(parameters, "queueMinutesAfter", 60)
    if not rate or before is None or after is None:
        return None
    channel = page.context.sales_channel.id
    starts = [
        datetime.fromisoformat(p["start"])
        for p in product.get("salesPeriods") or []
        if p["salesChannelId"] == channel
    ]
    if not starts:
        return None
    opening = min(starts)
    return Room(
        product["id"],
        opening,
        timedelta(seconds=60 / rate),
        opening - timedelta(minutes=before),
        opening + timedelta(minutes=after),
    )


# --- admission cookies ---------------------------------------------------------------------


def _signature(key: str, pos_code: str, product_id: int, token: str, expires: int) -> str:
    message = f"{pos_code}|{product_id}|{token}|{expires}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def admission_value(key: str, pos_code: str, product_id: int, token: str, expires: int) -> str:
    return f"{token}.{expires}.{_signature(key, pos_code, product_id, token, expires)}"


def admitted(page: Page, room: Room) -> bool:
    value = page.request.cookies.get(ADMISSION_COOKIE.format(room.product_id), "")
    parts = value.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or len(value) > 200:
        return False
    token, expires, signature = parts[0], int(parts[1]), parts[2]
    expected = _signature(
        page.shop.runtime.token_key, page.shop.point.code, room.product_id, token, expires
    )
    return hmac.compare_digest(signature, expected) and page.now.timestamp() < expires


def room_open(page: Page, product: dict[str, Any]) -> bool:
    room = room_of(page, product)
    return room is not None and room.open(page.now)


async def gate(page: Page, product: dict[str, Any]) -> Response | None:
    """None when the visitor may see the product's pages now; else the way to its room."""
    room = room_of(page, product)
    if room is None or not room.open(page.now) or admitted(page, room):
        return None
    return page.redirect(f"{page.base}/queue/{room.product_id}")


def require_admission(page: Page, product: dict[str, Any]) -> None:
    """Refuse a cart form for a product whose room is open, without an admission."""
    room = room_of(page, product)
    if room is not None and room.open(page.now) and not admitted(page, room):
        raise QueueRequired("wait for your turn in the queue, then choose again")


# --- the queue -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Place:
    position: int  # visitors let in before this one (0: the first)
    admit_at: datetime


async def _ticket(page: Page, room: Room, token: str | None) -> Any | None:
    if token is None or not token.replace("-", "").replace("_", "").isalnum() or len(token) > 64:
        return None
    q = queue_ticket.c
    async with read(page.engine) as conn:
        return (
            await conn.execute(
                sa.select(queue_ticket).where(
                    q.token == token,
                    q.point_of_sale_id == page.shop.point.point_of_sale_id,
                    q.product_id == room.product_id,
                )
            )
        ).first()


async def join(page: Page, room: Room) -> str:
    """A new queue token: a random draw before the opening, the next slot after it."""
    q = queue_ticket.c
    token = secrets.token_urlsafe(24)
    now = page.now
    mine = (q.point_of_sale_id == page.shop.point.point_of_sale_id) & (
        q.product_id == room.product_id
    )
    async with transaction(page.engine) as conn:
        values: dict[str, Any] = {
            "institution_id": page.context.institution_id,
            "point_of_sale_id": page.shop.point.point_of_sale_id,
            "product_id": room.product_id,
            "token": token,
            "joined_at": now,
        }
        if now < room.opening:
            values["draw"] = secrets.randbits(62)
        else:
            early = (
                await conn.execute(
                    sa.select(sa.func.count()).where(mine, q.joined_at < room.opening)
                )
            ).scalar_one()
            last = (await conn.execute(sa.select(sa.func.max(q.admit_at)).where(mine))).scalar()
            slot = room.opening + room.interval * int(early)
            if last is not None:
                slot = max(slot, _aware(last) + room.interval)
            values["admit_at"] = max(now, slot)
        await conn.execute(sa.insert(queue_ticket).values(**values))
    return token


def _aware(value: Any) -> datetime:
    """An aggregate loses the column's type (SQLite answers text): back to aware UTC."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, datetime)
    return as_utc(moment)


async def place_of(page: Page, room: Room, ticket: Any) -> Place:
    if ticket.admit_at is not None:
        early = await _count(page, room, None)
        later = await _count(page, room, ticket.admit_at)
        return Place(early + later, _aware(ticket.admit_at))
    q = queue_ticket.c
    async with read(page.engine) as conn:
        ahead = (
            await conn.execute(
                sa.select(sa.func.count()).where(
                    q.point_of_sale_id == page.shop.point.point_of_sale_id,
                    q.product_id == room.product_id,
                    q.draw < ticket.draw,
                )
            )
        ).scalar_one()
    return Place(int(ahead), room.opening + room.interval * int(ahead))


async def _count(page: Page, room: Room, before: Any | None) -> int:
    """Early joiners (``before`` None), or later joiners admitted before ``before``."""
    q = queue_ticket.c
    mine = (q.point_of_sale_id == page.shop.point.point_of_sale_id) & (
        q.product_id == room.product_id
    )
    condition = q.draw.is_not(None) if before is None else q.admit_at < before
    async with read(page.engine) as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).where(mine, condition))).scalar_one()
        )


@router.get("/shop/{pos_code}/queue/{product_id}")
async def waiting_room(request: Request, pos_code: str, product_id: str) -> Response:
    async def handle(page: Page) -> Response:
        if not product_id.isdigit() or len(product_id) > 15:
            raise UnknownShopProduct("this product is not sold in this shop")
        document = await (await page.catalog()).document()
        found = offers.find_product(document, int(product_id))
        if found is None:
            raise UnknownShopProduct("this product is not sold in this shop")
        product = found[1]
        target = f"{page.base}/products/{product['id']}"
        room = room_of(page, product)
        if room is None or not room.open(page.now) or admitted(page, room):
            return page.redirect(target)
        cookie = TOKEN_COOKIE.format(room.product_id)
        ticket = await _ticket(page, room, request.cookies.get(cookie))
        if ticket is None:
            token = await join(page, room)
            page.shop.local_cookie(cookie, token)
            ticket = await _ticket(page, room, token)
            assert ticket is not None
        place = await place_of(page, room, ticket)
        if page.now >= place.admit_at:
            expires = int((page.now + ADMISSION).timestamp())
            key, code = page.shop.runtime.token_key, page.shop.point.code
            value = admission_value(key, code, room.product_id, ticket.token, expires)
            page.shop.local_cookie(
                ADMISSION_COOKIE.format(room.product_id),
                value,
                max_age=int(ADMISSION.total_seconds()),
            )
            return page.redirect(target)
        waiting = page.now < room.opening
        wait = place.admit_at - page.now
        return page.render(
            "queue.html",
            title=page.t("queue_title"),
            product=product,
            opening=room.opening,
            waiting=waiting,
            position=place.position + 1,
            minutes=max(1, round(wait.total_seconds() / 60)),
            admit_at=place.admit_at,
        )

    return await run(request, pos_code, handle)
