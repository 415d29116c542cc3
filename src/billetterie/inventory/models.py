"""Inventory vocabulary: seat and hold states, availability levels."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any


class SeatState(StrEnum):
    FREE = "FREE"
    HELD = "HELD"
    SOLD = "SOLD"
    BLOCKED = "BLOCKED"
    KILLED = "KILLED"


class HoldState(StrEnum):
    ACTIVE = "ACTIVE"
    CONFIRMED = "CONFIRMED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


class Level(IntEnum):
    """S-360's colours: 1 green "available", 2 orange "few left", 3 red "sold out"."""

    GOOD = 1
    LIMITED = 2
    NONE = 3


@dataclass(frozen=True, slots=True)
class Counts:
    """Places of one stock or a sum of stocks. ``capacity`` None means unlimited."""

    capacity: int | None
    held: int
    sold: int
    blocked: int = 0

    @property
    def free(self) -> int | None:
        if self.capacity is None:
            return None
        return max(self.capacity - self.held - self.sold - self.blocked, 0)

    def __add__(self, other: Counts) -> Counts:
        capacity = (
            None
            if self.capacity is None or other.capacity is None
            else self.capacity + other.capacity
        )
        return Counts(
            capacity, self.held + other.held, self.sold + other.sold, self.blocked + other.blocked
        )


ZERO = Counts(0, 0, 0, 0)


def level(counts: Counts, alert_ratio: int) -> Level:
    """Red when nothing is free; orange when the free share is under ``alert_ratio`` percent of
    the sellable capacity (capacity less blocked places); green otherwise. Unlimited is green."""
    free = counts.free
    if free is None:
        return Level.GOOD
    if free <= 0:
        return Level.NONE
    sellable = (counts.capacity or 0) - counts.blocked
    if sellable > 0 and free * 100 < alert_ratio * sellable:
        return Level.LIMITED
    return Level.GOOD


@dataclass(frozen=True)
class HeldPlace:
    """One place of a hold: a seat (``seat_id`` the performance seat) or one unit of a counter."""

    hold_id: int
    stock_id: int
    product_id: int
    performance_id: int | None
    seat_category_id: int | None
    product_item_id: int | None
    timeslot_id: int | None
    contingent_id: int | None
    seat_id: int | None = None
    block_id: int | None = None
    row: str | None = None
    number: str | None = None

    @classmethod
    def of_stock(cls, hold_id: int, stock: Any, **seat: Any) -> HeldPlace:
        """A place of ``stock`` (a stock row) held by ``hold_id``; ``seat``: its seat fields."""
        return cls(
            hold_id=hold_id,
            stock_id=stock.id,
            product_id=stock.product_id,
            performance_id=stock.performance_id,
            seat_category_id=stock.seat_category_id,
            product_item_id=stock.product_item_id,
            timeslot_id=stock.timeslot_id,
            contingent_id=stock.contingent_id,
            **seat,
        )
