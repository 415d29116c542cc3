"""Benchmark of the detailed catalog: built ahead, served from memory, called over real HTTP.

``getCatalogDetailed`` is answered from a catalog built when the setup changes
(``catalog.services.rebuild_catalogs`` stores one JSON snapshot per sales channel and scope) and
kept by each server process already gzipped (``compat.catalog_cache``); per request the server
only checks the token, reads the snapshot's version and appends the ``requestId``. This script
checks that the design holds at a realistic size, and what it buys:

* **setup** - an institution ``BENCH`` generated in code: 1,000 products x 10 performances, each
  priced for 5 tariffs x 4 seat categories (200,000 prices), names and descriptions in en/fr/de,
  one small hall (4 blocks x 5 rows x 20 seats) so that seats cost nothing; validated by
  ``parse_document`` and imported by ``import_setup`` into a fresh database: a SQLite file in a
  temporary directory, or a database created on ``--database-url`` (PostgreSQL) and dropped
  at the end.
* **cold build** (target <= 2 s) - ``rebuild_catalogs`` forced to render and write every snapshot
  (their rows are deleted first), p50 of ``--build-runs``; the split load / render / serialize is
  timed on ``CatalogBuilder`` directly. It runs after the setup document is freed, on a heap like
  a server's.
* **baseline** - what an answer costs without the prebuilt cache: load + render + serialize (+
  gzip) in process, and the speed-up of the served path over it.
* **served** (targets: warm p50 <= 50 ms, 304 <= 5 ms) - the real ``billetterie serve`` in a
  subprocess, called through one keep-alive ``httpx`` client with an operator's token: the first
  ``getCatalogDetailed`` (the process reads and gzips the snapshot); warm latencies, to the last
  byte of the body, with ``Accept-Encoding: gzip`` and ``identity`` (every answer is checked: a
  success echoing its own ``requestId``), with the server's CPU per call; the GET mirror's
  ``If-None-Match`` 304; ``getLastSetupUpdate``; ``/healthz`` as the floor of any call (HTTP and
  framework, no token, no database); the response sizes; the server's RSS.
* **other** (no target) - the first ``getPOSConfig``, which parses the catalog in the server.

It is a benchmark, not a test: it exits 0 when a target is missed, listing the misses, and 1 only
when the run itself fails (the server does not start, an answer is wrong). The machine's load
average is printed with the figures: latencies on a busy machine are not comparable.

    .venv/bin/python bench/catalog.py [--json figures.json]
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
from billetterie.compat.catalog_cache import PREFIX, SUFFIX, CachedCatalog
from billetterie.config import normalize_database_url
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


# --- the setup document ----------------------------------------------------------------------

Names = tuple[str, str, str]  # en, fr, de

# theme -> (names, sub-theme -> names); a product's genre is (theme, sub-theme, names)
THEMES: dict[str, tuple[Names, dict[str, Names]]] = {
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
GENRES: tuple[tuple[str, str, Names], ...] = (
    ("MUSIC", "CLASSICAL", ("Symphony", "Symphonie", "Sinfonie")),
    ("MUSIC", "JAZZ", ("Jazz night", "Soirée jazz", "Jazzabend")),
    ("STAGE", "DRAMA", ("Drama", "Drame", "Schauspiel")),
    ("STAGE", "DANCE", ("Ballet", "Ballet", "Ballett")),
    ("STAGE", "OPERA", ("Opera", "Opéra", "Oper")),
    ("FAMILY", "KIDS", ("Family show", "Spectacle familial", "Familienvorstellung")),
)
TARIFF_SPECS: tuple[tuple[str, Names, str], ...] = (  # in the PUBLIC audience; INVITE is apart
    ("FULL", ("Full price", "Plein tarif", "Vollpreis"), "FULL"),
    ("RED", ("Reduced", "Réduit", "Ermäßigt"), "REDUCED"),
    ("STUDENT", ("Student", "Étudiant", "Student"), "REDUCED"),
    ("CHILD", ("Child", "Enfant", "Kind"), "REDUCED"),
)


def text(names: Names) -> dict[str, str]:
    en, fr, de = names
    return {"en": en, "fr": fr, "de": de}


def _venue() -> dict[str, Any]:
    """One hall: a block of 5 rows x 20 seats per seat category."""
    blocks = [
        {"code": f"B{i}", "rows": "1-5", "seats": "1-20", "origin": {"x": 22 * (i - 1), "y": 0}}
        for i in range(1, len(SEAT_CATEGORIES) + 1)
    ]
    categories = [
        {
            "code": code,
            "name": text((f"Category {i}", f"Catégorie {i}", f"Kategorie {i}")),
            "seats": [f"PARTERRE/B{i}"],
        }
        for i, code in enumerate(SEAT_CATEGORIES, start=1)
    ]
    configuration = {
        "code": "PLAN",
        "name": text(("Seated", "Assis", "Bestuhlt")),
        "stage": {"x": 43, "y": -3},
        "areas": [
            {"code": "PARTERRE", "name": text(("Stalls", "Parterre", "Parkett")), "blocks": blocks}
        ],
        "logicalConfigurations": [
            {"code": "STANDARD", "name": text(("Standard",) * 3), "seatCategories": categories}
        ],
    }
    hall = text(("Grand Hall", "Grande salle", "Großer Saal"))
    return {
        "code": "THEATRE",
        "name": hall,
        "address": {
            "street": "Avenue du Théâtre 12",
            "zip": "1003",
            "city": "Lausanne",
            "countryCode": "CH",
        },
        "spaces": [{"code": "HALL", "name": hall, "configurations": [configuration]}],
    }


def _audiences() -> list[dict[str, Any]]:
    tariffs: list[dict[str, Any]] = [
        {"code": code, "name": text(names), "kind": kind} for code, names, kind in TARIFF_SPECS
    ]
    tariffs[-1]["requires"] = ["FULL"]  # a child comes with an adult
    invitation = {"code": "INVITE", "name": text(("Invitation",) * 3), "kind": "FREE"}
    return [
        {
            "code": "PUBLIC",
            "season": SEASON,
            "name": text(("General public", "Tout public", "Publikum")),
            "tariffs": tariffs,
        },
        {
            "code": "GUESTS",
            "season": SEASON,
            "name": text(("Guests", "Invités", "Gäste")),
            "mainCategory": "INVITED",
            "secondaryCategory": "FREE",
            "tariffs": [invitation],
        },
    ]


def _product(index: int, performances: int) -> dict[str, Any]:
    """A SINGLE_ENTRY product on sale on the channel, its performances spread over the season."""
    number = index + 1
    theme, sub_theme, (en, fr, de) = GENRES[index % len(GENRES)]
    full = 20 + (index % 9) * 5  # category 1, full price, in CHF
    cents = (index * 7) % 100
    prices = {
        category: {
            tariff: "0.00" if tariff == "INVITE" else f"{max(5, full - c * 8 - t * 4)}.{cents:02d}"
            for t, tariff in enumerate(TARIFFS)
        }
        for c, category in enumerate(SEAT_CATEGORIES)
    }
    dates = []
    for f in range(performances):
        day = datetime(2026, 9, 1) + timedelta(days=(index * 7 + f * 31) % 330)
        dates.append(day.replace(hour=19 if f % 3 else 15, minute=30 if f % 2 else 0))
    return {
        "code": f"P{number:05d}",
        "family": "SINGLE_ENTRY",
        "season": SEASON,
        "name": text((f"{en} no. {number}", f"{fr} n° {number}", f"{de} Nr. {number}")),
        "description": text(
            (
                f"{en} no. {number}: an evening of the season with the resident ensemble and "
                "guest artists. Doors open 45 minutes before the performance.",
                f"{fr} n° {number} : une soirée de la saison avec l'ensemble en résidence et des "
                "artistes invités. Ouverture des portes 45 minutes avant le spectacle.",
                f"{de} Nr. {number}: ein Abend der Spielzeit mit dem Hausensemble und "
                "Gastkünstlern. Einlass 45 Minuten vor Beginn der Vorstellung.",
            )
        ),
        "vatCode": "VAT",
        "theme": theme,
        "subTheme": sub_theme,
        "externalUrl": f"https://bench.example/shows/p{number:05d}",
        "salesPeriods": [
            {"salesChannel": CHANNEL, "start": "2026-06-01T10:00:00", "end": "2027-08-31T23:00:00"}
        ],
        "event": {
            "configuration": "STANDARD",
            "duration": "2h30" if index % 2 else "1h45",
            "prices": prices,
            "performances": [
                {
                    "code": f"P{number:05d}-{f:03d}",
                    "start": start.isoformat(),  # the organization's local time
                    "name": text(
                        (
                            f"{en} no. {number} - {start:%d %b %Y}",
                            f"{fr} n° {number} - {start:%d/%m/%Y}",
                            f"{de} Nr. {number} - {start:%d.%m.%Y}",
                        )
                    ),
                }
                for f, start in enumerate(dates, start=1)
            ],
        },
    }


def build_document(products: int, performances_per_product: int) -> dict[str, Any]:
    """The BENCH institution as a setup document: a plain dict, as if read from YAML."""
    theatre = ("Bench Theatre", "Théâtre Bench", "Theater Bench")
    point_of_sale = {
        "code": POINT_OF_SALE,
        "number": 1,
        "name": text(("Website", "Site web", "Website")),
        "paymentMethods": ["CARD"],
    }
    return {
        "institution": {"code": INSTITUTION, "name": text(theatre), "currency": "CHF"},
        "organization": {
            "code": INSTITUTION,
            "name": text(theatre),
            "timeZone": "Europe/Zurich",
            "mainLanguage": "en",
            "languages": ["en", "fr", "de"],
        },
        "paymentMethods": [
            {"code": "CARD", "name": text(("Card", "Carte", "Karte")), "type": "CARD"}
        ],
        "salesChannels": [
            {
                "code": CHANNEL,
                "name": text(("Web shop", "Billetterie en ligne", "Webshop")),
                "type": "INTERNET_B2C",
                "pointsOfSale": [point_of_sale],
            }
        ],
        "operators": [{"login": OPERATOR, "partner": PARTNER, "pointOfSale": POINT_OF_SALE}],
        "vatCodes": [
            {"code": "VAT", "name": text(("VAT", "TVA", "MwSt.")), "rate": 8100, "country": "CH"}
        ],
        "seasons": [
            {
                "code": SEASON,
                "name": text(("Season 2026/27", "Saison 2026-2027", "Spielzeit 2026/27")),
                "start": "2026-09-01T00:00:00",
                "end": "2027-08-31T23:59:00",
            }
        ],
        "audienceCategories": _audiences(),
        "themes": [
            {
                "code": code,
                "name": text(names),
                "subThemes": [{"code": sub, "name": text(n)} for sub, n in subs.items()],
            }
            for code, (names, subs) in THEMES.items()
        ],
        "venues": [_venue()],
        "products": [_product(i, performances_per_product) for i in range(products)],
    }


# --- figures ---------------------------------------------------------------------------------


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


Add = Callable[..., None]  # (key, label, value, unit, target=None)


@dataclass
class Report:
    sections: dict[str, list[Figure]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Add:
        """A function adding figures to section ``name``."""
        figures = self.sections.setdefault(name, [])

        def add(key: str, label: str, value: float, unit: str, target: float | None = None) -> None:
            figures.append(Figure(key, label, value, unit, target))

        return add

    @property
    def figures(self) -> list[Figure]:
        return [f for figures in self.sections.values() for f in figures]

    def value(self, key: str) -> float | None:
        return next((f.value for f in self.figures if f.key == key), None)

    def failures(self) -> list[Figure]:
        return [f for f in self.figures if f.passed is False]

    def as_json(self) -> dict[str, Any]:
        figures = {
            f.key: {"label": f.label.strip(), "value": f.value, "unit": f.unit}
            | {"target": f.target, "passed": f.passed}
            for f in self.figures
        }
        return {"info": self.info, "figures": figures, "failures": [f.key for f in self.failures()]}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated linearly between the closest ranks."""
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
    """``with stopwatch() as elapsed: ...``; then ``elapsed()`` is the block's duration (s)."""
    start = time.perf_counter()
    end: float | None = None

    def elapsed() -> float:
        return (end if end is not None else time.perf_counter()) - start

    try:
        yield elapsed
    finally:
        end = time.perf_counter()


