"""Small setup documents built in code, for tests that write."""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog.services import ImportResult
from billetterie.catalog.setupfile import parse_document
from billetterie.setup import import_institution
from tests.conftest import NOW


def text(en: str) -> dict[str, str]:
    return {"en": en, "fr": en + " (fr)"}


def setup_document(
    code: str = "ACME", *, performances: int = 2, **overrides: Any
) -> dict[str, Any]:
    """A small institution: one channel per kind, one hall of 2 blocks x 3 rows x 10 seats,
    one event with ``performances`` performances, one open pass."""
    doc: dict[str, Any] = {
        "institution": {"code": code, "name": text(f"{code} institution"), "currency": "EUR"},
        "organization": {
            "code": code,
            "name": text(f"{code} organization"),
            "timeZone": "Europe/Zurich",
            "mainLanguage": "en",
            "languages": ["en", "fr"],
        },
        "paymentMethods": [
            {"code": "CARD", "name": text("Card"), "type": "CARD"},
            {"code": "PENDING", "name": text("Pending account"), "type": "PENDING_ACCOUNT"},
        ],
        "salesChannels": [
            {
                "code": "WEB",
                "name": text("Web"),
                "type": "INTERNET_B2C",
                "pointsOfSale": [
                    {
                        "code": f"{code}WEB",
                        "number": 1,
                        "name": text("Web shop"),
                        "paymentMethods": ["CARD"],
                    }
                ],
            },
            {
                "code": "RES",
                "name": text("Reseller"),
                "type": "RESELLER",
                "pointsOfSale": [
                    {
                        "code": f"{code}RES",
                        "number": 2,
                        "name": text("Reseller"),
                        "paymentMethods": ["PENDING"],
                    }
                ],
            },
        ],
        "operators": [
            {"login": f"{code}_WEB", "partner": "web", "pointOfSale": f"{code}WEB"},
            {"login": f"{code}_RES", "partner": "res", "pointOfSale": f"{code}RES"},
        ],
        "vatCodes": [{"code": "VAT", "name": text("VAT"), "rate": 8100, "country": "CH"}],
        "seasons": [
            {
                "code": "S1",
                "name": text("Season 1"),
                "start": "2026-09-01T00:00:00+02:00",
                "end": "2027-08-31T23:59:00+02:00",
            }
        ],
        "audienceCategories": [
            {
                "code": "IND",
                "season": "S1",
                "name": text("Individuals"),
                "tariffs": [
                    {"code": "FULL", "name": text("Full"), "kind": "FULL"},
                    {"code": "RED", "name": text("Reduced"), "kind": "REDUCED"},
                ],
            }
        ],
        "venues": [
            {
                "code": "HALL",
                "name": text("Hall"),
                "address": {"zip": "1000", "city": "Lausanne", "countryCode": "CH"},
                "spaces": [
                    {
                        "code": "MAIN",
                        "name": text("Main"),
                        "configurations": [
                            {
                                "code": "PLAN",
                                "name": text("Plan"),
                                "stage": {"x": 5, "y": -2},
                                "areas": [
                                    {
                                        "code": "FLOOR",
                                        "name": text("Floor"),
                                        "blocks": [
                                            {"code": "A", "rows": "1-3", "seats": "1-10"},
                                            {
                                                "code": "B",
                                                "rows": "1-3",
                                                "seats": "1-10",
                                                "origin": {"x": 12, "y": 0},
                                            },
                                        ],
                                    }
                                ],
                                "logicalConfigurations": [
                                    {
                                        "code": "FULL",
                                        "name": text("Full"),
                                        "seatCategories": [
                                            {
                                                "code": "C1",
                                                "name": text("Cat 1"),
                                                "seats": ["FLOOR/A"],
                                            },
                                            {
                                                "code": "C2",
                                                "name": text("Cat 2"),
                                                "seats": ["FLOOR/B"],
                                            },
                                        ],
                                    }
                                ],
                            }
                        ],
                    }
                ],
            }
        ],
        "contingents": [{"code": "RESQ", "name": text("Reseller quota"), "salesChannels": ["RES"]}],
        "products": [
            {
                "code": "SHOW",
                "family": "SINGLE_ENTRY",
                "season": "S1",
                "name": text("Show"),
                "vatCode": "VAT",
                "salesPeriods": [
                    {
                        "salesChannel": "WEB",
                        "start": "2026-09-01T00:00:00+02:00",
                        "end": "2027-06-30T00:00:00+02:00",
                    },
                    {
                        "salesChannel": "RES",
                        "start": "2026-09-01T00:00:00+02:00",
                        "end": "2027-06-30T00:00:00+02:00",
                    },
                ],
                "event": {
                    "configuration": "FULL",
                    "duration": "2h",
                    "prices": {
                        "C1": {"FULL": "50.00", "RED": "40.00"},
                        "C2": {"FULL": "30.00", "RED": "25.50"},
                    },
                    "allocations": [{"contingent": "RESQ", "seatCategory": "C2", "quantity": 5}],
                    "performances": [
                        {"code": f"SH{i:02d}", "start": f"2027-01-{i + 1:02d}T20:00:00+01:00"}
                        for i in range(1, performances + 1)
                    ],
                },
            },
            {
                "code": "PASS",
                "family": "PASS",
                "subType": "OPEN",
                "season": "S1",
                "name": text("Pass"),
                "vatCode": "VAT",
                "salesPeriods": [
                    {
                        "salesChannel": "WEB",
                        "start": "2026-09-01T00:00:00+02:00",
                        "end": "2027-06-30T00:00:00+02:00",
                    }
                ],
                "items": [{"code": "DAY", "name": text("Day"), "prices": {"FULL": "12.00"}}],
            },
        ],
    }
    doc.update(overrides)
    return copy.deepcopy(doc)


async def import_document(engine: AsyncEngine, data: dict[str, Any]) -> ImportResult:
    return await import_institution(engine, parse_document(data), now=NOW, actor="test")
