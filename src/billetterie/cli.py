"""The ``billetterie`` command: demo, serve, migrate, setup import/export, operators."""

from __future__ import annotations

import asyncio
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from billetterie.config import Settings
from billetterie_wallet import cli as wallet_cli

app = typer.Typer(
    help="billetterie: an open-source box office (S-360 compatible).", no_args_is_help=True
)
setup_app = typer.Typer(help="Import or export an institution's setup file.", no_args_is_help=True)
operators_app = typer.Typer(help="Manage API operators.", no_args_is_help=True)
app.add_typer(setup_app, name="setup")
app.add_typer(operators_app, name="operators")
app.add_typer(wallet_cli.app, name="wallet")
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

DEMO_FILE = Path(__file__).parent / "demo" / "demo.yaml"
DEMO_OPERATORS = ("DEMO_B2C", "DEMO_RESELLER1", "DEMO_BOX")

Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(help="Port to listen on.")]


def load_settings() -> Settings:
    return Settings()


def run_migrations(settings: Settings) -> None:
    from billetterie.migrations import upgrade

    upgrade(settings.resolved_database_url())


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (SQLite under ./var by default)."""
    settings = load_settings()
    run_migrations(settings)
    console.print(f"[green]schema up to date[/] ({_safe_url(settings)})")


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url()).render_as_string(hide_password=True)


def read_setup_file(path: Path) -> Any:
    from billetterie.catalog.setupfile import SetupFileError, parse_document

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupFileError([("(file)", str(exc))]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"
        raise SetupFileError([(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    return parse_document(data)


async def _import(settings: Settings, path: Path, actor: str) -> Any:
    from billetterie.setup import import_institution
    from billetterie.shared.clock import SystemClock
    from billetterie.shared.db import create_engine

    document = read_setup_file(path)
    engine = create_engine(settings.resolved_database_url())
    try:
        return await import_institution(engine, document, now=SystemClock().now(), actor=actor)
    finally:
        await engine.dispose()


@setup_app.command("import")
def setup_import(file: Annotated[Path, typer.Argument(help="The setup YAML file.")]) -> None:
    """Validate FILE and import it (all or nothing); re-importing updates by code."""
    from billetterie.catalog.setupfile import SetupFileError

    settings = load_settings()
    run_migrations(settings)
    try:
        result = asyncio.run(_import(settings, file, actor="cli"))
    except SetupFileError as exc:
        errors.print(f"[red]{file}: {len(exc.problems)} problem(s), nothing imported[/]")
        for path, message in exc.problems:
            errors.print(f"  {path}: {message}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    console.print(
        f"[green]imported[/] {file}: {result.changes} row(s) changed, "
        f"setup version {result.setup_version}, "
        f"{result.channels_changed} catalog snapshot(s) rebuilt"
    )


@setup_app.command("export")
def setup_export(
    institution: Annotated[str, typer.Argument(help="Institution code, e.g. DEMO.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default: stdout).")
    ] = None,
) -> None:
    """Write an institution's whole setup as one YAML document."""
    from billetterie.catalog.errors import UnknownInstitution
    from billetterie.setup import export_institution
    from billetterie.shared.db import create_engine, read

    settings = load_settings()
    run_migrations(settings)

    async def run() -> dict[str, Any]:
        engine = create_engine(settings.resolved_database_url())
        try:
            async with read(engine) as conn:
                return await export_institution(conn, institution)
        finally:
            await engine.dispose()

    try:
        document = asyncio.run(run())
    except UnknownInstitution as exc:
        errors.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(2) from None
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False, width=100)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"[green]exported[/] {institution} to {output}")


async def _set_operator(
    settings: Settings, institution: str, pos_code: str, login: str, partner: str, secret: str
) -> None:
    from billetterie.catalog.services import find_point_of_sale, institution_id_by_code
    from billetterie.identity.services import set_operator
    from billetterie.shared.clock import SystemClock
    from billetterie.shared.db import create_engine, transaction

    engine = create_engine(settings.resolved_database_url())
    try:
        async with transaction(engine) as conn:
            institution_id = await institution_id_by_code(conn, institution)
            pos_id = await find_point_of_sale(conn, institution, pos_code)
            await set_operator(
                conn,
                institution_id=institution_id,
                point_of_sale_id=pos_id,
                login=login,
                partner=partner,
                secret=secret,
                now=SystemClock().now(),
                actor="cli",
            )
    finally:
        await engine.dispose()