# --- database --------------------------------------------------------------------------------


@dataclass
class Database:
    url: str  # SQLAlchemy async URL
    backend: str
    admin_url: str | None = None  # PostgreSQL: the server's URL the bench database was created on
    name: str | None = None


def _asyncpg_dsn(url: str) -> str:
    parsed = make_url(normalize_database_url(url)).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


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
    """A fresh, empty database: SQLite under ``tmp``, or a new one on a PostgreSQL server."""
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


# --- in process: import, cold build, baseline --------------------------------------------------


@dataclass(frozen=True)
class Imported:
    institution_id: int
    channel_id: int
    setup_version: int


async def import_phase(url: str, document: SetupDocument, report: Report) -> Imported:
    engine = create_engine(url)
    try:
        now = datetime.now(UTC)
        with stopwatch() as elapsed:
            # the catalog alone: provisioning 4,000,000 performance seats is the inventory's
            # cost (bench/availability.py), not the catalog's
            result = await import_setup(engine, document, now=now, actor="bench")
        report.section("setup")("import_s", "import_setup (rows + snapshots)", elapsed(), "s")
        report.info["import_changes"] = result.changes
        c = catalog_db.sales_channel.c
        query = sa.select(c.id).where(c.institution_id == result.institution_id, c.code == CHANNEL)
        async with read(engine) as conn:
            channel_id = (await conn.execute(query)).scalar_one()
        return Imported(result.institution_id, channel_id, result.setup_version)
    finally:
        await engine.dispose()


