"""A small box office for sales tests: the ACME plan of :func:`tests.test_provision.rich_document`
with every payment method, a reseller credit limit, a season ticket and a membership, served over
the real app with its own clock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog import db as catalog
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import read
from tests.conftest import NOW, SECRET, Api, serve, set_secrets
from tests.factories import import_document, text
from tests.test_provision import Shop, load_shop, rich_document

RES_LIMIT = 200_000  # 200.00 EUR


def sales_document(code: str = "ACME") -> dict[str, Any]:
    data = rich_document(code)
    data["paymentMethods"] += [
        {"code": "VOUCHER", "name": text("Voucher"), "type": "VOUCHER"},
        {"code": "CREDIT", "name": text("Credit"), "type": "CREDIT"},
        {"code": "CASH", "name": text("Cash"), "type": "CASH"},
    ]
    web, res = (channel["pointsOfSale"][0] for channel in data["salesChannels"])
    web["paymentMethods"] = ["CARD", "VOUCHER", "CREDIT", "CASH"]
    web["maxSeatsPerPerformance"] = 8
    web["orderAbandonDelay"] = 20
    res["parameters"] = {"pendingAccountCreditLimit": "200.00"}
    res["orderAbandonDelay"] = 30
    period = data["products"][0]["salesPeriods"]
    data["products"] += [
        {
            "code": "SUB",
            "family": "SEASONTICKET",
            "season": "S1",
            "name": text("Subscription"),
            "vatCode": "VAT",
            "salesPeriods": period,
            "composed": {
                "performances": ["SH01", "SH02"],
                "prices": {"C1": {"FULL": "90.00"}, "C2": {"FULL": "50.00"}},
            },
        },
        {
            "code": "MEMB",
            "family": "MEMBERSHIP",
            "season": "S1",
            "name": text("Membership"),
            "vatCode": "VAT",
            "contactRequired": True,
            "salesPeriods": period[:1],
            "items": [
                {
                    "code": "CARDM",
                    "name": text("Card"),
                    "validityDays": 365,
                    "prices": {"FULL": "60.00"},
                }
            ],
        },
    ]
    return data


@dataclass
class Kit:
    api: Api
    engine: AsyncEngine
    clock: FixedClock
    shop: Shop
    tokens: dict[str, str]
    tariffs: dict[str, int]
    methods: dict[str, int]
    products: dict[str, int]
    points_of_sale: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)

    async def rpc(
        self,
        service: str,
        method: str,
        body: Any,
        *,
        who: str = "web",
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        response = await self.api.rpc(
            service, method, body, token=self.tokens[who], headers=headers
        )
        assert response.status_code in (200, 400, 503), response.text
        result: dict[str, Any] = response.json()
        return result

    async def cart(
        self,
        *operations: dict[str, Any],
        who: str = "web",
        order_id: int | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"singleEntryAttributionOperations": list(operations), **extra}
        if order_id is not None:
            body["orderId"] = order_id
        return await self.rpc("externalOrderFacade", "createOrUpdateOrder", body, who=who)

    def seats(
        self,
        category: str,
        quantity: int,
        *,
        performance: str = "SH01",
        tariff: str = "FULL",
        seat_ids: list[int] | None = None,
    ) -> dict[str, Any]:
        attribution: dict[str, Any] = {
            "performanceId": self.shop.performances[performance],
            "seatCategoryId": self.shop.categories[category],
            "audienceSubCategoryId": self.tariffs[tariff],
            "quantity": quantity,
        }
        if seat_ids:
            attribution["seatIds"] = seat_ids
        return {"operationAttributions": [attribution]}

    async def close(
        self,
        order_id: int,
        payments: list[tuple[str, int]] | None = None,
        *,
        who: str = "web",
        voucher: str | None = None,
        contact: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "orderId": order_id,
            "payments": [
                {
                    "paymentMethodId": self.methods[m],
                    "amount": a,
                    **({"voucherCode": voucher} if m == "VOUCHER" and voucher else {}),
                }
                for m, a in (payments or [])
            ],
            **extra,
        }
        if contact:
            body["purchaserInfo"] = {"contactReference": contact}
        return await self.rpc("externalOrderService", "closeOrder", body, who=who, headers=headers)

    def later(self, **delta: float) -> None:
        self.clock.set(self.clock.now() + timedelta(**delta))


async def _codes(engine: AsyncEngine, institution_id: int, table: sa.Table) -> dict[str, int]:
    async with read(engine) as conn:
        rows = await conn.execute(
            sa.select(table.c.code, table.c.id).where(table.c.institution_id == institution_id)
        )
        return {r.code: r.id for r in rows}


@contextlib.asynccontextmanager
async def open_kit(
    engine: AsyncEngine,
    url: str,
    tmp: Path,
    *,
    now: datetime = NOW,
    code: str = "ACME",
    **document: Any,
) -> AsyncIterator[Kit]:
    await import_document(engine, sales_document(code) | document)
    await set_secrets(
        engine, code, [(f"{code}_WEB", f"{code}WEB", "web"), (f"{code}_RES", f"{code}RES", "res")]
    )
    clock = FixedClock(now)
    shop = await load_shop(engine, code)
    async with serve(url, tmp, clock, background_tasks=False) as api:
        yield Kit(
            api=api,
            engine=engine,
            clock=clock,
            shop=shop,
            tokens={
                "web": await api.token(f"{code}_WEB", "web", SECRET),
                "res": await api.token(f"{code}_RES", "res", SECRET),
            },
            tariffs=await _codes(engine, shop.institution_id, catalog.audience_sub_category),
            methods=await _codes(engine, shop.institution_id, catalog.payment_method),
            products=await _codes(engine, shop.institution_id, catalog.product),
            points_of_sale=await _codes(engine, shop.institution_id, catalog.point_of_sale),
        )
