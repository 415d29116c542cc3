"""Benchmark of availability: reads over real HTTP, staleness after a sale, best-available.

The server runs in its production form: ``billetterie serve --workers N`` (N >= 2 processes by
default), on a fresh PostgreSQL database (or SQLite with ``--database-url sqlite``), with the
call limits off (``BILLETTERIE_RATE_LIMITS=off``). What it measures:

* **setup** - an institution ``BENCH`` generated in code as a setup document: a stadium-like
  numbered plan of 20 blocks x 25 rows x 40 seats (20,000 seats: CAT1 = the 10 lower blocks,
  CAT2 = the 6 middle upper blocks, CAT3 = the 4 side upper blocks), one event with
  ``--performances`` performances, an internet channel and a reseller channel holding a contingent
  of 400 CAT3 seats; validated by ``parse_document`` and imported by ``import_institution``
  (catalog, operators, inventory); the operators' secrets are set with
  ``billetterie operators create``.
* **reads** (target: reads/s >= 0.7 x healthz/s) - ``getPerformanceAvailability`` (RPC, POST),
  its GET mirror ``/api/v1/availability/performances/{id}``, the mirror's ``If-None-Match`` 304
  (no target) and the bare ``/healthz`` of the same server, by the same client, with the same
  keep-alive connections and concurrency, for the same time. The phases alternate over
  ``--rounds`` rounds so that a change of the machine's load hits them all alike, each after a
  warm-up. The connections are spread evenly over the server processes (each keep-alive
  connection stays with the process that accepted it; the bench sees which one through
  psutil). Every answer is checked (HTTP 200, RPC ``success``). The load generator is ``wrk``
  when installed, else a lean asyncio HTTP/1.1 client (``--client httpx`` for httpx); on a
  2-CPU machine it competes with the server, so its CPU use is printed with the figures, and
  the server's and the database's CPU per request.
* **staleness** (target: p99 <= 1 s) - ``--sales`` sales of 4 seats (``hold_places`` then
  ``confirm_hold``, in this process), one every 50-250 ms; from the moment ``confirm_hold``
  returns (committed), one pinned connection per server process polls ``getPerformanceAvailability``
  until its ``sequence`` reaches the sale's; the staleness of a sale is the time until **every**
  process shows it (the counts are checked too).
* **best-available** (target: p99 <= 5 ms) - ``bench/best_available.py``'s 80,000-seat venue and
  measurement loop (``SeatIndex.best_available`` and the plain ``best_available`` function, 4
  seats together, at 0/30/60/90 % taken), imported, not re-implemented; and the database path:
  ``hold_places`` for 4 seats in CAT1 (10,000 seats) of the stadium, end to end, with
  ``confirm_hold``; in it, best-available from the process's seat index (target: p99 <= 5 ms),
  the index's catch-up query and its one-off build; and, for comparison, the former path's
  parts (reading every free seat of the category, then the plain function over them).

It is a benchmark, not a test: it exits 0 when a target is missed, listing the misses, and 1 only
when the run itself fails. The machine's load average is printed with the figures.

    .venv/bin/python bench/availability.py [--json figures.json]
    .venv/bin/python bench/availability.py --database-url sqlite --workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
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
from sqlalchemy.ext.asyncio import AsyncEngine

import best_available as ba_bench
from billetterie.catalog import db as catalog_db
from billetterie.catalog.setupfile import parse_document
from billetterie.inventory import db as inventory_db
from billetterie.inventory import seat_indexes as indexing
from billetterie.inventory.models import SeatState
from billetterie.inventory.seat_indexes import indexes_of
from billetterie.inventory.seating import FreeSeat, best_available
from billetterie.inventory.services import PlaceRequest, confirm_hold, hold_places
from billetterie.migrations import upgrade
from billetterie.setup import import_institution
from billetterie.shared.db import create_engine, read
from catalog import (
    BenchError,
    Database,
    billetterie_command,
    drop_database,
    free_port,
    ms,
    percentile,
    stopwatch,
)
from catalog import create_database as create_postgres_database

INSTITUTION = "BENCH"
WEB_CHANNEL, RESELLER_CHANNEL = "INTERNET", "RESELLER"
WEB_POS, RESELLER_POS = "BENCHWEB", "BENCHRES"
WEB_OPERATOR, RESELLER_OPERATOR = "BENCH_WEB", "BENCH_RES"
WEB_PARTNER, RESELLER_PARTNER = "bench-web", "bench-reseller"
SEASON = "S2627"
EVENT = "MATCH"
CONTINGENT = "RESQ"
CONTINGENT_SEATS = 400
SALE_CATEGORY = "CAT1"  # the 10 lower blocks: 10,000 seats
QUANTITY = 4

AREAS = (("LOWER", "L"), ("UPPER", "U"))
BLOCKS_ACROSS, ROWS, SEATS_PER_ROW = 10, 25, 40
SEAT_SPACING, ROW_SPACING, AISLE = 0.5, 0.9, 2.0
CATEGORIES: dict[str, tuple[str, list[str]]] = {  # code -> (name, seat selectors)
    "CAT1": ("Lower tier", [f"LOWER/L{i:02d}" for i in range(1, 11)]),
    "CAT2": ("Upper tier, centre", [f"UPPER/U{i:02d}" for i in range(3, 9)]),
    "CAT3": ("Upper tier, sides", [f"UPPER/U{i:02d}" for i in (1, 2, 9, 10)]),
}
PRICES = {"CAT1": ("95.00", "70.00"), "CAT2": ("65.00", "45.00"), "CAT3": ("40.00", "25.00")}

AUTH_PATH = "/tnai/backend-apis/v1/auth"
RPC_PATH = "/tnseb/backend-apis/availabilityService/v1_33/getPerformanceAvailability"
MIRROR_PATH = "/api/v1/availability/performances/{}"
HEALTHZ_PATH = "/healthz"

TARGET_READ_RATIO = 0.7
TARGET_STALENESS_P99_S = 1.0
TARGET_BEST_AVAILABLE_P99_MS = 5.0
STALENESS_TIMEOUT_S = 5.0
NAGLE_SUSPECT_S = 0.030  # a request alone slower than this on loopback: delayed ACKs
REFERENCE = (
    "pretix 2026.8 on this machine answers its quota-availability endpoint at about 70 requests/s"
)

console = Console(width=None if sys.stdout.isatty() else 130)


# --- the setup document ----------------------------------------------------------------------


def text(en: str, fr: str | None = None) -> dict[str, str]:
    return {"en": en, "fr": fr or en}


def _stadium() -> dict[str, Any]:
    """20 blocks of 25 rows x 40 seats: 10 across in a lower tier, 10 in an upper tier behind."""
    block_width = SEATS_PER_ROW * SEAT_SPACING + AISLE
    tier_depth = ROWS * ROW_SPACING + 2 * AISLE
    areas = []
    for tier, (area, prefix) in enumerate(AREAS):
        blocks = [
            {
                "code": f"{prefix}{i:02d}",
                "rows": f"1-{ROWS}",
                "seats": f"1-{SEATS_PER_ROW}",
                "origin": {"x": (i - 1) * block_width, "y": tier * tier_depth},
                "seatSpacing": SEAT_SPACING,
                "rowSpacing": ROW_SPACING,
            }
            for i in range(1, BLOCKS_ACROSS + 1)
        ]
        areas.append({"code": area, "name": text(area.title()), "blocks": blocks})
    categories = [
        {"code": code, "name": text(name), "seats": selectors}
        for code, (name, selectors) in CATEGORIES.items()
    ]
    configuration = {
        "code": "BOWL",
        "name": text("Bowl"),
        "stage": {"x": BLOCKS_ACROSS * block_width / 2, "y": -8},
        "areas": areas,
        "logicalConfigurations": [
            {"code": "STADIUM", "name": text("Stadium"), "seatCategories": categories}
        ],
    }
    return {
        "code": "ARENA",
        "name": text("Bench Arena"),
        "address": {"street": "Route du Stade 1", "zip": "1000", "city": "Lausanne"}
        | {"countryCode": "CH"},
        "spaces": [{"code": "BOWL", "name": text("Bowl"), "configurations": [configuration]}],
    }


def build_document(performances: int, now: datetime) -> dict[str, Any]:
    """The BENCH institution as a setup document: a plain dict, as if read from YAML."""
    open_from = (now - timedelta(days=30)).replace(microsecond=0, tzinfo=None)
    open_until = (now + timedelta(days=400)).replace(microsecond=0, tzinfo=None)
    first = (now + timedelta(days=30)).replace(hour=20, minute=0, second=0, microsecond=0)
    periods = [
        {"salesChannel": channel, "start": open_from.isoformat(), "end": open_until.isoformat()}
        for channel in (WEB_CHANNEL, RESELLER_CHANNEL)
    ]
    return {
        "institution": {"code": INSTITUTION, "name": text("Bench Stadium"), "currency": "CHF"},
        "organization": {
            "code": INSTITUTION,
            "name": text("Bench Stadium"),
            "timeZone": "Europe/Zurich",
            "mainLanguage": "en",
            "languages": ["en", "fr"],
        },
        "paymentMethods": [
            {"code": "CARD", "name": text("Card", "Carte"), "type": "CARD"},
            {"code": "ACCOUNT", "name": text("Account", "Compte"), "type": "PENDING_ACCOUNT"},
        ],
        "salesChannels": [
            {
                "code": WEB_CHANNEL,
                "name": text("Web shop", "Billetterie en ligne"),
                "type": "INTERNET_B2C",
                "pointsOfSale": [
                    {"code": WEB_POS, "number": 1, "name": text("Website", "Site web")}
                    | {"paymentMethods": ["CARD"]}
                ],
            },
            {
                "code": RESELLER_CHANNEL,
                "name": text("Reseller", "Revendeur"),
                "type": "RESELLER",
                "pointsOfSale": [
                    {"code": RESELLER_POS, "number": 2, "name": text("Reseller", "Revendeur")}
                    | {"paymentMethods": ["ACCOUNT"]}
                ],
            },
        ],
        "operators": [
            {"login": WEB_OPERATOR, "partner": WEB_PARTNER, "pointOfSale": WEB_POS},
            {"login": RESELLER_OPERATOR, "partner": RESELLER_PARTNER, "pointOfSale": RESELLER_POS},
        ],
        "vatCodes": [{"code": "VAT", "name": text("VAT", "TVA"), "rate": 8100, "country": "CH"}],
        "seasons": [
            {
                "code": SEASON,
                "name": text("Season"),
                "start": open_from.isoformat(),
                "end": open_until.isoformat(),
            }
        ],
        "audienceCategories": [
            {
                "code": "PUBLIC",
                "season": SEASON,
                "name": text("General public", "Tout public"),
                "tariffs": [
                    {"code": "FULL", "name": text("Full price", "Plein tarif"), "kind": "FULL"},
                    {"code": "RED", "name": text("Reduced", "Réduit"), "kind": "REDUCED"},
                ],
            }
        ],
        "venues": [_stadium()],
        "contingents": [
            {
                "code": CONTINGENT,
                "name": text("Reseller quota", "Quota revendeur"),
                "salesChannels": [RESELLER_CHANNEL],
            }
        ],
        "products": [
            {
                "code": EVENT,
                "family": "SINGLE_ENTRY",
                "season": SEASON,
                "name": text("Cup match", "Match de coupe"),
                "vatCode": "VAT",
                "salesPeriods": periods,
                "event": {
                    "configuration": "STADIUM",
                    "duration": "2h",
                    "prices": {
                        category: {"FULL": full, "RED": reduced}
                        for category, (full, reduced) in PRICES.items()
                    },
                    "allocations": [
                        {
                            "contingent": CONTINGENT,
                            "seatCategory": "CAT3",
                            "quantity": CONTINGENT_SEATS,
                        }
                    ],
                    "performances": [
                        {
                            "code": f"M{i:02d}",
                            "start": (first + timedelta(days=7 * (i - 1))).isoformat(),
                        }
                        for i in range(1, performances + 1)
                    ],
                },
            }
        ],
    }


# --- figures ---------------------------------------------------------------------------------


@dataclass
class Figure:
    key: str
    label: str
    value: float
    unit: str
    target: float | None = None
    at_least: bool = False  # the target is a lower bound (else an upper bound)

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.at_least else self.value <= self.target

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'>=' if self.at_least else '<='} {self.target:g} {self.unit}".rstrip()


Add = Callable[..., None]  # (key, label, value, unit, target=None, at_least=False)


@dataclass
class Report:
    sections: dict[str, list[Figure]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def section(self, name: str) -> Add:
        figures = self.sections.setdefault(name, [])

        def add(
            key: str,
            label: str,
            value: float,
            unit: str,
            target: float | None = None,
            at_least: bool = False,
        ) -> None:
            figures.append(Figure(key, label, value, unit, target, at_least))

        return add

    @property
    def figures(self) -> list[Figure]:
        return [f for figures in self.sections.values() for f in figures]

    def failures(self) -> list[Figure]:
        return [f for f in self.figures if f.passed is False]

    def as_json(self) -> dict[str, Any]:
        figures = {
            f.key: {"label": f.label.strip(), "value": f.value, "unit": f.unit}
            | {"target": f.target_text or None, "passed": f.passed}
            for f in self.figures
        }
        return {
            "info": self.info,
            "figures": figures,
            "failures": [f.key for f in self.failures()],
            "notes": self.notes,
            "reference": REFERENCE,
        }


# --- database and ids --------------------------------------------------------------------------


def create_database(database_url: str, tmp: Path) -> Database:
    """A fresh, empty database: SQLite under ``tmp`` (``--database-url sqlite``), or a new one
    on a PostgreSQL server, dropped at the end."""
    if database_url.startswith("sqlite"):
        return Database(f"sqlite+aiosqlite:///{tmp / 'bench.db'}", "sqlite")
    database: Database = create_postgres_database(database_url, tmp)
    return database


@dataclass(frozen=True)
class Ids:
    institution: int
    web_channel: int
    performances: dict[str, int]  # code -> id
    categories: dict[str, int]  # code -> seat category id (the one logical configuration)
    seats_per_category: dict[str, int]


async def import_phase(url: str, performances: int, report: Report) -> Ids:
    add = report.section("setup")
    now = datetime.now(UTC)
    with stopwatch() as elapsed:
        data = build_document(performances, now)
        document = parse_document(data)
    add("validate_s", "generate + parse_document", elapsed(), "s")
    engine = create_engine(url)
    try:
        with stopwatch() as elapsed:
            result = await import_institution(engine, document, now=now, actor="bench")
        add("import_s", "import_institution (catalog, operators, inventory)", elapsed(), "s")
        p, sc, ch = catalog_db.performance.c, catalog_db.seat_category.c, catalog_db.sales_channel.c
        ps = inventory_db.performance_seat.c
        async with read(engine) as conn:
            performance_ids = {
                r.code: r.id
                for r in await conn.execute(
                    sa.select(p.code, p.id).where(p.institution_id == result.institution_id)
                )
            }
            categories = {
                r.code: r.id
                for r in await conn.execute(
                    sa.select(sc.code, sc.id).where(sc.institution_id == result.institution_id)
                )
            }
            web = (
                await conn.execute(
                    sa.select(ch.id).where(
                        ch.institution_id == result.institution_id, ch.code == WEB_CHANNEL
                    )
                )
            ).scalar_one()
            total_seats = (
                await conn.execute(
                    sa.select(sa.func.count()).where(ps.institution_id == result.institution_id)
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    seats = {
        code: len(selectors) * ROWS * SEATS_PER_ROW for code, (_, selectors) in CATEGORIES.items()
    }
    report.info |= {
        "seats_per_performance": sum(seats.values()),
        "performance_seats": total_seats,
        "performances": performances,
    }
    return Ids(result.institution_id, web, performance_ids, categories, seats)


# --- the server --------------------------------------------------------------------------------


class Server:
    """``billetterie serve --workers N`` in a subprocess."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = log
        self.known: dict[int, psutil.Process] = {}  # every process seen, to end leftovers

    def processes(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(self.process.pid)
            found = [process, *process.children(recursive=True)]
            self.known |= {p.pid: p for p in found if p.pid not in self.known}
            return found
        return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                total += times.user + times.system
        return total

    def worker_of(self, local_port: int) -> int | None:
        """The pid of the process holding the server end of our connection from ``local_port``."""
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                for c in p.net_connections(kind="tcp"):
                    if (
                        c.laddr
                        and c.raddr
                        and (c.laddr.port, c.raddr.port) == (self.port, local_port)
                    ):
                        return int(p.pid)
        return None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        self.processes()  # remember the workers, to end any the master leaves behind
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn shuts its workers down
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for pid, child in self.known.items():
            if pid != self.process.pid:
                with contextlib.suppress(psutil.Error):  # psutil refuses a reused pid
                    child.terminate()
                    child.wait(timeout=5)


def server_env(url: str, var_dir: Path) -> dict[str, str]:
    return os.environ | {
        "BILLETTERIE_DATABASE_URL": url,
        "BILLETTERIE_VAR_DIR": str(var_dir),
        "BILLETTERIE_JWT_SECRET": secrets.token_urlsafe(48),
        "BILLETTERIE_RATE_LIMITS": "off",
    }


def create_operator(env: dict[str, str], login: str, pos: str, partner: str, secret: str) -> None:
    """``billetterie operators create``: an operator of the document, with a known secret."""
    command = [billetterie_command(), "operators", "create", login]
    command += ["--point-of-sale", pos, "--partner", partner, "--secret", secret]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"billetterie operators create failed:\n{done.stdout}{done.stderr}")


