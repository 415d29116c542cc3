"""Benchmark of the box office's external printing interface against the wallet, end to end.

The wallet runs as its own process (``billetterie-wallet serve``, SQLite in a temporary
directory, or ``--wallet-database-url postgresql://...``); the box office is this process, on
its own fresh database (SQLite by default, ``--database-url postgresql://...``) with the BENCH
institution of ``bench/catalog.py`` and a WALLET interface. ``--tickets`` sold tickets are
written straight into the sales tables with barcodes signed by the box office's key (setup,
not timed). Then, timed, exactly what ``billetterie printing run`` does:

* **injection** (issue 5's target: 100,000 tickets <= 60 s): every NOT_PRINTED ticket read,
  sent in batches of 1000 to ``POST organizer/tickets`` over HTTP, and marked PRINTED with its
  ``printing_ticket`` row; checked: every ticket PRINTED, in the wallet exactly once;
* **feedback of the injection**: the whole feed (one change per ticket) stored;
* **push controlled**: ``--changes`` tickets made CONTROLLED in the box office, then pushed;
* **feedback over changes** (target: 10,000 changes <= 5 s): those changes read and stored;
* **feedback with new owners**: ``--owners`` tickets re-injected to new emails (the wallet moves
  a ticket still INJECTED to its new owner), then feedback, which creates a contact for each.

A benchmark, not a test: it exits 0 when a target is missed, 1 only when the run fails.

    .venv/bin/python bench/printing.py [--tickets 100000] [--json figures.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))

from billetterie.catalog import db as catalog_db
from billetterie.catalog.setupfile import parse_document
from billetterie.contacts import db as contacts_db
from billetterie.migrations import upgrade
from billetterie.printing import db as printing_db
from billetterie.printing.models import Function
from billetterie.printing.services import interface_by_code
from billetterie.printing.tasks import run_function
from billetterie.sales import db as sales_db
from billetterie.sales.barcode_keys import BarcodeRequest, KeyVault, issue_barcodes
from billetterie.setup import import_institution
from billetterie.shared.clock import SystemClock
from billetterie.shared.db import create_engine, read, transaction
from catalog import build_document
from wallet import free_port, postgres_database

console = Console()
KEY = re.compile(r"API key \(shown once\): (bwk_\S+)")
TARGET_INJECTION_S = 60.0
TARGET_FEEDBACK_S = 5.0


async def sell(engine: Any, institution_id: int, count: int, now: datetime) -> list[int]:
    """``count`` sold places spread over the institution's performances, 10 per order."""
    c = catalog_db
    async with read(engine) as conn:
        pos = (
            await conn.execute(
                sa.select(c.point_of_sale.c.id, c.point_of_sale.c.sales_channel_id).where(
                    c.point_of_sale.c.institution_id == institution_id
                )
            )
        ).first()
        organization_id = (
            await conn.execute(
                sa.select(c.organization.c.id).where(
                    c.organization.c.institution_id == institution_id
                )
            )
        ).scalar_one()
        performances = (
            await conn.execute(
                sa.select(
                    c.performance.c.id,
                    c.performance.c.product_id,
                    c.performance.c.start,
                    c.performance.c.duration,
                    c.product.c.code,
                    c.product.c.name,
                )
                .join(c.product, c.product.c.id == c.performance.c.product_id)
                .where(c.performance.c.institution_id == institution_id)
                .order_by(c.performance.c.id)
            )
        ).all()
        tariff = (
            (
                await conn.execute(
                    sa.select(c.audience_sub_category.c.id).where(
                        c.audience_sub_category.c.institution_id == institution_id
                    )
                )
            )
            .scalars()
            .first()
        )
    assert pos is not None and tariff is not None
    ticket_ids: list[int] = []
    per_order = 10
    async with transaction(engine) as conn:
        next_id = 1
        for first in range(0, count, 1000):
            orders, operations, movements, tickets = [], [], [], []
            for index in range(first, min(count, first + 1000)):
                perf = performances[index % len(performances)]
                order_id = index // per_order + 1
                if index % per_order == 0:
                    orders.append(
                        {
                            "id": order_id,
                            "institution_id": institution_id,
                            "point_of_sale_id": pos.id,
                            "sales_channel_id": pos.sales_channel_id,
                            "secret_id": secrets.token_hex(16),
                            "operator": "bench",
                            "order_type": "SALE",
                            "state": "CLOSED",
                            "currency": "CHF",
                            "total": 45000 * per_order,
                            "paid": 45000 * per_order,
                            "language": "en",
                            "purchaser": {
                                "firstName": "Spectator",
                                "lastName": f"N{order_id}",
                                "email": f"spectator{order_id}@bench.example.org",
                            },
                            "created_at": now,
                            "updated_at": now,
                            "closed_at": now,
                        }
                    )
                    operations.append(
                        {
                            "id": order_id,
                            "institution_id": institution_id,
                            "order_id": order_id,
                            "kind": "SINGLE_ENTRY",
                            "product_id": perf.product_id,
                            "state": "SOLD",
                            "quantity": per_order,
                            "created_at": now,
                        }
                    )
                movements.append(
                    {
                        "id": next_id,
                        "institution_id": institution_id,
                        "order_id": order_id,
                        "operation_id": order_id,
                        "product_id": perf.product_id,
                        "performance_id": perf.id,
                        "audience_sub_category_id": tariff,
                        "stock_id": 0,
                        "amount": 45000,
                        "vat_rate": 8100,
                        "state": "SOLD",
                        "labels": {
                            "product": perf.name,
                            "productCode": perf.code,
                            "productFamily": "SINGLE_ENTRY",
                            "start": perf.start.isoformat(),
                            "duration": perf.duration,
                            "venue": {"en": "Bench Theatre"},
                            "tariff": {"en": "Full price"},
                            "seatCategory": {"en": "Category 1"},
                            "block": {"en": "A"},
                            "row": str(index % 30 + 1),
                            "number": str(index % 40 + 1),
                        },
                        "created_at": now,
                    }
                )
                tickets.append(
                    {
                        "id": next_id,
                        "institution_id": institution_id,
                        "order_id": order_id,
                        "movement_id": next_id,
                        "product_id": perf.product_id,
                        "performance_id": perf.id,
                        "state": "NOT_PRINTED",
                        "issued_at": now,
                        "_until": max(perf.start, now) + timedelta(days=1),
                    }
                )
                next_id += 1
            barcodes = await issue_barcodes(
                conn,
                KeyVault("bench-barcode-secret-" + "x" * 24),
                institution_id=institution_id,
                organization_id=organization_id,
                tickets=[
                    BarcodeRequest(t["id"], t["performance_id"], t["_until"]) for t in tickets
                ],
                now=now,
            )
            for t, code in zip(tickets, barcodes, strict=True):
                del t["_until"]
                t["barcode"] = code
            if orders:
                await conn.execute(sa.insert(sales_db.sales_order), orders)
                await conn.execute(sa.insert(sales_db.operation), operations)
            await conn.execute(sa.insert(sales_db.movement), movements)
            await conn.execute(sa.insert(sales_db.ticket), tickets)
            ticket_ids += [t["id"] for t in tickets]
    return ticket_ids


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def bench(
    args: argparse.Namespace,
    wallet: str,
    key: str,
    figures: dict[str, Any],
    server: psutil.Process,
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="printing-bench-"))
    pg_name = None
    if args.database_url == "sqlite":
        url = f"sqlite+aiosqlite:///{folder / 'box.db'}"
    else:
        pg_name = f"printing_bench_{secrets.token_hex(4)}"
        url = await asyncio.to_thread(postgres_database, args.database_url, pg_name)
        url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    clock = SystemClock()
    try:
        data = build_document(2, 10)
        data["printingInterfaces"] = [
            {
                "code": "WALLET",
                "url": f"{wallet}/api/v1/organizer/tickets",
                "login": "box-office",
                "apiKey": key,
                "products": [p["code"] for p in data["products"]],
            }
        ]
        result = await import_institution(
            engine, parse_document(data), now=clock.now(), actor="bench"
        )
        institution_id = result.institution_id
        started = time.perf_counter()
        ticket_ids = await sell(engine, institution_id, args.tickets, clock.now())
        figures["setup_s"] = time.perf_counter() - started
        async with read(engine) as conn:
            item = await interface_by_code(conn, institution_id, "WALLET")
        async with httpx.AsyncClient(timeout=60) as http:
            box_office = psutil.Process()
            figures["cpu"] = {}

            async def run(function: Function) -> tuple[float, Any]:
                cpu_box, cpu_wallet = cpu(box_office), cpu(server)
                begun = time.perf_counter()
                outcome = await run_function(engine, item, function, http=http, clock=clock)
                elapsed = time.perf_counter() - begun
                if outcome.error:
                    raise RuntimeError(f"{function.value}: {outcome.error}")
                figures["cpu"].setdefault(function.value, []).append(
                    {"box_office": cpu(box_office) - cpu_box, "wallet": cpu(server) - cpu_wallet}
                )
                return elapsed, outcome

            figures["injection_s"], injected = await run(Function.INJECTION)
            figures["injected"] = injected.counts.accepted
            t = sales_db.ticket.c
            async with read(engine) as conn:
                states = dict(
                    (
                        await conn.execute(sa.select(t.state, sa.func.count()).group_by(t.state))
                    ).all()
                )
            figures["printed"] = states.get("PRINTED", 0)
            figures["feedback_injection_s"], fed = await run(Function.FEEDBACK)
            figures["feedback_injection_changes"] = fed.counts.accepted

            chosen = ticket_ids[: args.changes]
            async with transaction(engine) as conn:
                for start in range(0, len(chosen), 500):
                    await conn.execute(
                        sa.update(sales_db.ticket)
                        .where(t.id.in_(chosen[start : start + 500]))
                        .values(state="CONTROLLED", controlled_at=clock.now())
                    )
            figures["push_controlled_s"], pushed = await run(Function.PUSH_CONTROLLED)
            figures["pushed"] = pushed.counts.accepted
            figures["feedback_changes_s"], fed = await run(Function.FEEDBACK)
            figures["feedback_changes"] = fed.counts.accepted

            # New owners: tickets still INJECTED re-sent to other emails move to them.
            moved = ticket_ids[args.changes : args.changes + args.owners]
            if moved:
                async with read(engine) as conn:
                    rows = (
                        await conn.execute(
                            sa.select(sales_db.ticket).where(t.id.in_(moved)).order_by(t.id)
                        )
                    ).all()
                documents = [
                    {
                        "ticketId": str(r.id),
                        "event": {
                            "id": f"PERF-{r.performance_id}",
                            "name": "Bench",
                            "startTime": clock.now().isoformat(),
                        },
                        "purchaseDetails": {"orderId": str(r.order_id)},
                        "security": {"barcode": r.barcode},
                        "spectatorDetails": {"email": f"owner{r.id}@bench.example.org"},
                        "activationParameters": {"groupId": f"PERF-{r.performance_id}"},
                    }
                    for r in rows
                ]
                for start in range(0, len(documents), 1000):
                    response = await http.post(
                        f"{wallet}/api/v1/organizer/tickets",
                        json={"tickets": documents[start : start + 1000]},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    response.raise_for_status()
                async with read(engine) as conn:
                    before = (
                        await conn.execute(
                            sa.select(sa.func.count()).select_from(contacts_db.contact)
                        )
                    ).scalar_one()
                figures["feedback_owners_s"], fed = await run(Function.FEEDBACK)
                async with read(engine) as conn:
                    after = (
                        await conn.execute(
                            sa.select(sa.func.count()).select_from(contacts_db.contact)
                        )
                    ).scalar_one()
                    linked = (
                        await conn.execute(
                            sa.select(sa.func.count())
                            .select_from(printing_db.printing_ticket)
                            .where(printing_db.printing_ticket.c.owner_contact_number.is_not(None))
                        )
                    ).scalar_one()
                figures["feedback_owners_changes"] = fed.counts.accepted
                figures["contacts_created"] = after - before
                figures["owners_linked"] = linked
    finally:
        await engine.dispose()
        shutil.rmtree(folder, ignore_errors=True)
        if pg_name is not None:
            await asyncio.to_thread(postgres_database, args.database_url, pg_name, drop=True)


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    table = Table(title=f"external printing, {args.tickets:,} tickets ({figures['database']})")
    table.add_column("step")
    table.add_column("items", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("items/s", justify="right")
    table.add_column("target")

    def row(label: str, items: int, seconds: float, target: float | None = None) -> None:
        verdict = (
            ""
            if target is None
            else ("met" if seconds <= target else "MISSED") + f" (<= {target:g} s)"
        )
        table.add_row(label, f"{items:,}", f"{seconds:.2f}", f"{items / seconds:,.0f}", verdict)

    row(
        "injection (read, POST, mark PRINTED)",
        figures["injected"],
        figures["injection_s"],
        TARGET_INJECTION_S,
    )
    row(
        "feedback of the injection",
        figures["feedback_injection_changes"],
        figures["feedback_injection_s"],
    )
    row("push controlled", figures["pushed"], figures["push_controlled_s"])
    row(
        "feedback over changes",
        figures["feedback_changes"],
        figures["feedback_changes_s"],
        TARGET_FEEDBACK_S,
    )
    if "feedback_owners_s" in figures:
        row(
            f"feedback with new owners ({figures['contacts_created']:,} contacts)",
            figures["feedback_owners_changes"],
            figures["feedback_owners_s"],
        )
    console.print(table)
    injection = figures["cpu"]["injection"][0]
    console.print(
        f"CPU of the injection (user + system): box office {injection['box_office']:.1f} s "
        f"({1000 * injection['box_office'] / max(1, figures['injected'] / 1000):.0f} ms per "
        f"1000 tickets, its database driver's thread included), wallet server "
        f"{injection['wallet']:.1f} s "
        f"({1000 * injection['wallet'] / max(1, figures['injected'] / 1000):.0f} ms per 1000)"
    )
    console.print(
        f"setup (selling and signing {args.tickets:,} tickets, untimed): "
        f"{figures['setup_s']:.1f} s; "
        f"PRINTED afterwards: {figures['printed']:,}; load average {figures['load_start']:.2f} → "
        f"{os.getloadavg()[0]:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default="sqlite", help="the box office: sqlite or PostgreSQL"
    )
    parser.add_argument(
        "--wallet-database-url", default="sqlite", help="the wallet: sqlite or PostgreSQL"
    )
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--owners", type=int, default=1_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.changes = min(args.changes, args.tickets)
    args.owners = max(0, min(args.owners, args.tickets - args.changes))

    folder = Path(tempfile.mkdtemp(prefix="printing-bench-wallet-"))
    pg_name = None
    if args.wallet_database_url == "sqlite":
        url = f"sqlite+aiosqlite:///{folder / 'wallet.db'}"
    else:
        pg_name = f"wallet_bench_{secrets.token_hex(4)}"
        url = postgres_database(args.wallet_database_url, pg_name)
    env = {
        **os.environ,
        "BILLETTERIE_WALLET_DATABASE_URL": url,
        "BILLETTERIE_WALLET_VAR_DIR": str(folder),
        "BILLETTERIE_WALLET_BACKGROUND_TASKS": "false",
    }
    cli = [sys.executable, "-m", "billetterie_wallet.cli"]
    created = subprocess.run(
        [*cli, "organizers", "create", "BENCH"], env=env, capture_output=True, text=True, check=True
    )
    match = KEY.search(created.stdout)
    if match is None:
        console.print(created.stdout, created.stderr)
        return 1
    port = free_port()
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    figures: dict[str, Any] = {
        "database": f"box office {args.database_url.split(':')[0]}, "
        f"wallet {args.wallet_database_url.split(':')[0]}",
        "load_start": os.getloadavg()[0],
    }
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    console.print("[red]the wallet did not start[/]")
                    return 1
                time.sleep(0.2)
        asyncio.run(bench(args, base, match.group(1), figures, psutil.Process(server.pid)))
    finally:
        server.terminate()
        server.wait(15)
        shutil.rmtree(folder, ignore_errors=True)
        if pg_name is not None:
            postgres_database(args.wallet_database_url, pg_name, drop=True)
    report(figures, args)
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