async def forced_rebuild(engine: AsyncEngine, imported: Imported) -> float:
    """Seconds for rebuild_catalogs (and its commit) once the snapshot rows are gone."""
    s = catalog_db.catalog_snapshot.c
    async with transaction(engine) as conn:
        await conn.execute(
            sa.delete(catalog_db.catalog_snapshot).where(
                s.institution_id == imported.institution_id
            )
        )
    with stopwatch() as elapsed:
        async with transaction(engine) as conn:
            changed = await rebuild_catalogs(
                conn, imported.institution_id, imported.setup_version, datetime.now(UTC)
            )
    if changed != len(CatalogScope):
        raise BenchError(f"rebuild_catalogs wrote {changed} snapshot(s), not {len(CatalogScope)}")
    return elapsed()


async def build_phase(url: str, imported: Imported, runs: int, report: Report) -> None:
    engine = create_engine(url)
    try:
        rebuilds = [await forced_rebuild(engine, imported) for _ in range(runs)]
        add = report.section("cold build")
        label = f"rebuild_catalogs forced: 1 channel x {len(CatalogScope)} scopes + writes, p50"
        add("cold_build_s", label, percentile(rebuilds, 50), "s", TARGET_COLD_BUILD_S)
        add("cold_build_first_s", "  first forced rebuild_catalogs", rebuilds[0], "s")

        # the same work for one scope, step by step, as an answer built per request would do it
        steps: dict[str, list[float]] = {k: [] for k in ("load", "render", "dumps", "gzip", "all")}
        for run in range(runs):
            with stopwatch() as total:
                builder = CatalogBuilder()
                async with read(engine) as conn:
                    with stopwatch() as elapsed:
                        await builder.load(conn, imported.institution_id)
                    steps["load"].append(elapsed())
                with stopwatch() as elapsed:
                    catalog = builder.render(imported.channel_id, CatalogScope.STANDARD)
                steps["render"].append(elapsed())
                with stopwatch() as elapsed:  # the bytes the server sends
                    tail = CachedCatalog.tail(f"baseline-{run}")
                    body = PREFIX + orjson.dumps(catalog) + SUFFIX + tail
                steps["dumps"].append(elapsed())
                with stopwatch() as elapsed:
                    gzip.compress(body, compresslevel=6, mtime=0)
                steps["gzip"].append(elapsed())
            steps["all"].append(total())
            del builder, catalog, body
        p50 = {k: percentile(v, 50) for k, v in steps.items()}
        add("build_load_s", "  CatalogBuilder.load, p50", p50["load"], "s")
        add("build_render_s", "  CatalogBuilder.render, 1 scope, p50", p50["render"], "s")
        add("build_serialize_s", "  orjson.dumps, 1 scope, p50", p50["dumps"], "s")
        add = report.section("baseline: no prebuilt cache")
        label = f"load + render + dumps + gzip per request, p50 of {runs}"
        add("baseline_gzip_p50_ms", label, ms(p50["all"]), "ms")
        identity = p50["load"] + p50["render"] + p50["dumps"]
        add(
            "baseline_identity_p50_ms", "load + render + dumps per request, p50", ms(identity), "ms"
        )
        add("baseline_gzip_only_ms", "  gzip level 6 alone, p50", ms(p50["gzip"]), "ms")
    finally:
        await engine.dispose()


