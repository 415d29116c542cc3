"""Benchmark of the detailed catalog: build it ahead, serve it from memory, over real HTTP.

The box office answers ``getCatalogDetailed`` from a catalog built when the setup changes
(``catalog.services.rebuild_catalogs`` stores one JSON snapshot per channel and scope) and kept
in each server process, already gzipped (``compat.catalog_cache``). This script checks that the
design holds at a realistic size and measures what it buys:

* **setup**: an institution ``BENCH`` generated in code (1,000 products x 10 performances, each
  priced for 5 tariffs x 4 seat categories = 200,000 prices, names in en/fr/de), validated by
  ``parse_document`` and imported with ``import_setup`` into a fresh database (a SQLite file in a
  temporary directory, or a new PostgreSQL database created on ``--database-url`` and dropped
  afterwards);
* **cold build** (target <= 2 s): ``rebuild_catalogs`` forced to render and write every snapshot
  (the rows are deleted first), with the load / render / serialize split timed on
  ``CatalogBuilder`` directly;
* **served** (targets: warm p50 <= 50 ms, 304 <= 5 ms): the real server (``billetterie serve``)
  in a subprocess, called through one keep-alive ``httpx`` client with an operator token: the
  first ``getCatalogDetailed`` (the process loads and gzips the snapshot), warm latencies with
  ``Accept-Encoding: gzip`` and ``identity`` (to the last byte of the body; every answer's
  ``requestId`` and ``statusCode`` are checked), the GET mirror's ``If-None-Match`` 304,
  ``getLastSetupUpdate``, the response sizes and the server's RSS;
* **baseline**: what an answer would cost without the prebuilt cache (load + render + serialize
  + gzip in process, p50 over ``--baseline-runs``), and the speed-up of the served path.

It is a benchmark, not a test: it exits 0 when a target is missed and prints the misses; it
exits 1 only when the run itself fails (server not starting, a wrong answer).

    .venv/bin/python bench/catalog.py
    .venv/bin/python bench/catalog.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import gzip
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.catalog import db as catalog_db
from billetterie.catalog.builder import CatalogBuilder
from billetterie.catalog.models import CatalogScope
from billetterie.catalog.services import import_setup, rebuild_catalogs
from billetterie.catalog.setupfile import SetupDocument, parse_document
from billetterie.compat.catalog_cache import HEAD_PREFIX, HEAD_SUFFIX, CachedCatalog
from billetterie.config import normalize_database_url
from billetterie.identity.services import hash_secret
from billetterie.migrations import upgrade
from billetterie.shared.db import create_engine, read, transaction

INSTITUTION = "BENCH"
CHANNEL = "INTERNET"
POINT_OF_SALE = "BENCHWEB"
OPERATOR = "BENCH_WEB"
PARTNER = "bench"
SEASON = "S2627"
SEAT_CATEGORIES = ("CAT1", "CAT2", "CAT3", "CAT4")
TARIFFS = ("FULL", "RED", "STUDENT", "CHILD", "INVITE")

AUTH_PATH = "/tnai/backend-apis/v1/auth"
RPC_PATH = "/tnseb/backend-apis/catalogService/v1_33/"
MIRROR_PATH = "/api/v1/catalog"

TARGET_WARM_P50_MS = 50.0
TARGET_NOT_MODIFIED_MS = 5.0
TARGET_COLD_BUILD_S = 2.0

console = Console(width=None if sys.stdout.isatty() else 120)


class BenchError(Exception):
    """The run itself failed (not a missed target)."""


# --- the setup document ---------------------------------------------------------------------

GENRES = (  # theme code, sub-theme code, names (en, fr, de)
    ("MUSIC", "CLASSICAL", ("Symphony", "Symphonie", "Sinfonie")),
    ("MUSIC", "JAZZ", ("Jazz night", "Soirée jazz", "Jazzabend")),
    ("STAGE", "DRAMA", ("Drama", "Drame", "Schauspiel")),
    ("STAGE", "DANCE", ("Ballet", "Ballet", "Ballett")),
    ("STAGE", "OPERA", ("Opera", "Opéra", "Oper")),
    ("FAMILY", "KIDS", ("Family show", "Spectacle familial", "Familienvorstellung")),
)
THEMES = {
    "MUSIC": (
        ("Music", "Musique", "Musik"),
        {"CLASSICAL": ("Classical", "Classique", "Klassik"), "JAZZ": ("Jazz", "Jazz", "Jazz")},
    ),
    "STAGE": (
        ("Stage", "Scène", "Bühne"),
        {
            "DRAMA": ("Drama", "Théâtre", "Theater"),
            "DANCE": ("Dance", "Danse", "Tanz"),
            "OPERA": ("Opera", "Opéra", "Oper"),
        },
    ),
    "FAMILY": (("Family", "Famille", "Familie"), {"KIDS": ("Children", "Enfants", "Kinder")}),
}
VENUES = (
    ("Grand Hall", "Grande salle", "Großer Saal"),
    ("Lausanne", "1003", "Avenue du Théâtre 12"),
)


def text(en: str, fr: str, de: str) -> dict[str, str]:
    return {"en": en, "fr": fr, "de": de}


def build_document(products: int, performances_per_product: int) -> dict[str, Any]:
    """The BENCH institution as a setup document (a plain dict, as if read from YAML)."""
    season_start = datetime(2026, 9, 1)
    themes = [
        {
            "code": code,
            "name": text(*names),
            "subThemes": [
                {"code": sub, "name": text(*sub_names)} for sub, sub_names in subs.items()
            ],
        }
        for code, (names, subs) in THEMES.items()
    ]
    blocks = [
        {"code": f"B{i + 1}", "rows": "1-5", "seats": "1-20", "origin": {"x": 22 * i, "y": 0}}
        for i in range(len(SEAT_CATEGORIES))
    ]
    seat_categories = [
        {
            "code": code,
            "name": text(f"Category {i + 1}", f"Catégorie {i + 1}", f"Kategorie {i + 1}"),
            "seats": [f"PARTERRE/B{i + 1}"],
        }
        for i, code in enumerate(SEAT_CATEGORIES)
    ]
    product_specs = []
    for p in range(products):
        theme, sub_theme, (en, fr, de) = GENRES[p % len(GENRES)]
        number = p + 1
        base = 20 + (p % 9) * 5  # the full price of category 1, in EUR
        grid = {
            cat: {
                tariff: "0.00"
                if tariff == "INVITE"
                else f"{max(5, base - c * 8 - t * 4)}.{(p * 7) % 100:02d}"
                for t, tariff in enumerate(TARIFFS)
            }
            for c, cat in enumerate(SEAT_CATEGORIES)
        }
        performances = []
        for f in range(performances_per_product):
            day = season_start + timedelta(days=(p * 7 + f * 31) % 330)
            start = day.replace(hour=19 if f % 3 else 15, minute=30 if f % 2 else 0)
            performances.append(
                {
                    "code": f"P{number:05d}-{f + 1:03d}",
                    "start": start.isoformat(),  # local time of the organization
                    "name": text(
                        f"{en} no. {number} - {start:%d %b %Y}",
                        f"{fr} n° {number} - {start:%d/%m/%Y}",
                        f"{de} Nr. {number} - {start:%d.%m.%Y}",
                    ),
                }
            )
        product_specs.append(
            {
                "code": f"P{number:05d}",
                "family": "SINGLE_ENTRY",
                "season": SEASON,
                "name": text(f"{en} no. {number}", f"{fr} n° {number}", f"{de} Nr. {number}"),
                "description": text(
                    f"{en} no. {number}: an evening of the season's programme, with the "
                    "resident ensemble and guest artists. Doors open 45 minutes before.",
                    f"{fr} n° {number} : une soirée de la saison, avec l'ensemble en résidence "
                    "et des artistes invités. Ouverture des portes 45 minutes avant.",
                    f"{de} Nr. {number}: ein Abend des Saisonprogramms mit dem Hausensemble und "
                    "Gastkünstlern. Einlass 45 Minuten vor Beginn.",
                ),
                "vatCode": "VAT",
                "theme": theme,
                "subTheme": sub_theme,
                "externalUrl": f"https://bench.example/shows/p{number:05d}",
                "salesPeriods": [
                    {
                        "salesChannel": CHANNEL,
                        "start": "2026-06-01T10:00:00",
                        "end": "2027-08-31T23:00:00",
                    }
                ],
                "event": {
                    "configuration": "STANDARD",
                    "duration": "2h30" if p % 2 else "1h45",
                    "prices": grid,
                    "performances": performances,
                },
            }
        )
    (venue_names, (city, zip_code, street)) = VENUES
    return {
        "institution": {
            "code": INSTITUTION,
            "name": text("Bench Theatre", "Théâtre Bench", "Theater Bench"),
            "currency": "CHF",
        },
        "organization": {
            "code": INSTITUTION,
            "name": text(
                "Bench Theatre Foundation", "Fondation du Théâtre Bench", "Stiftung Theater Bench"
            ),
            "timeZone": "Europe/Zurich",
            "mainLanguage": "en",
            "languages": ["en", "fr", "de"],
        },
        "paymentMethods": [
            {"code": "CARD", "name": text("Card", "Carte", "Karte"), "type": "CARD"}
        ],
        "salesChannels": [
            {
                "code": CHANNEL,
                "name": text("Web shop", "Billetterie en ligne", "Webshop"),
                "type": "INTERNET_B2C",
                "pointsOfSale": [
                    {
                        "code": POINT_OF_SALE,
                        "number": 1,
                        "name": text("Website", "Site web", "Website"),
                        "paymentMethods": ["CARD"],
                    }
                ],
            }
        ],
        "operators": [{"login": OPERATOR, "partner": PARTNER, "pointOfSale": POINT_OF_SALE}],
        "vatCodes": [
            {
                "code": "VAT",
                "name": text("VAT 8.1%", "TVA 8,1 %", "MwSt. 8,1 %"),
                "rate": 8100,
                "country": "CH",
            }
        ],
        "seasons": [
            {
                "code": SEASON,
                "name": text("Season 2026/27", "Saison 2026-2027", "Spielzeit 2026/27"),
                "start": "2026-09-01T00:00:00",
                "end": "2027-08-31T23:59:00",
            }
        ],
        "audienceCategories": [
            {
                "code": "PUBLIC",
                "season": SEASON,
                "name": text("General public", "Tout public", "Publikum"),
                "tariffs": [
                    {
                        "code": "FULL",
                        "name": text("Full price", "Plein tarif", "Vollpreis"),
                        "kind": "FULL",
                    },
                    {
                        "code": "RED",
                        "name": text("Reduced", "Réduit", "Ermäßigt"),
                        "kind": "REDUCED",
                    },
                    {
                        "code": "STUDENT",
                        "name": text("Student", "Étudiant", "Student"),
                        "kind": "REDUCED",
                    },
                    {
                        "code": "CHILD",
                        "name": text("Child", "Enfant", "Kind"),
                        "kind": "REDUCED",
                        "requires": ["FULL"],
                    },
                ],
            },
            {
                "code": "GUESTS",
                "season": SEASON,
                "name": text("Guests", "Invités", "Gäste"),
                "mainCategory": "INVITED",
                "secondaryCategory": "FREE",
                "tariffs": [
                    {
                        "code": "INVITE",
                        "name": text("Invitation", "Invitation", "Einladung"),
                        "kind": "FREE",
                    }
                ],
            },
        ],
        "themes": themes,
        "venues": [
            {
                "code": "THEATRE",
                "name": text(*venue_names),
                "address": {"street": street, "zip": zip_code, "city": city, "countryCode": "CH"},
                "spaces": [
                    {
                        "code": "HALL",
                        "name": text(*venue_names),
                        "configurations": [
                            {
                                "code": "PLAN",
                                "name": text("Seated", "Assis", "Bestuhlt"),
                                "stage": {"x": 43, "y": -3},
                                "areas": [
                                    {
                                        "code": "PARTERRE",
                                        "name": text("Stalls", "Parterre", "Parkett"),
                                        "blocks": blocks,
                                    }
                                ],
                                "logicalConfigurations": [
                                    {
                                        "code": "STANDARD",
                                        "name": text("Standard", "Standard", "Standard"),
                                        "seatCategories": seat_categories,
                                    }
                                ],
                            }
                        ],
                    }
                ],
            }
        ],
        "products": product_specs,
    }


# --- figures ----------------------------------------------------------------------------------


@dataclass
class Figure:
    key: str
    label: str
    value: float
    unit: str
    target: float | None = None  # an upper bound

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.value <= self.target


@dataclass
class Report:
    sections: dict[str, list[Figure]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        section: str,
        key: str,
        label: str,
        value: float,
        unit: str,
        target: float | None = None,
    ) -> None:
        self.sections.setdefault(section, []).append(Figure(key, label, value, unit, target))

    @property
    def figures(self) -> list[Figure]:
        return [f for figures in self.sections.values() for f in figures]

    def failures(self) -> list[Figure]:
        return [f for f in self.figures if f.passed is False]

    def as_json(self) -> dict[str, Any]:
        return {
            "info": self.info,
            "figures": {
                f.key: {
                    "label": f.label,
                    "value": f.value,
                    "unit": f.unit,
                    "target": f.target,
                    "passed": f.passed,
                }
                for f in self.figures
            },
            "failures": [f.key for f in self.failures()],
        }


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float) -> float:
    return seconds * 1000


def mb(size: float) -> float:
    return size / 1_000_000


@contextlib.contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """``with stopwatch() as elapsed: ...``; ``elapsed()`` is the duration in seconds."""
    start = time.perf_counter()
    end: float | None = None

    def elapsed() -> float:
        return (end if end is not None else time.perf_counter()) - start

    try:
        yield elapsed
    finally:
        end = time.perf_counter()


# --- database ---------------------------------------------------------------------------------


@dataclass
class Database:
    url: str  # SQLAlchemy async URL
    backend: str
    admin_url: str | None = None  # PostgreSQL: where the bench database was created
    name: str | None = None


def _asyncpg_dsn(url: str) -> str:
    return (
        make_url(normalize_database_url(url))
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


async def _create_postgres(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(admin_url), timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_postgres(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(admin_url), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def create_database(database_url: str | None, tmp: Path) -> Database:
    if database_url is None:
        return Database(f"sqlite+aiosqlite:///{tmp / 'bench.db'}", "sqlite")
    admin = normalize_database_url(database_url)
    if not admin.startswith("postgresql"):
        raise BenchError("--database-url must be a PostgreSQL URL (SQLite is the default)")
    name = f"billetterie_bench_{secrets.token_hex(4)}"
    asyncio.run(_create_postgres(admin, name))
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    return Database(url, "postgresql", admin, name)


def drop_database(database: Database) -> None:
    if database.admin_url is not None and database.name is not None:
        asyncio.run(_drop_postgres(database.admin_url, database.name))


# --- in process: import, cold build, baseline -------------------------------------------------


async def _channel_id(engine: AsyncEngine, institution_id: int) -> int:
    c = catalog_db.sales_channel.c
    async with read(engine) as conn:
        return int(
            (
                await conn.execute(
                    sa.select(c.id).where(c.institution_id == institution_id, c.code == CHANNEL)
                )
            ).scalar_one()
        )


async def import_phase(url: str, document: SetupDocument, report: Report) -> tuple[int, int, int]:
    """Import the document; returns (institution id, sales channel id, setup version)."""
    engine = create_engine(url)
    try:
        with stopwatch() as elapsed:
            result = await import_setup(
                engine, document, now=datetime.now(UTC), actor="bench", hash_secret=hash_secret
            )
        report.add(
            "setup", "import_s", "import_setup (rows + snapshots, one transaction)", elapsed(), "s"
        )
        report.info["import_changes"] = result.changes
        channel_id = await _channel_id(engine, result.institution_id)
        return result.institution_id, channel_id, result.setup_version
    finally:
        await engine.dispose()


async def build_phase(
    url: str, institution_id: int, channel_id: int, version: int, runs: int, report: Report
) -> None:
    """The cold build (forced ``rebuild_catalogs``), its split, and the per-request baseline."""
    engine = create_engine(url)
    try:
        # cold build: the snapshots are deleted so rebuild_catalogs renders and writes them all
        rebuilds = []
        s = catalog_db.catalog_snapshot.c
        for _ in range(runs):
            async with transaction(engine) as conn:
                await conn.execute(
                    sa.delete(catalog_db.catalog_snapshot).where(s.institution_id == institution_id)
                )
            with stopwatch() as elapsed:
                async with transaction(engine) as conn:
                    changed = await rebuild_catalogs(
                        conn, institution_id, version, datetime.now(UTC)
                    )
            rebuilds.append(elapsed())
            if changed != 2:
                raise BenchError(f"rebuild_catalogs wrote {changed} snapshot(s), expected 2")
        report.add(
            "cold build",
            "cold_build_s",
            f"rebuild_catalogs forced: 1 channel x 2 scopes + writes (p50 of {runs})",
            percentile(rebuilds, 50),
            "s",
            TARGET_COLD_BUILD_S,
        )
        report.add(
            "cold build", "cold_build_first_s", "  first forced rebuild_catalogs", rebuilds[0], "s"
        )

        # the same work step by step for one scope, as an answer built per request would do it
        loads, renders, serializes, gzips, totals, plain_totals = [], [], [], [], [], []
        for run in range(runs):
            with stopwatch() as total:
                builder = CatalogBuilder()
                async with read(engine) as conn:
                    with stopwatch() as elapsed:
                        await builder.load(conn, institution_id)
                    loads.append(elapsed())
                with stopwatch() as elapsed:
                    catalog = builder.render(channel_id, CatalogScope.STANDARD)
                renders.append(elapsed())
                with stopwatch() as elapsed:
                    # the very bytes the server would send
                    tail = CachedCatalog.tail(f"baseline-{run}")
                    body = HEAD_PREFIX + orjson.dumps(catalog) + HEAD_SUFFIX + tail
                serializes.append(elapsed())
                plain_totals.append(total())
                with stopwatch() as elapsed:
                    gzip.compress(body, compresslevel=6, mtime=0)
                gzips.append(elapsed())
            totals.append(total())
            del builder, catalog, body
        report.add(
            "cold build", "build_load_s", "  CatalogBuilder.load (p50)", percentile(loads, 50), "s"
        )
        report.add(
            "cold build",
            "build_render_s",
            "  CatalogBuilder.render, 1 scope (p50)",
            percentile(renders, 50),
            "s",
        )
        report.add(
            "cold build",
            "build_serialize_s",
            "  orjson.dumps, 1 scope (p50)",
            percentile(serializes, 50),
            "s",
        )
        report.add(
            "baseline",
            "baseline_gzip_p50_ms",
            f"no cache: load + render + dumps + gzip (p50 of {runs})",
            ms(percentile(totals, 50)),
            "ms",
        )
        report.add(
            "baseline",
            "baseline_identity_p50_ms",
            "no cache, identity: load + render + dumps (p50)",
            ms(percentile(plain_totals, 50)),
            "ms",
        )
        report.add(
            "baseline",
            "baseline_gzip_only_ms",
            "  of which gzip level 6 (p50)",
            ms(percentile(gzips, 50)),
            "ms",
        )
    finally:
        await engine.dispose()


# --- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def billetterie_command() -> str:
    command = Path(sys.executable).parent / "billetterie"
    if not command.exists():
        found = shutil.which("billetterie")
        if found is None:
            raise BenchError("the billetterie command is not installed next to this Python")
        return found
    return str(command)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def rss(self) -> int:
        """Resident memory of the server process and its children, in bytes."""
        process = psutil.Process(self.process.pid)
        return int(sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]))

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process and its children."""
        process = psutil.Process(self.process.pid)
        times = [p.cpu_times() for p in [process, *process.children(recursive=True)]]
        return sum(t.user + t.system for t in times)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def server_env(url: str, var_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BILLETTERIE_DATABASE_URL=url,
        BILLETTERIE_VAR_DIR=str(var_dir),
        BILLETTERIE_JWT_SECRET=secrets.token_urlsafe(48),
    )
    return env