def start_server(env: dict[str, str], log: Path, workers: int, timeout: float = 120.0) -> Server:
    """``billetterie serve --workers N`` on a free port, once ``/healthz`` answers."""
    port = free_port()
    command = [billetterie_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, port, log)
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(f"the server exited ({process.returncode}):\n{server.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(HEALTHZ_PATH).status_code == 200:
                    return server
            time.sleep(0.1)
    server.stop()
    raise BenchError(f"no answer on /healthz after {timeout:.0f} s:\n{server.log_tail()}")


def token_of(server: Server, login: str, partner: str, secret: str) -> str:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        answer = client.post(
            AUTH_PATH, json={"operator": login, "partner": partner} | {"secret": secret}
        )
    if answer.status_code != 200 or "token" not in answer.json():
        raise BenchError(f"authentication failed: HTTP {answer.status_code} {answer.text[:300]}")
    return str(answer.json()["token"])


# --- a lean HTTP/1.1 client --------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection sending prepared requests: about 0.2 ms of CPU per
    call on the 2-CPU machine this was written on, where an httpx call costs milliseconds."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.local_port = 0
        self.worker: int | None = None

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.local_port = self.writer.get_extra_info("sockname")[1]
        return self

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = self.reader = None

    async def call(self, request: bytes) -> tuple[int, bytes]:
        """Send one request, read the whole answer: (status, body)."""
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
            body = await self.reader.readexactly(length) if length else b""
        elif b"\r\ntransfer-encoding: chunked" in lower:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(p[:-2] for p in parts)
        else:
            body = b""
        if b"\r\nconnection: close" in lower:
            await self.close()
        return status, body


def http_request(method: str, path: str, port: int, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


KEEP_ALIVE_REFRESH_S = 2.0


async def spread_connections(server: Server, count: int, workers: int) -> list[Connection]:
    """``count`` connections, as evenly spread over the ``workers`` processes as possible
    (the process that accepts a connection keeps it: surplus ones are closed and reopened)."""
    quota = -(-count // workers)
    ping = http_request("GET", HEALTHZ_PATH, server.port, {}, b"")
    kept: list[Connection] = []
    per_worker: Counter[int] = Counter()
    attempts = 0
    refreshed = time.monotonic()
    while len(kept) < count:
        attempts += 1
        if time.monotonic() - refreshed > KEEP_ALIVE_REFRESH_S:
            # the server closes a connection idle for its keep-alive (uvicorn: 5 s); a kept
            # one must still be open when the load begins
            for held in kept:
                await held.call(ping)
            refreshed = time.monotonic()
        if attempts > 40 * count + 200:
            raise BenchError(f"could not spread {count} connections over {workers} processes")
        conn = await Connection(server.port).open()
        status, _ = await conn.call(ping)
        if status != 200:
            raise BenchError(f"/healthz answered HTTP {status}")
        worker = None
        for _ in range(50):  # the accepted socket shows in /proc once the worker took it
            worker = server.worker_of(conn.local_port)
            if worker is not None:
                break
            await asyncio.sleep(0.01)
        if worker is None:
            raise BenchError("cannot tell which server process holds a connection (psutil)")
        if per_worker[worker] >= quota or (len(per_worker) == workers and worker not in per_worker):
            await conn.close()
            continue
        conn.worker = worker
        per_worker[worker] += 1
        kept.append(conn)
    if len(per_worker) != workers:
        raise BenchError(f"{len(per_worker)} server process(es) answered, not {workers}")
    for held in kept:
        await held.call(ping)
    return kept


# --- load phases -------------------------------------------------------------------------------


@dataclass
class Endpoint:
    key: str
    label: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    status: int = 200
    must_contain: bytes = b""


@dataclass
class Phase:
    endpoint: Endpoint
    requests: int = 0
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    database_cpu: float = 0.0
    machine_busy: float = 0.0  # CPU-seconds of the whole machine (every process, ours or not)
    reconnects: int = 0

    def merge(self, other: Phase) -> None:
        self.requests += other.requests
        self.wall += other.wall
        self.latencies += other.latencies
        self.client_cpu += other.client_cpu
        self.server_cpu += other.server_cpu
        self.database_cpu += other.database_cpu
        self.machine_busy += other.machine_busy
        self.reconnects += other.reconnects

    @property
    def rate(self) -> float:
        return self.requests / self.wall if self.wall else 0.0


class Meter:
    """CPU time of the client, the server, and the PostgreSQL backends of the bench database
    (found again at each sample: the pools open connections under load)."""

    def __init__(self, server: Server, database: Database, client_children: bool) -> None:
        self.server = server
        self.database = database.name
        self.client_children = client_children

    def _backends(self) -> dict[int, float]:
        if self.database is None:
            return {}
        found = {}
        for p in psutil.process_iter(["cmdline", "cpu_times"]):
            with contextlib.suppress(psutil.Error):
                if self.database in " ".join(p.info["cmdline"] or ()):
                    t = p.info["cpu_times"]
                    found[p.pid] = t.user + t.system
        return found

    def _client(self) -> float:
        usage = resource.getrusage(
            resource.RUSAGE_CHILDREN if self.client_children else resource.RUSAGE_SELF
        )
        return usage.ru_utime + usage.ru_stime

    @staticmethod
    def _machine() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.system + t.nice + getattr(t, "irq", 0) + getattr(t, "softirq", 0))

    def sample(self) -> tuple[float, float, dict[int, float], float]:
        return (self._client(), self.server.cpu_seconds(), self._backends(), self._machine())

    @staticmethod
    def spent(
        before: tuple[float, float, dict[int, float], float],
        after: tuple[float, float, dict[int, float], float],
    ) -> tuple[float, float, float, float]:
        """(client, server, database, machine) CPU seconds between two samples."""
        database = sum(cpu - before[2].get(pid, 0.0) for pid, cpu in after[2].items())
        return after[0] - before[0], after[1] - before[1], database, after[3] - before[3]


def _check(endpoint: Endpoint, status: int, body: bytes) -> str | None:
    if status != endpoint.status:
        return f"{endpoint.label}: HTTP {status} {body[:200]!r}"
    if endpoint.must_contain and endpoint.must_contain not in body:
        return f"{endpoint.label}: unexpected answer {body[:300]!r}"
    return None


async def raw_phase(
    conns: list[Connection], endpoint: Endpoint, seconds: float, phase: Phase | None
) -> None:
    """Every connection calls ``endpoint`` back to back for ``seconds``; latencies into
    ``phase`` (None: a warm-up)."""
    request = http_request(
        endpoint.method, endpoint.path, conns[0].port, endpoint.headers, endpoint.body
    )
    deadline = time.perf_counter() + seconds
    latencies: list[float] = [] if phase is None else phase.latencies
    reconnects = 0

    async def loop(conn: Connection) -> None:
        nonlocal reconnects
        clock = time.perf_counter
        while (start := clock()) < deadline:
            try:
                if conn.writer is None:
                    await conn.open()
                    reconnects += 1
                status, body = await conn.call(request)
            except (asyncio.IncompleteReadError, ConnectionError):
                await conn.close()
                continue
            latencies.append(clock() - start)
            if status != endpoint.status or (
                endpoint.must_contain and endpoint.must_contain not in body
            ):
                raise BenchError(_check(endpoint, status, body) or "unexpected answer")

    await asyncio.gather(*(loop(c) for c in conns))
    if phase is not None:
        phase.requests = len(latencies)
        phase.reconnects = reconnects


async def httpx_phase(
    client: httpx.AsyncClient,
    concurrency: int,
    endpoint: Endpoint,
    seconds: float,
    phase: Phase | None,
) -> None:
    deadline = time.perf_counter() + seconds
    latencies: list[float] = [] if phase is None else phase.latencies

    async def loop() -> None:
        clock = time.perf_counter
        while (start := clock()) < deadline:
            answer = await client.request(
                endpoint.method,
                endpoint.path,
                content=endpoint.body or None,
                headers=endpoint.headers,
            )
            latencies.append(clock() - start)
            problem = _check(endpoint, answer.status_code, answer.content)
            if problem is not None:
                raise BenchError(problem)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    if phase is not None:
        phase.requests = len(latencies)


WRK_SCRIPT = """
wrk.method = os.getenv("BENCH_METHOD")
local body = os.getenv("BENCH_BODY")
if body ~= "" then wrk.body = body end
wrk.headers["Authorization"] = os.getenv("BENCH_AUTHORIZATION")
local match = os.getenv("BENCH_IF_NONE_MATCH")
if match ~= "" then wrk.headers["If-None-Match"] = match end
if wrk.method == "POST" then wrk.headers["Content-Type"] = "application/json" end
"""

_WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_wrk(output: str) -> tuple[int, float, float, int]:
    """(requests, p50 s, p99 s, non-2xx/3xx answers) from ``wrk --latency``."""

    def seconds(value: str) -> float:
        number, unit = re.fullmatch(r"([0-9.]+)([a-z]+)", value).groups()  # type: ignore[union-attr]
        return float(number) * _WRK_UNITS[unit]

    done = re.search(r"^\s*(\d+) requests in", output, re.M)
    p50 = re.search(r"^\s*50(?:\.000)?%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s*99(?:\.000)?%\s+(\S+)", output, re.M)
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    if done is None or p50 is None or p99 is None:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    return (
        int(done.group(1)),
        seconds(p50.group(1)),
        seconds(p99.group(1)),
        int(bad.group(1)) if bad else 0,
    )


async def wrk_phase(
    wrk: str, script: Path, server: Server, concurrency: int, endpoint: Endpoint, seconds: float
) -> tuple[int, float, float]:
    env = os.environ | {
        "BENCH_METHOD": endpoint.method,
        "BENCH_BODY": endpoint.body.decode(),
        "BENCH_AUTHORIZATION": endpoint.headers.get("Authorization", ""),
        "BENCH_IF_NONE_MATCH": endpoint.headers.get("If-None-Match", ""),
    }
    command = [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency"]
    command += ["-s", str(script), server.base_url + endpoint.path]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"wrk failed ({process.returncode}):\n{out.decode(errors='replace')}")
    requests, p50, p99, bad = parse_wrk(out.decode(errors="replace"))
    expected_3xx = endpoint.status == 304
    if bad and not expected_3xx:
        raise BenchError(f"{endpoint.label}: {bad} answers were not 2xx/3xx")
    return requests, p50, p99


@dataclass
class LoadSettings:
    client: str  # wrk, raw or httpx
    concurrency: int
    duration: float
    warmup: float
    rounds: int
    workers: int
    wrk: str | None = None


async def validate(server: Server, endpoint: Endpoint) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        answer = await client.request(
            endpoint.method, endpoint.path, content=endpoint.body or None, headers=endpoint.headers
        )
    problem = _check(endpoint, answer.status_code, answer.content)
    if problem is not None:
        raise BenchError(problem)
    return answer


async def one_at_a_time(server: Server, endpoints: list[Endpoint], calls: int = 30) -> list[float]:
    """p50 seconds of each endpoint called alone (one connection, one request at a time)."""
    conn = await Connection(server.port).open()
    found = []
    try:
        for endpoint in endpoints:
            request = http_request(
                endpoint.method, endpoint.path, server.port, endpoint.headers, endpoint.body
            )
            latencies = []
            for _ in range(calls + 3):
                start = time.perf_counter()
                status, body = await conn.call(request)
                latencies.append(time.perf_counter() - start)
                problem = _check(endpoint, status, body)
                if problem is not None:
                    raise BenchError(problem)
            found.append(percentile(latencies[3:], 50))
    finally:
        await conn.close()
    return found


async def reads_phase(
    server: Server,
    database: Database,
    settings: LoadSettings,
    token: str,
    performance_id: int,
    tmp: Path,
    report: Report,
) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    body = orjson.dumps({"requestId": "bench", "performanceIds": [performance_id]})
    mirror = MIRROR_PATH.format(performance_id)
    endpoints = [
        Endpoint("healthz", "GET /healthz", "GET", HEALTHZ_PATH, auth),
        Endpoint(
            "rpc",
            "getPerformanceAvailability (RPC)",
            "POST",
            RPC_PATH,
            auth,
            body,
            must_contain=b'"statusCode":"success"',
        ),
        Endpoint("mirror", f"GET {MIRROR_PATH.format('{id}')}", "GET", mirror, auth),
    ]
    first = await validate(server, endpoints[2])
    etag = first.headers.get("etag")
    if not etag:
        raise BenchError(f"GET {mirror} answered without an ETag")
    endpoints.append(
        Endpoint(
            "mirror_304",
            "  same, If-None-Match -> 304",
            "GET",
            mirror,
            auth | {"If-None-Match": etag},
            status=304,
        )
    )
    for endpoint in endpoints:
        await validate(server, endpoint)

    alone = await one_at_a_time(server, endpoints[:2])
    phases = {e.key: Phase(e) for e in endpoints}
    meter = Meter(server, database, client_children=settings.client == "wrk")
    conns: list[Connection] = []
    client: httpx.AsyncClient | None = None
    script = tmp / "bench.lua"
    if settings.client == "raw":
        conns = await spread_connections(server, settings.concurrency, settings.workers)
        spread = sorted(Counter(c.worker for c in conns).values(), reverse=True)
        report.info["connections_per_process"] = spread
        report.notes.append(
            f"reads: {len(conns)} keep-alive connections, per server process: "
            + " + ".join(map(str, spread))
            + f"; the endpoints alternate over {settings.rounds} round(s), "
            f"{settings.warmup:g} s warm-up before each"
        )
    elif settings.client == "httpx":
        limits = httpx.Limits(
            max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
        )
        client = httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30)
    else:
        script.write_text(WRK_SCRIPT)
    slice_seconds = settings.duration / settings.rounds
    try:
        for round_ in range(settings.rounds):
            order = endpoints if round_ % 2 == 0 else endpoints[::-1]
            for endpoint in order:
                phase = Phase(endpoint)
                if settings.client == "wrk":
                    assert settings.wrk is not None
                    if settings.warmup:
                        await wrk_phase(
                            settings.wrk,
                            script,
                            server,
                            settings.concurrency,
                            endpoint,
                            settings.warmup,
                        )
                    before = meter.sample()
                    start = time.perf_counter()
                    requests, p50, p99 = await wrk_phase(
                        settings.wrk, script, server, settings.concurrency, endpoint, slice_seconds
                    )
                    phase.wall = time.perf_counter() - start
                    phase.requests = requests
                    phase.latencies = [p50, p99]  # wrk gives percentiles, not samples
                elif settings.client == "raw":
                    if settings.warmup:
                        await raw_phase(conns, endpoint, settings.warmup, None)
                    before = meter.sample()
                    start = time.perf_counter()
                    await raw_phase(conns, endpoint, slice_seconds, phase)
                    phase.wall = time.perf_counter() - start
                else:
                    assert client is not None
                    if settings.warmup:
                        await httpx_phase(
                            client, settings.concurrency, endpoint, settings.warmup, None
                        )
                    before = meter.sample()
                    start = time.perf_counter()
                    await httpx_phase(client, settings.concurrency, endpoint, slice_seconds, phase)
                    phase.wall = time.perf_counter() - start
                after = meter.sample()
                phase.client_cpu, phase.server_cpu, phase.database_cpu, phase.machine_busy = (
                    meter.spent(before, after)
                )
                phases[endpoint.key].merge(phase)
    finally:
        for conn in conns:
            await conn.close()
        if client is not None:
            await client.aclose()

    add = report.section(
        f"reads: {settings.concurrency} keep-alive connections, "
        f"{settings.duration:g} s per endpoint"
    )
    for endpoint, p50 in zip(endpoints, alone, strict=False):
        label = f"{endpoint.label}, one request at a time on one connection, p50"
        add(f"{endpoint.key}_alone_p50_ms", label, ms(p50), "ms")
    if alone[0] > NAGLE_SUSPECT_S:
        report.notes.append(
            f"GET /healthz alone takes {ms(alone[0]):.0f} ms on a keep-alive connection: the "
            "server's sockets lack TCP_NODELAY, so each answer's last segment waits for the "
            "client's delayed ACK (about 40 ms on Linux). uvicorn --workers N binds the "
            "listening socket itself without IPPROTO_TCP and asyncio then leaves Nagle on "
            "(uvicorn issue #3149). /healthz/s in the table is bounded by that delay "
            f"({settings.concurrency} connections / {ms(alone[0]):.0f} ms), not by CPU, so the "
            "reads/healthz ratios are flattered"
        )
    cpus = os.cpu_count() or 1
    healthz = phases["healthz"].rate
    for key, phase in phases.items():
        e = phase.endpoint
        if settings.client == "wrk":
            p50s, p99s = phase.latencies[0::2], phase.latencies[1::2]  # per round: the worst
            p50_ms, p99_ms = ms(max(p50s)), ms(max(p99s))
        else:
            p50_ms, p99_ms = (
                ms(percentile(phase.latencies, 50)),
                ms(percentile(phase.latencies, 99)),
            )
        add(f"{key}_rps", e.label, phase.rate, "req/s")
        add(f"{key}_p50_ms", "  latency p50", p50_ms, "ms")
        add(f"{key}_p99_ms", "  latency p99", p99_ms, "ms")
        if key in ("rpc", "mirror") and healthz:
            add(
                f"{key}_ratio",
                "  reads/s / healthz/s",
                phase.rate / healthz,
                "x",
                TARGET_READ_RATIO,
                at_least=True,
            )
        elif key == "mirror_304" and healthz:
            add(f"{key}_ratio", "  304s/s / healthz/s", phase.rate / healthz, "x")
        requests = max(phase.requests, 1)
        base = phases["healthz"]
        if key != "healthz" and base.requests and phase.server_cpu + phase.database_cpu:
            # what the rates would compare to were both bound by the CPU alone
            cpu = (phase.server_cpu + phase.database_cpu) / requests
            base_cpu = (base.server_cpu + base.database_cpu) / base.requests
            add(f"{key}_cpu_ratio", "  healthz CPU / this CPU, per request", base_cpu / cpu, "x")
        add(
            f"{key}_server_cpu_ms",
            "  server CPU per request",
            ms(phase.server_cpu / requests),
            "ms",
        )
        if database.name is not None:
            add(
                f"{key}_database_cpu_ms",
                "  PostgreSQL CPU per request (bench database's backends)",
                ms(phase.database_cpu / requests),
                "ms",
            )
        add(
            f"{key}_client_cpu_ms",
            "  client CPU per request",
            ms(phase.client_cpu / requests),
            "ms",
        )
        total = phase.client_cpu + phase.server_cpu + phase.database_cpu
        add(
            f"{key}_client_share",
            "  client's share of the CPU used (client + server + DB)",
            100 * phase.client_cpu / total if total else 0.0,
            "%",
        )
        add(
            f"{key}_machine_busy",
            f"  machine CPU busy (all processes, {cpus} CPUs)",
            100 * phase.machine_busy / (phase.wall * cpus) if phase.wall else 0.0,
            "%",
        )
        report.info[f"{key}_requests"] = phase.requests
        report.info[f"{key}_reconnects"] = phase.reconnects


# --- staleness ---------------------------------------------------------------------------------


async def current_sequence(engine: AsyncEngine, institution_id: int) -> int:
    q = inventory_db.inventory_sequence.c
    async with read(engine) as conn:
        value = (
            await conn.execute(sa.select(q.value).where(q.institution_id == institution_id))
        ).scalar_one()
    return int(value)


async def sell(
    engine: AsyncEngine, ids: Ids, performance: str, cart: str
) -> tuple[float, float, int]:
    """Hold then confirm 4 seats of the sale category: (hold s, confirm s, seats)."""
    now = datetime.now(UTC)
    request = PlaceRequest(
        QUANTITY,
        performance_id=ids.performances[performance],
        seat_category_id=ids.categories[SALE_CATEGORY],
    )
    with stopwatch() as held:
        hold = await hold_places(
            engine,
            institution_id=ids.institution,
            sales_channel_id=ids.web_channel,
            contingent_ids=[],
            cart=cart,
            requests=[request],
            expires_at=now + timedelta(minutes=30),
            now=now,
            actor="bench",
        )
    with stopwatch() as confirmed:
        await confirm_hold(
            engine,
            institution_id=ids.institution,
            hold_id=hold.id,
            now=datetime.now(UTC),
            actor="bench",
        )
    return held(), confirmed(), sum(line.quantity for line in hold.lines)


async def staleness_phase(
    server: Server,
    engine: AsyncEngine,
    ids: Ids,
    token: str,
    sales: int,
    workers: int,
    report: Report,
) -> None:
    performance = "M01"
    body = orjson.dumps({"requestId": "stale", "performanceIds": [ids.performances[performance]]})
    request = http_request(
        "POST", RPC_PATH, server.port, {"Authorization": f"Bearer {token}"}, body
    )
    probes = {c.worker: c for c in await spread_connections(server, workers, workers)}

    async def answer(conn: Connection) -> dict[str, Any]:
        status, raw = await conn.call(request)
        data: dict[str, Any] = orjson.loads(raw)
        if status != 200 or data.get("statusCode") != "success":
            raise BenchError(f"getPerformanceAvailability answered HTTP {status}: {raw[:300]!r}")
        return data

    sold = (await answer(next(iter(probes.values()))))["performanceAvailabilities"][0]["sold"]
    rng = random.Random(2026)
    every: list[float] = []  # per sale: until every process shows it
    each: list[float] = []  # per sale and process
    polls: list[float] = []  # one poll's round trip
    holds: list[float] = []
    confirms: list[float] = []
    late = 0

    async def watch(conn: Connection, target: int, expected_sold: int, start: float) -> float:
        while True:
            sent = time.perf_counter()
            try:
                data = await answer(conn)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                raise BenchError(f"a pinned connection was closed: {exc!r}") from None
            now = time.perf_counter()
            polls.append(now - sent)
            if data["sequence"] >= target:
                shown = data["performanceAvailabilities"][0]["sold"]
                if shown != expected_sold:
                    raise BenchError(
                        f"sequence {data['sequence']} shows {shown} sold, not {expected_sold}"
                    )
                return now - start
            if now - start > STALENESS_TIMEOUT_S:
                return STALENESS_TIMEOUT_S

    try:
        for i in range(sales):
            await asyncio.sleep(rng.uniform(0.05, 0.25))  # not in step with the 0.2 s polls
            before = await current_sequence(engine, ids.institution)
            hold_s, confirm_s, seats = await sell(engine, ids, performance, f"stale-{i}")
            start = time.perf_counter()  # confirm_hold has returned: the sale is committed
            sold += seats
            # hold_places and confirm_hold each log one change: the sale's sequence is before + 2
            seen = await asyncio.gather(
                *(watch(conn, before + 2, sold, start) for conn in probes.values())
            )
            holds.append(hold_s)
            confirms.append(confirm_s)
            each.extend(seen)
            every.append(max(seen))
            late += sum(1 for s in seen if s >= STALENESS_TIMEOUT_S)
    finally:
        for conn in probes.values():
            await conn.close()

    add = report.section(f"staleness: {sales} sales, {workers} server process(es)")
    add(
        "staleness_p50_ms", "commit -> every process shows it, p50", ms(percentile(every, 50)), "ms"
    )
    add(
        "staleness_p99_s",
        "commit -> every process shows it, p99",
        percentile(every, 99),
        "s",
        TARGET_STALENESS_P99_S,
    )
    add("staleness_max_ms", "  max", ms(max(every)), "ms")
    add("staleness_each_p50_ms", "  one process, p50", ms(percentile(each, 50)), "ms")
    add(
        "staleness_poll_p50_ms",
        "  one poll's round trip, p50 (the resolution)",
        ms(percentile(polls, 50)),
        "ms",
    )
    add("staleness_late", f"  processes not showing it within {STALENESS_TIMEOUT_S:g} s", late, "")
    add("sale_hold_p50_ms", "  the sale: hold_places p50", ms(percentile(holds, 50)), "ms")
    add("sale_confirm_p50_ms", "  the sale: confirm_hold p50", ms(percentile(confirms, 50)), "ms")


# --- best-available ----------------------------------------------------------------------------


def best_available_phase(calls: int, seed: int, report: Report) -> None:
    """``bench/best_available.py``'s venue and loop, at each share of seats taken."""
    plan = ba_bench.venue()
    args = argparse.Namespace(calls=calls, baseline_every=calls, quantity=QUANTITY, seed=seed)
    add = report.section(
        f"best-available, {QUANTITY} together, {len(plan):,}-seat venue "
        f"(bench/best_available.py, {calls} calls per level)"
    )
    for share in ba_bench.TAKEN_SHARES:
        try:
            timings, info = ba_bench.run_level(plan, share, args)
        except ba_bench.WrongAnswer as exc:
            raise BenchError(f"best-available answered wrongly: {exc}") from None
        by_index, cold, function, with_input, _ = timings
        level = f"{share:.0%}"
        key = f"{round(share * 100)}pct"
        add(
            f"ba_index_{key}_p99_ms",
            f"{level} taken: SeatIndex.best_available p99 (p50 {by_index.quantile(0.5):.3f})",
            by_index.quantile(0.99),
            "ms",
            TARGET_BEST_AVAILABLE_P99_MS,
        )
        add(
            f"ba_cold_{key}_p99_ms",
            "  cold, after SeatIndex.forget(), p99",
            cold.quantile(0.99),
            "ms",
        )
        add(
            f"ba_function_{key}_p99_ms",
            f"  best_available(free seats) p99 (p50 {function.quantile(0.5):.1f}), the former "
            "hold path",
            function.quantile(0.99),
            "ms",
        )
        add(
            f"ba_input_{key}_p99_ms",
            "  + building the free-seat list, p99",
            with_input.quantile(0.99),
            "ms",
        )
        report.info[f"ba_{key}"] = info


async def free_seats_read(
    engine: AsyncEngine, ids: Ids, performance: str
) -> tuple[float, float, float, int]:
    """What ``hold_places`` does to choose 4 seats of CAT1, step by step: (read s, build s,
    choose s, free seats)."""
    s, ps = inventory_db.stock.c, inventory_db.performance_seat.c
    async with read(engine) as conn:
        with stopwatch() as reading:
            stock_ids = [
                r.id
                for r in await conn.execute(
                    sa.select(s.id).where(
                        s.institution_id == ids.institution,
                        s.performance_id == ids.performances[performance],
                        s.seat_category_id == ids.categories[SALE_CATEGORY],
                        s.contingent_id.is_(None),
                    )
                )
            ]
            query = sa.select(ps.id, ps.stock_id, ps.block_id, ps.row_order, ps.position, ps.rank)
            free = (
                await conn.execute(
                    query.where(ps.stock_id.in_(stock_ids), ps.state == SeatState.FREE.value)
                )
            ).all()
    with stopwatch() as building:  # as _take_seats does: by stock, then FreeSeat per row
        groups = [[r for r in free if r.stock_id == stock_id] for stock_id in stock_ids]
        seats = [FreeSeat(r.id, r.block_id, r.row_order, r.position, r.rank) for r in groups[0]]
    with stopwatch() as choosing:
        best_available(seats, QUANTITY)
    return reading(), building(), choosing(), len(free)


async def index_timings(
    engine: AsyncEngine, ids: Ids, performance: str, calls: int = 200
) -> tuple[list[float], list[float], list[float]]:
    """The seat index of the hold path, by parts, in seconds: proposing 4 seats of CAT1 on the
    warm index (each proposal taken before the next); one catch-up with the change log when
    nothing is new; a cold build of the performance's index."""
    performance_id = ids.performances[performance]
    entry = indexes_of(engine).get(performance_id)
    if entry is None:
        raise BenchError("hold_places left no seat index for the performance")
    s = inventory_db.stock.c
    async with read(engine) as conn:
        stock_ids = list(
            (
                await conn.execute(
                    sa.select(s.id).where(
                        s.performance_id == performance_id,
                        s.seat_category_id == ids.categories[SALE_CATEGORY],
                        s.contingent_id.is_(None),
                    )
                )
            ).scalars()
        )
    proposals, refreshes, builds = [], [], []
    reserved: list[int] = []
    for _ in range(calls):  # as consecutive holds: each proposal is reserved before the next
        with stopwatch() as proposing:
            picked = entry.propose(stock_ids, QUANTITY, split_allowed=False)
        if picked is None:
            raise BenchError("the seat index proposed nothing")
        proposals.append(proposing())
        entry.reserve(picked)
        reserved.extend(picked)
    entry.unreserve(reserved)
    for _ in range(20):
        async with read(engine) as conn:
            with stopwatch() as refreshing:
                await indexing.refresh(conn, entry)
            refreshes.append(refreshing())
            with stopwatch() as building:
                await indexing.build(conn, ids.institution, performance_id)
            builds.append(building())
    return proposals, refreshes, builds


async def hold_phase(engine: AsyncEngine, ids: Ids, holds: int, report: Report) -> None:
    """``hold_places`` + ``confirm_hold`` for 4 seats of CAT1 on M02, end to end."""
    performance = "M02" if "M02" in ids.performances else "M01"
    for i in range(3):  # warm the engine's pool and statement caches, and build the index
        await sell(engine, ids, performance, f"warm-{i}")
    hold_times, confirm_times = [], []
    for i in range(holds):
        hold_s, confirm_s, _ = await sell(engine, ids, performance, f"hold-{i}")
        hold_times.append(hold_s)
        confirm_times.append(confirm_s)
    proposals, refreshes, builds = await index_timings(engine, ids, performance)
    reads, builds_free, chooses, free = [], [], [], 0
    for _ in range(20):
        read_s, build_s, choose_s, free = await free_seats_read(engine, ids, performance)
        reads.append(read_s)
        builds_free.append(build_s)
        chooses.append(choose_s)
    seats = ids.seats_per_category[SALE_CATEGORY]
    add = report.section(
        f"the database path: {holds} sales of {QUANTITY} seats in {SALE_CATEGORY} "
        f"({seats:,} seats, {free:,} free at the end)"
    )
    add("hold_p50_ms", "hold_places, p50", ms(percentile(hold_times, 50)), "ms")
    add("hold_p99_ms", "hold_places, p99", ms(percentile(hold_times, 99)), "ms")
    add("confirm_p50_ms", "confirm_hold, p50", ms(percentile(confirm_times, 50)), "ms")
    add("confirm_p99_ms", "confirm_hold, p99", ms(percentile(confirm_times, 99)), "ms")
    add(
        "hold_propose_p99_ms",
        f"  in hold_places: best-available from the seat index, p99 (p50 "
        f"{ms(percentile(proposals, 50)):.3f})",
        ms(percentile(proposals, 99)),
        "ms",
        5.0,
    )
    add(
        "hold_refresh_p50_ms",
        "  in hold_places: catching the index up with the change log (nothing new), p50",
        ms(percentile(refreshes, 50)),
        "ms",
    )
    add(
        "hold_index_build_p50_ms",
        "  once per process and performance: building the seat index (20,000 seats), p50",
        ms(percentile(builds, 50)),
        "ms",
    )
    add(
        "hold_read_free_p50_ms",
        "  the former path (no index): reading every free seat of the category, p50",
        ms(percentile(reads, 50)),
        "ms",
    )
    add(
        "hold_build_p50_ms",
        "  the former path: a FreeSeat per row read (row attributes, frozen dataclass), p50",
        ms(percentile(builds_free, 50)),
        "ms",
    )
    add(
        "hold_choose_p50_ms",
        "  the former path: best_available over them, p50",
        ms(percentile(chooses, 50)),
        "ms",
    )


# --- output ------------------------------------------------------------------------------------


def _format(value: float, unit: str) -> str:
    if unit in ("", "req/s"):
        return f"{value:,.0f} {unit}".rstrip()
    if unit == "x":
        return f"{value:.2f} x"
    return f"{value:,.3f} {unit}" if unit == "s" else f"{value:,.2f} {unit}"


def render(report: Report) -> None:
    info = report.info
    table = Table(
        title=f"billetterie availability benchmark ({info.get('backend')}, "
        f"{info.get('workers')} server process(es), client: {info.get('client')})"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("result")
    for section, figures in report.sections.items():
        table.add_section()
        table.add_row(f"[bold]{section}[/]", "", "", "")
        for f in figures:
            result = {None: "", True: "[green]PASS[/]", False: "[bold red]FAIL[/]"}[f.passed]
            table.add_row(f.label, _format(f.value, f.unit), f.target_text, result)
    console.print(table)
    console.print(f"reference (quoted, not measured by this script): {REFERENCE}")
    for note in report.notes:
        console.print(note)
    console.print(
        f"{info.get('backend')}: {info.get('seats_per_performance', 0):,} seats x "
        f"{info.get('performances')} performances; load average "
        f"{info.get('load_average_start')} -> {info.get('load_average_end')} "
        f"on {info.get('cpus')} CPUs"
    )
    failures = report.failures()
    if not failures:
        console.print("[bold green]every target met[/]")
        return
    console.print(f"[bold red]{len(failures)} target(s) missed:[/]")
    for f in failures:
        console.print(
            f"  [red]FAIL[/] {f.label.strip()}: {_format(f.value, f.unit)}, target {f.target_text}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server, on which a fresh database is created and dropped at the end; "
        "'sqlite' for a SQLite file in a temporary directory",
    )
    parser.add_argument("--workers", type=int, default=2, help="server processes (serve --workers)")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per endpoint"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each slice")
    parser.add_argument("--rounds", type=int, default=2, help="the endpoints alternate this often")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "raw", "httpx"),
        default="auto",
        help="load generator: wrk if installed (auto), else a lean asyncio client (raw)",
    )
    parser.add_argument("--sales", type=int, default=60, help="sales timed for staleness")
    parser.add_argument("--holds", type=int, default=200, help="hold_places timed on the stadium")
    parser.add_argument("--performances", type=int, default=4)
    parser.add_argument(
        "--ba-calls", type=int, default=100, help="best-available calls per level (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--holds-only",
        action="store_true",
        help="import, then only the database path (hold_places, confirm_hold): no server",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if min(args.workers, args.concurrency, args.rounds, args.sales, args.holds) < 1:
        parser.error("--workers, --concurrency, --rounds, --sales, --holds: >= 1")
    if args.duration <= 0 or args.warmup < 0 or args.performances < 1 or args.ba_calls < 0:
        parser.error("--duration > 0, --warmup >= 0, --performances >= 1, --ba-calls >= 0")
    return args


def load_settings(args: argparse.Namespace, report: Report) -> LoadSettings:
    wrk = shutil.which("wrk")
    client = args.client
    if client == "auto":
        client = "wrk" if wrk else "raw"
    if client == "wrk" and wrk is None:
        raise BenchError("--client wrk: wrk is not installed")
    if client != "wrk" and wrk is None:
        report.notes.append(
            "wrk is not installed (command -v wrk): the load comes from this Python process "
            f"({client} client), on the same {os.cpu_count()} CPUs as the server"
        )
    report.info["client"] = client
    return LoadSettings(
        client, args.concurrency, args.duration, args.warmup, args.rounds, args.workers, wrk
    )


async def served_phases(
    args: argparse.Namespace,
    database: Database,
    server: Server,
    ids: Ids,
    secret: str,
    tmp: Path,
    report: Report,
) -> None:
    settings = load_settings(args, report)
    token = token_of(server, WEB_OPERATOR, WEB_PARTNER, secret)
    token_of(server, RESELLER_OPERATOR, RESELLER_PARTNER, secret)  # the reseller can log in too
    with console.status("reads over HTTP"):
        await reads_phase(server, database, settings, token, ids.performances["M01"], tmp, report)
    engine = create_engine(database.url)
    try:
        with console.status("staleness after sales"):
            await staleness_phase(server, engine, ids, token, args.sales, args.workers, report)
        with console.status("hold_places on the stadium"):
            await hold_phase(engine, ids, args.holds, report)
    finally:
        await engine.dispose()


async def holds_only(url: str, ids: Ids, holds: int, report: Report) -> None:
    engine = create_engine(url)
    try:
        with console.status("hold_places on the stadium"):
            await hold_phase(engine, ids, holds, report)
    finally:
        await engine.dispose()


def run(args: argparse.Namespace, report: Report) -> None:
    report.info |= {
        "workers": args.workers,
        "concurrency": args.concurrency,
        "duration": args.duration,
        "rounds": args.rounds,
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
        with console.status("generating and importing the stadium"):
            ids = asyncio.run(import_phase(database.url, args.performances, report))
        if args.holds_only:
            asyncio.run(holds_only(database.url, ids, args.holds, report))
            return
        if args.ba_calls:
            with console.status("best-available on 80,000 seats (in process)"):
                best_available_phase(args.ba_calls, args.seed, report)
        env = server_env(database.url, tmp / "var")
        secret = secrets.token_urlsafe(24)
        with console.status(f"starting billetterie serve --workers {args.workers}"):
            create_operator(env, WEB_OPERATOR, WEB_POS, WEB_PARTNER, secret)
            create_operator(env, RESELLER_OPERATOR, RESELLER_POS, RESELLER_PARTNER, secret)
            server = start_server(env, tmp / "server.log", args.workers)
        asyncio.run(served_phases(args, database, server, ids, secret, tmp, report))
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
    render(report)
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2))
        console.print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