# --- the server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def billetterie_command() -> str:
    """The ``billetterie`` script of this virtualenv."""
    command = Path(sys.executable).parent / "billetterie"
    if command.exists():
        return str(command)
    found = shutil.which("billetterie")
    if found is None:
        raise BenchError("the billetterie command is not installed next to this Python")
    return found


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def _processes(self) -> list[psutil.Process]:
        process = psutil.Process(self.process.pid)
        return [process, *process.children(recursive=True)]

    def rss(self) -> int:
        """Resident memory of the server (and any child), in bytes."""
        return int(sum(p.memory_info().rss for p in self._processes()))

    def cpu_seconds(self) -> float:
        """User + system CPU time the server (and any child) has used."""
        return float(sum(t.user + t.system for t in (p.cpu_times() for p in self._processes())))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # uvicorn shuts down gracefully
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def server_env(url: str, var_dir: Path) -> dict[str, str]:
    return os.environ | {
        "BILLETTERIE_DATABASE_URL": url,
        "BILLETTERIE_VAR_DIR": str(var_dir),
        "BILLETTERIE_JWT_SECRET": secrets.token_urlsafe(48),
        "BILLETTERIE_RATE_LIMITS": "off",  # the bench calls one endpoint hundreds of times
    }


def create_operator(env: dict[str, str], secret: str) -> None:
    """``billetterie operators create``: the operator of the document, with a known secret."""
    command = [billetterie_command(), "operators", "create", OPERATOR]
    command += ["--point-of-sale", POINT_OF_SALE, "--partner", PARTNER, "--secret", secret]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"billetterie operators create failed:\n{done.stdout}{done.stderr}")


