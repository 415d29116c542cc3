"""Who calls the partner surface."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Operator:
    """A virtual operator: bound to one point of sale, which fixes its institution, sales
    channel, catalog and payment methods."""

    id: int
    institution_id: int
    login: str
    partner: str
    point_of_sale_id: int
    calls_per_minute: int | None
