"""``billetterie printing``: configure the external printing interfaces, list them, run one
of their functions now (with a progress bar) and read the execution log."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from billetterie.config import Settings

printing_app = typer.Typer(help="External printing interfaces (the wallet).", no_args_is_help=True)
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

FUNCTIONS = ("injection", "feedback", "push-cancelled", "push-controlled", "privileges")
Institution = Annotated[
    str | None, typer.Option("--institution", "-i", help="Institution code (default: every one).")
]
Organization = Annotated[
    str | None, typer.Option("--organization", "-o", help="Only this organization's interfaces.")
]


def _settings() -> Settings:
    from billetterie.migrations import upgrade

    settings = Settings()
    upgrade(settings.resolved_database_url())
    return settings


def _fail(detail: str) -> typer.Exit:
    errors.print(f"[red]{detail}[/]")
    return typer.Exit(2)


async def _scope(conn: Any, institution: str | None, organization: str | None) -> list[Any]:
    """The organizations named (all when neither is given)."""
    from billetterie.catalog.services import organization_refs

    refs = [
        r
        for r in await organization_refs(conn)
        if (institution is None or r.institution_code == institution)
        and (organization is None or r.organization_code == organization)
    ]
    return refs


@printing_app.command("configure")
def configure(
    code: Annotated[str, typer.Argument(help="The interface's code, e.g. WALLET.")],
    url: Annotated[str, typer.Option(help="The wallet's URL, ending with organizer/tickets.")],
    product: Annotated[
        list[str], typer.Option("--product", "-p", help="A product code (repeat for several).")
    ],
    organization: Annotated[str, typer.Option("--organization", "-o", help="Organization code.")],
    institution: Institution = None,
    login: Annotated[str, typer.Option(help="The login (the wallet does not check it).")] = "box",
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="The wallet's API key (default: keep the current one)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1000, help="Items per call.")] = 1000,
    every: Annotated[
        list[str] | None,
        typer.Option(help="FUNCTION=SECONDS, e.g. push-controlled=60 (repeat for several)."),
    ] = None,
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Configure it switched off.")
    ] = False,
) -> None:
    """Create or change an interface of type WALLET."""
    from billetterie.printing.services import InterfaceSpec, configure_interface
    from billetterie.shared.clock import SystemClock
    from billetterie.shared.db import create_engine, read
    from billetterie.shared.errors import DomainError

    schedule: dict[str, int] = {}
    for item in every or []:
        name, _, seconds = item.partition("=")
        if name not in FUNCTIONS or not seconds.isdigit():
            raise _fail(
                f"--every takes FUNCTION=SECONDS with FUNCTION one of {', '.join(FUNCTIONS)}"
            )
        schedule[name] = int(seconds)
    settings = _settings()

    async def run() -> Any:
        engine = create_engine(settings.resolved_database_url())
        try:
            async with read(engine) as conn:
                refs = await _scope(conn, institution, organization)
            if len(refs) != 1:
                raise _fail(
                    f"no organization {organization}"
                    if not refs
                    else f"organization {organization} is in several institutions: pass -i"
                )
            spec = InterfaceSpec(
                code=code,
                organization_id=refs[0].organization_id,
                url=url,
                login=login,
                api_key=api_key,
                products=tuple(product),
                schedule=schedule,
                batch_size=batch_size,
                enabled=not disabled,
            )
            return await configure_interface(
                engine, refs[0].institution_id, spec, now=SystemClock().now(), actor="cli"
            )
        finally:
            await engine.dispose()

    try:
        item = asyncio.run(run())
    except DomainError as exc:
        raise _fail(exc.detail) from None
    console.print(f"[green]interface {item.code}[/] → {item.url} ({', '.join(item.products)})")


@printing_app.command("list")
def list_command(institution: Institution = None, organization: Organization = None) -> None:
    """The interfaces with their products and schedule (API keys are not shown)."""
    from billetterie.printing.services import list_interfaces
    from billetterie.shared.db import create_engine, read

    settings = _settings()

    async def run() -> list[tuple[Any, Any]]:
        engine = create_engine(settings.resolved_database_url())
        try:
            async with read(engine) as conn:
                found = []
                for ref in await _scope(conn, institution, organization):
                    for item in await list_interfaces(conn, ref.institution_id):
                        if item.organization_id == ref.organization_id:
                            found.append((ref, item))
                return found
        finally:
            await engine.dispose()

    table = Table(title="printing interfaces")
    for column in ("institution", "organization", "code", "type", "url", "products", "batch"):
        table.add_column(column)
    table.add_column("schedule (s)")
    table.add_column("enabled")
    rows = asyncio.run(run())
    for ref, item in rows:
        table.add_row(
            ref.institution_code,
            ref.organization_code,
            item.code,
            item.type.value,
            item.url,
            ", ".join(item.products),
            str(item.batch_size),
            " ".join(f"{f}={item.every(_function(f))}" for f in FUNCTIONS),
            "yes" if item.enabled else "no",
        )
    console.print(table)
    if not rows:
        console.print("no printing interface")


def _function(name: str) -> Any:
    from billetterie.printing.models import Function

    return Function(name)


@printing_app.command("run")
def run_command(
    function: Annotated[str, typer.Argument(help=" | ".join(FUNCTIONS))],
    organization: Organization = None,
    institution: Institution = None,
    interface: Annotated[
        str | None, typer.Option("--interface", help="Only this interface's code.")
    ] = None,
) -> None:
    """Run one function now for the matching enabled interfaces (logged like a scheduled run)."""
    import httpx

    from billetterie.printing.models import Counts
    from billetterie.printing.services import list_interfaces
    from billetterie.printing.tasks import run_function
    from billetterie.printing.wallet import DEFAULT_TIMEOUT
    from billetterie.shared.clock import SystemClock
    from billetterie.shared.db import create_engine, read

    if function not in FUNCTIONS:
        raise _fail(f"FUNCTION is one of {', '.join(FUNCTIONS)}")
    settings = _settings()

    async def run() -> list[Any]:
        engine = create_engine(settings.resolved_database_url())
        results = []
        try:
            async with read(engine) as conn:
                chosen = [
                    item
                    for ref in await _scope(conn, institution, organization)
                    for item in await list_interfaces(conn, ref.institution_id)
                    if item.organization_id == ref.organization_id
                    and item.enabled
                    and (interface is None or item.code == interface)
                ]
            async with httpx.AsyncClient(timeout=DEFAULT_TIMEOUT) as http:
                with Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TextColumn("{task.fields[counts]}"),
                    TimeElapsedColumn(),
                    console=console,
                ) as bar:
                    for item in chosen:
                        task = bar.add_task(f"{item.code} {function}", total=None, counts="")

                        def show(counts: Counts, task: Any = task) -> None:
                            bar.update(
                                task,
                                counts=f"sent {counts.sent} accepted {counts.accepted} "
                                f"failed {counts.failed}",
                            )

                        result = await run_function(
                            engine,
                            item,
                            _function(function),
                            http=http,
                            clock=SystemClock(),
                            progress=show,
                        )
                        show(result.counts)
                        bar.update(task, total=1, completed=1)
                        results.append((item, result))
        finally:
            await engine.dispose()
        return results

    results = asyncio.run(run())
    if not results:
        console.print("no enabled interface matches")
    failed = False
    colors = {"SUCCEEDED": "green", "PARTIAL": "yellow", "FAILED": "red"}
    for item, result in results:
        status = result.status.value
        console.print(
            f"{item.code} {function}: [{colors.get(status, 'white')}]{status}[/] "
            f"sent {result.counts.sent}, accepted {result.counts.accepted}, "
            f"failed {result.counts.failed}" + (f" — {result.error}" if result.error else "")
        )
        failed |= status == "FAILED"
    if failed:
        raise typer.Exit(1)


@printing_app.command("log")
def log_command(
    institution: Institution = None,
    function: Annotated[str | None, typer.Option(help=" | ".join(FUNCTIONS))] = None,
    interface: Annotated[str | None, typer.Option("--interface", help="Interface code.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many runs.")] = 50,
) -> None:
    """The execution log, newest first: when, counts sent / accepted / failed, error."""
    from billetterie.catalog.services import institution_id_by_code
    from billetterie.printing.services import list_executions
    from billetterie.shared.db import create_engine, read
    from billetterie.shared.errors import DomainError

    if function is not None and function not in FUNCTIONS:
        raise _fail(f"--function is one of {', '.join(FUNCTIONS)}")
    settings = _settings()

    async def run() -> list[Any]:
        engine = create_engine(settings.resolved_database_url())
        try:
            async with read(engine) as conn:
                institution_id = (
                    await institution_id_by_code(conn, institution) if institution else None
                )
                page = await list_executions(
                    conn,
                    institution_id,
                    function=_function(function) if function else None,
                    interface_code=interface,
                    limit=limit,
                )
                return page.executions
        finally:
            await engine.dispose()

    try:
        runs = asyncio.run(run())
    except DomainError as exc:
        raise _fail(exc.detail) from None
    table = Table(title="printing executions")
    for column in ("id", "interface", "function", "trigger", "status", "started", "finished"):
        table.add_column(column)
    for column in ("sent", "accepted", "failed"):
        table.add_column(column, justify="right")
    table.add_column("error")
    for e in runs:
        table.add_row(
            str(e.id),
            e.interface_code,
            e.function.value,
            e.trigger,
            e.status.value,
            e.started_at.isoformat(timespec="seconds"),
            e.finished_at.isoformat(timespec="seconds") if e.finished_at else "",
            str(e.sent),
            str(e.accepted),
            str(e.failed),
            (e.error or "").split("\n")[0],
        )
    console.print(table)
    if not runs:
        console.print("no run yet")