def start_server(env: dict[str, str], log: Path, timeout: float = 90.0) -> Server:
    """``billetterie serve`` on a free port, once ``/healthz`` answers."""
    port = free_port()
    command = [billetterie_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(f"the server exited ({process.returncode}):\n{server.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/healthz").status_code == 200:
                    return server
            time.sleep(0.1)
    server.stop()
    raise BenchError(f"no answer on /healthz after {timeout:.0f} s:\n{server.log_tail()}")


# --- over HTTP ---------------------------------------------------------------------------------


def timed_post(
    client: httpx.Client, path: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[float, httpx.Response, bytes]:
    """POST, read the body as sent (still gzipped); seconds to its last byte."""
    content = orjson.dumps(body)
    start = time.perf_counter()
    with client.stream("POST", path, content=content, headers=headers) as response:
        raw = b"".join(response.iter_raw())
    return time.perf_counter() - start, response, raw


def timed_get(
    client: httpx.Client, path: str, headers: dict[str, str]
) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    response = client.get(path, headers=headers)
    return time.perf_counter() - start, response


def decoded(response: httpx.Response, raw: bytes) -> bytes:
    if response.headers.get("content-encoding", "").lower() == "gzip":
        return zlib.decompress(raw, wbits=16 + zlib.MAX_WBITS)
    return raw


def check_catalog(response: httpx.Response, raw: bytes, request_id: str, *, gzipped: bool) -> bytes:
    """The answer is a successful catalog, encoded as asked, echoing ``request_id``."""
    if response.status_code != 200:
        raise BenchError(f"getCatalogDetailed answered HTTP {response.status_code}: {raw[:300]!r}")
    encoding = response.headers.get("content-encoding", "identity").lower()
    if (encoding == "gzip") != gzipped:
        raise BenchError(f"asked {'gzip' if gzipped else 'identity'}, got {encoding}")
    body = decoded(response, raw)
    tail = b',"requestId":' + orjson.dumps(request_id) + b"}"
    if not body.endswith(tail) or b'"statusCode":"success"' not in body[-300:]:
        raise BenchError(f"no success echoing {request_id!r}: ...{body[-300:]!r}")
    return body


def check_whole_catalog(body: bytes, request_id: str, products: int, performances: int) -> None:
    document = orjson.loads(body)
    if document.get("statusCode") != "success" or document.get("requestId") != request_id:
        raise BenchError("the first catalog is not a success echoing its requestId")
    found = [p for season in document["catalogData"]["seasons"] for p in season["products"]]
    found_performances = sum(len(p["event"]["performances"]) for p in found)
    if (len(found), found_performances) != (products, performances):
        raise BenchError(
            f"the catalog has {len(found)} products and {found_performances} performances, "
            f"not {products} and {performances}"
        )


def warm_catalog_calls(
    client: httpx.Client, server: Server, headers: dict[str, str], requests: int, add: Add
) -> None:
    """``requests`` getCatalogDetailed calls after 3 unmeasured ones; every answer checked."""
    label = headers["Accept-Encoding"]
    gzipped = label == "gzip"
    path = RPC_PATH + "getCatalogDetailed"
    for i in range(3):
        _, response, raw = timed_post(client, path, {"requestId": f"warm-up-{i}"}, headers)
        check_catalog(response, raw, f"warm-up-{i}", gzipped=gzipped)
    latencies = []
    cpu = server.cpu_seconds()
    for i in range(requests):
        request_id = f"{label}-{i}-{secrets.token_hex(4)}"
        elapsed, response, raw = timed_post(client, path, {"requestId": request_id}, headers)
        latencies.append(elapsed)
        check_catalog(response, raw, request_id, gzipped=gzipped)
    cpu = (server.cpu_seconds() - cpu) / requests
    for q in (50, 95, 99):
        target = TARGET_WARM_P50_MS if q == 50 else None
        value = ms(percentile(latencies, q))
        add(f"warm_{label}_p{q}_ms", f"warm getCatalogDetailed, {label}, p{q}", value, "ms", target)
    add(f"warm_{label}_server_cpu_ms", f"  server CPU per call, {label}", ms(cpu), "ms")


def over_http(
    server: Server, secret: str, requests: int, expected: tuple[int, int], report: Report
) -> None:
    add = report.section("served (real server, HTTP)")
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        credentials = {"operator": OPERATOR, "partner": PARTNER, "secret": secret}
        answer = client.post(AUTH_PATH, json=credentials)
        if answer.status_code != 200 or "token" not in answer.json():
            raise BenchError(
                f"authentication failed: HTTP {answer.status_code} {answer.text[:300]}"
            )
        auth = {"Authorization": f"Bearer {answer.json()['token']}"}
        gzip_headers = auth | {"Accept-Encoding": "gzip"}
        rss_idle = server.rss()

        # the first call: the process reads the snapshot and gzips it
        path = RPC_PATH + "getCatalogDetailed"
        elapsed, response, raw = timed_post(client, path, {"requestId": "first"}, gzip_headers)
        body = check_catalog(response, raw, "first", gzipped=True)
        check_whole_catalog(body, "first", *expected)
        add(
            "first_request_ms",
            "first getCatalogDetailed (reads, gzips the snapshot)",
            ms(elapsed),
            "ms",
        )
        sizes = len(body), len(raw)
        del body, raw

        warm_catalog_calls(client, server, gzip_headers, requests, add)
        warm_catalog_calls(client, server, auth | {"Accept-Encoding": "identity"}, requests, add)
        rss_warm = server.rss()

        # the GET mirror: a full answer for its ETag, then conditional requests
        elapsed, first = timed_get(client, MIRROR_PATH, gzip_headers)
        etag = first.headers.get("etag")
        if first.status_code != 200 or not etag:
            raise BenchError(f"GET {MIRROR_PATH} answered HTTP {first.status_code} without an ETag")
        add("mirror_first_ms", "first GET /api/v1/catalog (gzips catalogData)", ms(elapsed), "ms")
        latencies = []
        for _ in range(requests):
            elapsed, answer = timed_get(client, MIRROR_PATH, gzip_headers | {"If-None-Match": etag})
            latencies.append(elapsed)
            if answer.status_code != 304:
                raise BenchError(
                    f"If-None-Match {etag} answered HTTP {answer.status_code}, not 304"
                )
        for q in (50, 99):
            label = f"GET /api/v1/catalog, If-None-Match -> 304, p{q}"
            add(
                f"not_modified_p{q}_ms",
                label,
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
        add(
            "last_setup_update_p50_ms",
            "getLastSetupUpdate, p50",
            ms(percentile(latencies, 50)),
            "ms",
        )

        latencies = [timed_get(client, "/healthz", {})[0] for _ in range(requests)]
        label = "GET /healthz, p50 (floor: HTTP + framework, no token, no DB)"
        add("healthz_p50_ms", label, ms(percentile(latencies, 50)), "ms")

        add = report.section("size")
        raw_size, gzip_size = sizes
        add("response_bytes", "getCatalogDetailed, identity", raw_size, "B")
        add("response_mb", "getCatalogDetailed, identity", mb(raw_size), "MB")
        add("response_gzip_bytes", "getCatalogDetailed, gzip", gzip_size, "B")
        add("response_gzip_mb", "getCatalogDetailed, gzip", mb(gzip_size), "MB")

        add = report.section("memory")
        add("server_rss_idle_mb", "server RSS before the first catalog call", mb(rss_idle), "MB")
        add("server_rss_mb", "server RSS after warm-up (getCatalogDetailed)", mb(rss_warm), "MB")
        add("server_rss_end_mb", "server RSS after the GET mirror too", mb(server.rss()), "MB")

        # not targeted: getPOSConfig reads product families from the parsed catalog
        add = report.section("other (no target)")
        path = RPC_PATH + "getPOSConfig"
        for key, label in (("first", "first"), ("second", "second")):
            elapsed, response, raw = timed_post(client, path, {"requestId": key}, gzip_headers)
            if orjson.loads(decoded(response, raw)).get("statusCode") != "success":
                raise BenchError(f"getPOSConfig failed: {decoded(response, raw)[:300]!r}")
            add(f"pos_config_{key}_ms", f"{label} getPOSConfig", ms(elapsed), "ms")
        add("server_rss_pos_config_mb", "server RSS after getPOSConfig", mb(server.rss()), "MB")


# --- output ------------------------------------------------------------------------------------


def speed_ups(report: Report) -> None:
    add = report.section("baseline: no prebuilt cache")
    for label in ("gzip", "identity"):
        baseline = report.value(f"baseline_{label}_p50_ms")
        served = report.value(f"warm_{label}_p50_ms")
        if baseline is not None and served:
            text = f"speed-up of the served warm path, {label}, p50"
            add(f"speed_up_{label}", text, baseline / served, "x")


def _format(value: float, unit: str) -> str:
    if unit == "B":
        return f"{value:,.0f} {unit}"
    return f"{value:,.3f} {unit}" if unit == "s" else f"{value:,.2f} {unit}"


def render(report: Report) -> None:
    table = Table(title=f"billetterie catalog benchmark ({report.info.get('backend')})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("result")
    for section, figures in report.sections.items():
        table.add_section()
        table.add_row(f"[bold]{section}[/]", "", "", "")
        for f in figures:
            target = "" if f.target is None else f"<= {f.target:g} {f.unit}"
            result = {None: "", True: "[green]PASS[/]", False: "[bold red]FAIL[/]"}[f.passed]
            table.add_row(f.label, _format(f.value, f.unit), target, result)
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
    if not failures:
        console.print("[bold green]every target met[/]")
        return
    console.print(f"[bold red]{len(failures)} target(s) missed:[/]")
    for f in failures:
        console.print(
            f"  [red]FAIL[/] {f.label.strip()}: {_format(f.value, f.unit)} > {f.target:g} {f.unit}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server: a fresh database is created on it and dropped at the end "
        "(default: SQLite in a temporary directory)",
    )
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--performances-per-product", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200, help="measured calls per HTTP figure")
    parser.add_argument(
        "--build-runs", type=int, default=3, help="forced rebuilds, and builds for the baseline"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if min(args.products, args.performances_per_product, args.requests, args.build_runs) < 1:
        parser.error("--products, --performances-per-product, --requests, --build-runs: >= 1")
    return args


def run(args: argparse.Namespace, report: Report) -> None:
    performances = args.products * args.performances_per_product
    report.info |= {
        "products": args.products,
        "performances": performances,
        "prices": performances * len(TARIFFS) * len(SEAT_CATEGORIES),
        "requests": args.requests,
        "build_runs": args.build_runs,
        "cpus": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    tmp = Path(tempfile.mkdtemp(prefix="billetterie-bench-"))
    database: Database | None = None
    server: Server | None = None
    try:
        database = create_database(args.database_url, tmp)
        report.info["backend"] = database.backend
        with console.status(f"migrating a fresh {database.backend} database"):
            upgrade(database.url)
        with console.status("generating and importing the setup document"):
            add = report.section("setup")
            with stopwatch() as elapsed:
                data = build_document(args.products, args.performances_per_product)
            add("generate_s", "generate the setup document (dict)", elapsed(), "s")
            with stopwatch() as elapsed:
                document = parse_document(data)
            add("validate_s", "parse_document (shape + references)", elapsed(), "s")
            imported = asyncio.run(import_phase(database.url, document, report))
        del data, document  # build on a heap without the document, as a server would
        gc.collect()
        with console.status("building the catalog in process"):
            asyncio.run(build_phase(database.url, imported, args.build_runs, report))
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
        console.print(f"[bold red]the benchmark failed:[/] {exc}")
        return 1
    speed_ups(report)
    render(report)
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2))
        console.print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