@operators_app.command("create")
def operators_create(
    login: Annotated[str, typer.Argument(help="<INSTITUTION>_<NAME>, e.g. DEMO_RESELLER2.")],
    point_of_sale: Annotated[
        str, typer.Option("--point-of-sale", "-p", help="Point of sale code.")
    ],
    partner: Annotated[str, typer.Option(help="Partner name carried in the token (iss).")],
    secret: Annotated[
        str | None, typer.Option(help="Secret (default: a random one, printed once).")
    ] = None,
) -> None:
    """Create an operator bound to one point of sale, or reset its secret."""
    from billetterie.shared.errors import DomainError

    institution, sep, name = login.partition("_")
    if not sep or not name:
        errors.print("[red]the login must look like <INSTITUTION>_<NAME>[/]")
        raise typer.Exit(2)
    settings = load_settings()
    run_migrations(settings)
    secret = secret or secrets.token_urlsafe(24)
    try:
        asyncio.run(_set_operator(settings, institution, point_of_sale, login, partner, secret))
    except DomainError as exc:
        errors.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(2) from None
    console.print(
        f"operator [bold]{login}[/] (partner {partner}) on {point_of_sale}; secret: {secret}"
    )


def _serve(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from billetterie.app import build_app
    from billetterie.serving import NoDelayH11Protocol

    if workers > 1:  # each worker process builds its app from the same environment
        settings.resolved_jwt_secret()  # create the shared key once, before the workers start
        uvicorn.run(
            "billetterie.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            proxy_headers=True,
            http=NoDelayH11Protocol,
        )
        return
    uvicorn.run(build_app(settings), host=host, port=port, log_level="info", proxy_headers=True)


Workers = Annotated[int, typer.Option(min=1, max=64, help="Server processes (production: 2+).")]


@app.command()
def serve(host: Host = "127.0.0.1", port: Port = 8000, workers: Workers = 1) -> None:
    """Serve the box office (migrates first). Honours BILLETTERIE_DATABASE_URL."""
    settings = load_settings()
    run_migrations(settings)
    _serve(settings, host, port, workers)


@app.command()
def demo(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """Migrate, load the demo institution if the database is empty, and serve it."""
    from billetterie.catalog.services import institution_is_empty
    from billetterie.shared.db import create_engine, read

    settings = load_settings()
    run_migrations(settings)

    async def empty() -> bool:
        engine = create_engine(settings.resolved_database_url())
        try:
            async with read(engine) as conn:
                return await institution_is_empty(conn)
        finally:
            await engine.dispose()

    if asyncio.run(empty()):
        result = asyncio.run(_import(settings, DEMO_FILE, actor="demo"))
        console.print(
            f"[green]demo institution DEMO loaded[/] (setup version {result.setup_version})"
        )
    secret = settings.demo_secret or _demo_secret(settings)
    pos_of = {
        "DEMO_B2C": ("WEBSHOP", "demo-website"),
        "DEMO_RESELLER1": ("RES1POS", "reseller1"),
        "DEMO_BOX": ("BOXPOS", "box-office"),
    }
    for login in DEMO_OPERATORS:
        pos_code, partner = pos_of[login]
        asyncio.run(_set_operator(settings, "DEMO", pos_code, login, partner, secret))
    base = settings.public_url or f"http://{host}:{port}"
    table = Table(title="billetterie demo", show_lines=False)
    table.add_column("what")
    table.add_column("where")
    table.add_row("API documentation", f"{base}/docs")
    table.add_row("token", f"POST {base}/tnai/backend-apis/v1/auth")
    table.add_row(
        "catalog (RPC)", f"POST {base}/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed"
    )
    table.add_row("catalog (GET mirror)", f"GET {base}/api/v1/catalog")
    console.print(table)
    operators = Table(title="operators (secret below)")
    operators.add_column("operator")
    operators.add_column("partner")
    operators.add_column("point of sale")
    for login in DEMO_OPERATORS:
        operators.add_row(login, pos_of[login][1], pos_of[login][0])
    console.print(operators)
    console.print(f"demo secret: [bold]{secret}[/]  (set BILLETTERIE_DEMO_SECRET to choose it)")
    _serve(settings, host, port)


def _demo_secret(settings: Settings) -> str:
    """A demo secret generated once and kept under var/, so it survives restarts."""
    path = settings.var_dir / "demo-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(16))
        path.chmod(0o600)
    return path.read_text().strip()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