def create_operator(env: dict[str, str], secret: str) -> None:
    completed = subprocess.run(
        [
            billetterie_command(),
            "operators",
            "create",
            OPERATOR,
            "--point-of-sale",
            POINT_OF_SALE,
            "--partner",
            PARTNER,
            "--secret",
            secret,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        raise BenchError(
            f"billetterie operators create failed:\n{completed.stdout}{completed.stderr}"
        )


def start_server(env: dict[str, str], log: Path, timeout: float = 90.0) -> Server:
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [billetterie_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(
                    f"the server exited with {process.returncode}:\n{server.log_tail()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get("/healthz").status_code == 200:
                    return server
            time.sleep(0.1)
    server.stop()
    raise BenchError(
        f"the server did not answer /healthz within {timeout:.0f} s:\n{server.log_tail()}"
    )


# --- over HTTP --------------------------------------------------------------------------------


def timed_post(
    client: httpx.Client, path: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[float, httpx.Response, bytes]:
    """POST and read the whole body as sent (still gzipped); seconds to the last byte."""
    content = orjson.dumps(body)
    start = time.perf_counter()
    with client.stream("POST", path, content=content, headers=headers) as response:
        raw = b"".join(response.iter_raw())
    return time.perf_counter() - start, response, raw


def decoded(response: httpx.Response, raw: bytes) -> bytes:
    if response.headers.get("content-encoding", "").lower() == "gzip":
        return zlib.decompress(raw, wbits=16 + zlib.MAX_WBITS)
    return raw


def check_catalog(response: httpx.Response, raw: bytes, request_id: str, *, gzipped: bool) -> bytes:
    """The answer is a successful catalog echoing ``request_id``, encoded as asked."""
    if response.status_code != 200:
        raise BenchError(f"getCatalogDetailed answered HTTP {response.status_code}: {raw[:300]!r}")
    encoding = response.headers.get("content-encoding", "").lower()
    if (encoding == "gzip") != gzipped:
        raise BenchError(
            f"asked {'gzip' if gzipped else 'identity'}, got Content-Encoding {encoding!r}"
        )
    body = decoded(response, raw)
    tail = b',"requestId":' + orjson.dumps(request_id) + b"}"
    if not body.endswith(tail) or b'"statusCode":"success"' not in body[-300:]:
        raise BenchError(
            f"getCatalogDetailed did not succeed or echo {request_id!r}: ...{body[-300:]!r}"
        )
    return body


def check_full_catalog(body: bytes, request_id: str, products: int, performances: int) -> None:
    document = orjson.loads(body)
    if document.get("statusCode") != "success" or document.get("requestId") != request_id:
        raise BenchError("the first catalog is not a success echoing its requestId")
    found = [p for s in document["catalogData"]["seasons"] for p in s["products"]]
    found_performances = sum(len(p["event"]["performances"]) for p in found)
    if len(found) != products or found_performances != performances:
        raise BenchError(
            f"the catalog has {len(found)} products and {found_performances} performances, "
            f"expected {products} and {performances}"
        )


def warm_catalog_calls(
    client: httpx.Client,
    server: Server,
    label: str,
    headers: dict[str, str],
    requests: int,
    report: Report,
) -> None:
    """``requests`` warm getCatalogDetailed calls after 3 unmeasured ones; every answer checked."""
    gzipped = label == "gzip"
    for i in range(3):
        request_id = f"warmup-{label}-{i}"
        _, response, raw = timed_post(
            client, RPC_PATH + "getCatalogDetailed", {"requestId": request_id}, headers
        )
        check_catalog(response, raw, request_id, gzipped=gzipped)
    latencies = []
    cpu_before = server.cpu_seconds()
    for i in range(requests):
        request_id = f"bench-{label}-{i}-{secrets.token_hex(4)}"
        elapsed, response, raw = timed_post(
            client, RPC_PATH + "getCatalogDetailed", {"requestId": request_id}, headers
        )
        latencies.append(elapsed)
        check_catalog(response, raw, request_id, gzipped=gzipped)
    cpu = (server.cpu_seconds() - cpu_before) / requests
    for q in (50, 95, 99):
        report.add(
            "served",
            f"warm_{label}_p{q}_ms",
            f"warm getCatalogDetailed, {label}, p{q}",
            ms(percentile(latencies, q)),
            "ms",
            TARGET_WARM_P50_MS if q == 50 else None,
        )
    report.add(
        "served", f"warm_{label}_server_cpu_ms", f"  server CPU per call, {label}", ms(cpu), "ms"
    )
    report.info[f"warm_{label}_latencies_ms"] = [round(ms(x), 3) for x in latencies]


def over_http(
    server: Server, secret: str, requests: int, expected: tuple[int, int], report: Report
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        answer = client.post(
            AUTH_PATH, json={"operator": OPERATOR, "partner": PARTNER, "secret": secret}
        )
        if answer.status_code != 200 or "token" not in answer.json():
            raise BenchError(
                f"authentication failed: HTTP {answer.status_code} {answer.text[:300]}"
            )
        auth = {"Authorization": f"Bearer {answer.json()['token']}"}
        gzip_headers = {**auth, "Accept-Encoding": "gzip"}
        rss_idle = server.rss()

        # first call: the process reads the snapshot and gzips it
        elapsed, response, raw = timed_post(
            client, RPC_PATH + "getCatalogDetailed", {"requestId": "first"}, gzip_headers
        )
        body = check_catalog(response, raw, "first", gzipped=True)
        check_full_catalog(body, "first", *expected)
        report.add(
            "served",
            "first_request_ms",
            "first getCatalogDetailed (reads + gzips the snapshot)",
            ms(elapsed),
            "ms",
        )
        sizes = (len(body), len(raw))
        del body, raw

        warm_catalog_calls(client, server, "gzip", gzip_headers, requests, report)
        warm_catalog_calls(
            client, server, "identity", {**auth, "Accept-Encoding": "identity"}, requests, report
        )
        rss_warm = server.rss()

        # GET mirror: a first full answer for the ETag, then conditional requests
        start = time.perf_counter()
        first = client.get(MIRROR_PATH, headers=gzip_headers)
        report.add(
            "served",
            "mirror_first_ms",
            "first GET /api/v1/catalog (gzips catalogData)",
            ms(time.perf_counter() - start),
            "ms",
        )
        etag = first.headers.get("etag")
        if first.status_code != 200 or not etag:
            raise BenchError(f"GET {MIRROR_PATH} answered HTTP {first.status_code} without an ETag")
        latencies = []
        for _ in range(requests):
            start = time.perf_counter()
            answer = client.get(MIRROR_PATH, headers={**gzip_headers, "If-None-Match": etag})
            latencies.append(time.perf_counter() - start)
            if answer.status_code != 304:
                raise BenchError(
                    f"If-None-Match {etag} answered HTTP {answer.status_code}, not 304"
                )
        for q in (50, 99):
            report.add(
                "served",
                f"not_modified_p{q}_ms",
                f"GET /api/v1/catalog If-None-Match -> 304, p{q}",
                ms(percentile(latencies, q)),
                "ms",
                TARGET_NOT_MODIFIED_MS,
            )

        latencies = []
        for i in range(requests):
            request_id = f"last-{i}"
            elapsed, response, raw = timed_post(
                client, RPC_PATH + "getLastSetupUpdate", {"requestId": request_id}, gzip_headers
            )
            latencies.append(elapsed)
            answer_body = orjson.loads(decoded(response, raw))
            if (
                answer_body.get("statusCode") != "success"
                or answer_body.get("requestId") != request_id
            ):
                raise BenchError(f"getLastSetupUpdate failed: {answer_body}")
        report.add(
            "served",
            "last_setup_update_p50_ms",
            "getLastSetupUpdate, p50",
            ms(percentile(latencies, 50)),
            "ms",
        )

        raw_size, gzip_size = sizes
        report.add("size", "response_bytes", "getCatalogDetailed, raw", raw_size, "B")
        report.add("size", "response_mb", "getCatalogDetailed, raw", mb(raw_size), "MB")
        report.add("size", "response_gzip_bytes", "getCatalogDetailed, gzipped", gzip_size, "B")
        report.add("size", "response_gzip_mb", "getCatalogDetailed, gzipped", mb(gzip_size), "MB")
        report.add(
            "memory",
            "server_rss_idle_mb",
            "server RSS before the first catalog call",
            mb(rss_idle),
            "MB",
        )
        report.add(
            "memory",
            "server_rss_mb",
            "server RSS after warm-up (getCatalogDetailed)",
            mb(rss_warm),
            "MB",
        )
        report.add(
            "memory",
            "server_rss_end_mb",
            "server RSS at the end (+ GET mirror)",
            mb(server.rss()),
            "MB",
        )


# --- output -----------------------------------------------------------------------------------


def speed_ups(report: Report) -> None:
    values = {f.key: f.value for f in report.figures}
    for label, baseline, served in (
        ("gzip", "baseline_gzip_p50_ms", "warm_gzip_p50_ms"),
        ("identity", "baseline_identity_p50_ms", "warm_identity_p50_ms"),
    ):
        if baseline in values and served in values and values[served] > 0:
            report.add(
                "baseline",
                f"speed_up_{label}",
                f"speed-up of the served warm path, {label} (p50)",
                values[baseline] / values[served],
                "x",
            )


def render(report: Report) -> None:
    table = Table(
        title=f"billetterie catalog benchmark - {report.info.get('backend')}", show_lines=False
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("result")
    for section, figures in report.sections.items():
        table.add_section()
        table.add_row(f"[bold]{section}[/]", "", "", "")
        for f in figures:
            value = (
                f"{f.value:,.0f}"
                if f.unit == "B"
                else f"{f.value:,.2f}"
                if f.unit != "s"
                else f"{f.value:.3f}"
            )
            target = "" if f.target is None else f"<= {f.target:g} {f.unit}"
            result = {None: "", True: "[green]PASS[/]", False: "[bold red]FAIL[/]"}[f.passed]
            table.add_row(f.label, f"{value} {f.unit}", target, result)
    console.print(table)
    info = report.info
    console.print(
        f"{info.get('backend')}: {info.get('products'):,} products, "
        f"{info.get('performances'):,} performances, {info.get('prices'):,} prices; "
        f"{info.get('requests')} calls per HTTP figure, {info.get('build_runs')} build runs; "
        f"load average {info.get('load_average_start')} -> {info.get('load_average_end')} "
        f"on {info.get('cpus')} CPUs"
    )
    failures = report.failures()
    if failures:
        console.print(f"[bold red]{len(failures)} target(s) missed:[/]")
        for f in failures:
            console.print(
                f"  [red]FAIL[/] {f.label}: {f.value:.3f} {f.unit} > {f.target:g} {f.unit}"
            )
    else:
        console.print("[bold green]every target met[/]")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server URL; a fresh database is created "
        "on it and dropped afterwards (default: SQLite in a temporary directory)",
    )
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--performances-per-product", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200, help="measured calls per HTTP figure")
    parser.add_argument(
        "--build-runs",
        type=int,
        default=3,
        help="forced rebuilds, and in-process builds for the baseline",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if min(args.products, args.performances_per_product, args.requests, args.build_runs) < 1:
        parser.error(
            "--products, --performances-per-product, --requests and --build-runs must be >= 1"
        )
    return args


def run(args: argparse.Namespace, report: Report) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="billetterie-bench-"))
    database: Database | None = None
    server: Server | None = None
    performances = args.products * args.performances_per_product
    report.info.update(
        products=args.products,
        performances=performances,
        prices=performances * len(TARIFFS) * len(SEAT_CATEGORIES),
        requests=args.requests,
        build_runs=args.build_runs,
        cpus=os.cpu_count(),
        load_average_start=[round(x, 2) for x in os.getloadavg()],
    )
    try:
        database = create_database(args.database_url, tmp)
        report.info["backend"] = database.backend
        with console.status(f"migrating a fresh {database.backend} database"):
            upgrade(database.url)
        with console.status("generating and importing the setup document"):
            with stopwatch() as elapsed:
                data = build_document(args.products, args.performances_per_product)
            report.add("setup", "generate_s", "generate the setup document (dict)", elapsed(), "s")
            with stopwatch() as elapsed:
                document = parse_document(data)
            report.add("setup", "validate_s", "parse_document (shape + references)", elapsed(), "s")
            ids = asyncio.run(import_phase(database.url, document, report))
        del data, document  # the build below runs on a heap without the document, as in a server
        gc.collect()
        with console.status("building the catalog in process"):
            asyncio.run(build_phase(database.url, *ids, args.build_runs, report))
        gc.collect()

        env = server_env(database.url, tmp / "var")
        secret = secrets.token_urlsafe(24)
        with console.status("starting the server"):
            create_operator(env, secret)
            server = start_server(env, tmp / "server.log")
        with console.status("calling the server"):
            over_http(server, secret, args.requests, (args.products, performances), report)
    finally:
        report.info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        if server is not None:
            server.stop()
        if database is not None:
            drop_database(database)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    try:
        run(args, report)
    except BenchError as exc:
        console.print(f"[bold red]benchmark failed:[/] {exc}")
        return 1
    speed_ups(report)
    render(report)
    if args.json is not None:
        args.json.write_text(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode())
        console.print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
