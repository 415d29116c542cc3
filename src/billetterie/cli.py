"""The ``billetterie`` command: demo, serve, worker, migrate, setup import/export, operators,
webhook deliveries."""

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

from billetterie import cli_printing, cli_sales
from billetterie.config import Settings
from billetterie_wallet import cli as wallet_cli

app = typer.Typer(
    help="billetterie: an open-source box office (S-360 compatible).", no_args_is_help=True
)
setup_app = typer.Typer(help="Import or export an institution's setup file.", no_args_is_help=True)
operators_app = typer.Typer(help="Manage API operators.", no_args_is_help=True)
app.add_typer(setup_app, name="setup")
webhooks_app = typer.Typer(help="Inspect webhook deliveries.", no_args_is_help=True)
app.add_typer(operators_app, name="operators")
barcodes_app = typer.Typer(help="Barcode signing keys.", no_args_is_help=True)
app.add_typer(barcodes_app, name="barcodes")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(cli_sales.vouchers_app, name="vouchers")
app.add_typer(cli_sales.credit_app, name="credit")
app.add_typer(cli_sales.accounts_app, name="accounts")
app.add_typer(wallet_cli.app, name="wallet")
app.add_typer(cli_printing.printing_app, name="printing")
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
    from billetterie.shared.errors import DomainError

    settings = load_settings()
    run_migrations(settings)
    try:
        result = asyncio.run(_import(settings, file, actor="cli"))
    except SetupFileError as exc:
        errors.print(f"[red]{file}: {len(exc.problems)} problem(s), nothing imported[/]")
        for path, message in exc.problems:
            errors.print(f"  {path}: {message}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    except DomainError as exc:
        errors.print(f"[red]{file}: nothing imported[/]")
        errors.print(f"  {exc.code}: {exc.detail}", markup=False, highlight=False)
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


async def _organization(conn: Any, organization: str, institution: str | None) -> Any:
    from billetterie.catalog.services import organization_refs
    from billetterie.shared.errors import NotFound

    found = [
        ref
        for ref in await organization_refs(conn)
        if ref.organization_code == organization
        and (institution is None or ref.institution_code == institution)
    ]
    if not found:
        raise NotFound(f"no organization {organization}", code="error.catalog.unknown_organization")
    if len(found) > 1:
        raise NotFound(
            f"organization {organization} exists in several institutions; pass --institution",
            code="error.catalog.ambiguous_organization",
        )
    return found[0]


@barcodes_app.command("rotate")
def barcodes_rotate(
    organization: Annotated[str, typer.Option("--organization", "-o", help="Organization code.")],
    institution: Annotated[
        str | None, typer.Option(help="Institution code (when the organization code is shared).")
    ] = None,
) -> None:
    """Make a new signing key for an organization; the former one keeps verifying."""
    from billetterie.sales.barcode_keys import KeyVault, rotate
    from billetterie.shared.clock import SystemClock
    from billetterie.shared.db import create_engine, transaction
    from billetterie.shared.errors import DomainError

    settings = load_settings()
    run_migrations(settings)

    async def run() -> Any:
        engine = create_engine(settings.resolved_database_url())
        try:
            async with transaction(engine) as conn:
                ref = await _organization(conn, organization, institution)
                return await rotate(
                    conn,
                    KeyVault(settings.resolved_barcode_key_secret()),
                    institution_id=ref.institution_id,
                    organization_id=ref.organization_id,
                    now=SystemClock().now(),
                    actor="cli",
                )
        finally:
            await engine.dispose()

    try:
        key = asyncio.run(run())
    except DomainError as exc:
        errors.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(2) from None
    console.print(f"[green]new active key[/] {key.key_id} for organization {organization}")


@barcodes_app.command("retire")
def barcodes_retire(
    key_id: Annotated[int, typer.Argument(help="The key id (see `barcodes keys`).")],
) -> None:
    """Withdraw a former key: barcodes it signed stop verifying."""
    from billetterie.sales.barcode_keys import all_public_keys, retire
    from billetterie.shared.clock import SystemClock
    from billetterie.shared.db import create_engine, transaction
    from billetterie.shared.errors import DomainError, NotFound

    settings = load_settings()
    run_migrations(settings)

    async def run() -> None:
        engine = create_engine(settings.resolved_database_url())
        try:
            async with transaction(engine) as conn:
                owners = {key.key_id: inst for inst, key in await all_public_keys(conn)}
                if key_id not in owners:
                    raise NotFound(f"no barcode key {key_id}", code="error.barcode.unknown_key")
                await retire(
                    conn,
                    institution_id=owners[key_id],
                    key_id=key_id,
                    now=SystemClock().now(),
                    actor="cli",
                )
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except DomainError as exc:
        errors.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(2) from None
    console.print(f"[green]retired[/] key {key_id}")


@barcodes_app.command("keys")
def barcodes_keys(
    all_keys: Annotated[bool, typer.Option("--all", help="Include retired keys.")] = False,
) -> None:
    """List the barcode signing keys of every organization."""
    import base64

    from billetterie.catalog.services import organization_refs
    from billetterie.sales.barcode_keys import RETIRED, all_public_keys
    from billetterie.shared.db import create_engine, read

    settings = load_settings()
    run_migrations(settings)

    async def run() -> tuple[list[Any], dict[int, Any]]:
        engine = create_engine(settings.resolved_database_url())
        try:
            async with read(engine) as conn:
                refs = {ref.organization_id: ref for ref in await organization_refs(conn)}
                return await all_public_keys(conn), refs
        finally:
            await engine.dispose()

    keys, refs = asyncio.run(run())
    table = Table(title="barcode signing keys")
    for column in ("key", "institution", "organization", "state", "created", "public key"):
        table.add_column(column)
    for _, key in keys:
        if key.state == RETIRED and not all_keys:
            continue
        ref = refs.get(key.organization_id)
        table.add_row(
            str(key.key_id),
            ref.institution_code if ref else "?",
            ref.organization_code if ref else "?",
            key.state,
            key.created_at.isoformat(timespec="seconds"),
            base64.b64encode(key.public_key).decode(),
        )
    console.print(table)


def _serve(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from billetterie.app import build_app
    from billetterie.serving import NoDelayHttpToolsProtocol, tune_collector

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
            http=NoDelayHttpToolsProtocol,
        )
        return
    served = build_app(settings)
    tune_collector()
    uvicorn.run(
        served,
        host=host,
        port=port,
        log_level="info",
        proxy_headers=True,
        http=NoDelayHttpToolsProtocol,
    )


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
    if not settings.smtp_host:  # shop mail (verification, reset) lands on /dev/mail
        settings = settings.model_copy(update={"dev_mail": True})
    if not settings.shop_point_of_sale:  # /api/1/redirect/... links land on the web shop
        settings = settings.model_copy(update={"shop_point_of_sale": "WEBSHOP"})
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
    voucher = asyncio.run(cli_sales.ensure_demo_voucher(settings))
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
    table.add_row(
        "carts (RPC)",
        f"POST {base}/tnseb/backend-apis/externalOrderFacade/v1_33/createOrUpdateOrder",
    )
    table.add_row("gift voucher (50.00)", voucher)
    table.add_row("ticket shop", f"{base}/shop/WEBSHOP")
    table.add_row("book link (redirect API)", f"{base}/api/1/redirect/product?code=HAMLET&lang=en")
    table.add_row("shop account (sign in, register)", f"{base}/shop/WEBSHOP/account/login")
    if settings.dev_mail:
        table.add_row("mail the shop sent", f"{base}/dev/mail")
    table.add_row("SAML IdP metadata", f"{base}/shop/WEBSHOP/saml/metadata")
    table.add_row("OpenID provider", f"{base}/shop/WEBSHOP/.well-known/openid-configuration")
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


async def _work(settings: Settings) -> None:
    import signal

    from billetterie import background
    from billetterie.app import outbox_handlers, register_payment_providers
    from billetterie.payments.services import PaymentGateway
    from billetterie.shared.clock import SystemClock
    from billetterie.shared.db import create_engine

    engine = create_engine(settings.resolved_database_url())
    clock = SystemClock()
    gateway = PaymentGateway()  # for the refund jobs: the providers, no confirmation handler
    register_payment_providers(gateway, settings, engine, clock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await background.run(
            settings, engine, clock, stop, handlers=outbox_handlers(engine, gateway, clock)
        )
    finally:
        await engine.dispose()


@app.command()
def worker() -> None:
    """Run the outbox dispatcher and the periodic sweepers until SIGTERM or Ctrl-C (migrates
    first). Safe beside other workers and server processes."""
    import logging

    from billetterie import background

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    run_migrations(settings)
    table = Table(title="billetterie worker")
    table.add_column("loop")
    table.add_column("every")
    for name, every in background.schedules():
        table.add_row(
            name,
            f"NOTIFY or {settings.outbox_poll_seconds:g}s poll" if not every else f"{every:g}s",
        )
    console.print(table)
    console.print(f"worker started ({_safe_url(settings)}); SIGTERM stops it", highlight=False)
    asyncio.run(_work(settings))
    console.print("worker stopped")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    institution: Annotated[str, typer.Argument(help="Institution code, e.g. DEMO.")],
    point_of_sale: Annotated[
        str | None, typer.Option("--point-of-sale", "-p", help="Only this point of sale.")
    ] = None,
    status: Annotated[str | None, typer.Option(help="SUCCEEDED, RETRYING or FAILED.")] = None,
    event: Annotated[str | None, typer.Option(help="order.closed, contact.created...")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many attempts.")] = 50,
) -> None:
    """List webhook delivery attempts, newest first: status, duration, response code, error."""
    from billetterie.catalog.services import (
        find_point_of_sale,
        institution_id_by_code,
        point_of_sale_codes,
    )
    from billetterie.shared.db import create_engine, read
    from billetterie.shared.errors import DomainError
    from billetterie.webhooks.services import list_attempts

    if status is not None and status not in {"SUCCEEDED", "RETRYING", "FAILED"}:
        errors.print("[red]--status is one of SUCCEEDED, RETRYING, FAILED[/]")
        raise typer.Exit(2)
    settings = load_settings()
    run_migrations(settings)

    async def run() -> tuple[list[Any], dict[int, str]]:
        engine = create_engine(settings.resolved_database_url())
        try:
            async with read(engine) as conn:
                institution_id = await institution_id_by_code(conn, institution)
                pos_id = (
                    await find_point_of_sale(conn, institution, point_of_sale)
                    if point_of_sale
                    else None
                )
                page = await list_attempts(
                    conn,
                    institution_id,
                    point_of_sale_id=pos_id,
                    event=event,
                    status=status,
                    limit=limit,
                )
                return page.attempts, await point_of_sale_codes(conn, institution_id)
        finally:
            await engine.dispose()

    try:
        attempts, codes = asyncio.run(run())
    except DomainError as exc:
        errors.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(2) from None
    table = Table(title=f"webhook deliveries of {institution}")
    for column in ("id", "at", "pos", "webhook", "event", "subject", "try", "status", "code"):
        table.add_column(column)
    table.add_column("ms", justify="right")
    table.add_column("error")
    colors = {"SUCCEEDED": "green", "RETRYING": "yellow", "FAILED": "red"}
    for a in attempts:
        table.add_row(
            str(a.id),
            a.at.isoformat(timespec="seconds"),
            codes.get(a.point_of_sale_id, str(a.point_of_sale_id)),
            a.subscription_code,
            a.event,
            a.subject_id,
            str(a.attempt),
            f"[{colors[a.status.value]}]{a.status.value}[/]",
            "" if a.response_code is None else str(a.response_code),
            str(a.duration_ms),
            a.error or "",
        )
    console.print(table)
    if not attempts:
        console.print("no delivery attempt yet")


@webhooks_app.command("secret")
def webhooks_secret(
    institution: Annotated[str, typer.Argument(help="Institution code, e.g. DEMO.")],
    code: Annotated[str, typer.Argument(help="The webhook's code in the setup file.")],
    rotate: Annotated[bool, typer.Option(help="Replace it with a new random secret.")] = False,
) -> None:
    """Print a webhook's signing secret (the setup file does not carry it), or rotate it."""
    from billetterie.catalog.services import institution_id_by_code
    from billetterie.shared.clock import SystemClock
    from billetterie.shared.db import create_engine, transaction
    from billetterie.shared.errors import DomainError
    from billetterie.webhooks.services import signing_secret

    settings = load_settings()
    run_migrations(settings)

    async def run() -> str:
        engine = create_engine(settings.resolved_database_url())
        try:
            async with transaction(engine) as conn:
                institution_id = await institution_id_by_code(conn, institution)
                return await signing_secret(
                    conn, institution_id, code, rotate=rotate, now=SystemClock().now()
                )
        finally:
            await engine.dispose()

    try:
        secret = asyncio.run(run())
    except DomainError as exc:
        errors.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(2) from None
    sys.stdout.write(secret + "\n")


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
