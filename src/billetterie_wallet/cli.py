"""The ``billetterie-wallet`` command (also ``billetterie wallet ...``): serve, migrate,
organizers, sweep."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from billetterie_wallet.config import WalletSettings

app = typer.Typer(help="The mobile-ticket wallet service.", no_args_is_help=True)
organizers_app = typer.Typer(help="Manage organizers and their API keys.", no_args_is_help=True)
app.add_typer(organizers_app, name="organizers")
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def load_settings() -> WalletSettings:
    return WalletSettings()


def run_migrations(settings: WalletSettings) -> None:
    from billetterie_wallet.migrations import upgrade

    upgrade(settings.resolved_database_url())


def _safe_url(settings: WalletSettings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url()).render_as_string(hide_password=True)


@app.command()
def migrate() -> None:
    """Bring the wallet's schema up to date (SQLite under ./var by default)."""
    settings = load_settings()
    run_migrations(settings)
    console.print(f"[green]wallet schema up to date[/] ({_safe_url(settings)})")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Server processes.")] = 1,
) -> None:
    """Serve the wallet (migrates first). Honours BILLETTERIE_WALLET_DATABASE_URL."""
    import uvicorn

    settings = load_settings()
    run_migrations(settings)
    settings.resolved_secret_key()  # create the shared key once, before any worker starts
    if workers > 1:
        uvicorn.run(
            "billetterie_wallet.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            proxy_headers=True,
        )
        return
    from billetterie_wallet.app import build_app

    uvicorn.run(build_app(settings), host=host, port=port, log_level="info", proxy_headers=True)


@organizers_app.command("create")
def organizers_create(
    code: Annotated[str, typer.Argument(help="Organizer code, e.g. DEMO.")],
    name: Annotated[str, typer.Option(help="Display name (default: the code).")] = "",
    roles: Annotated[
        str,
        typer.Option(
            help="Comma-separated roles of the key: tickets, privileges, feedback, reports, "
            "access_control (default: all)."
        ),
    ] = "",
) -> None:
    """Create an organizer (or reuse it) and print a new API key, once."""
    from billetterie_wallet.clock import SystemClock
    from billetterie_wallet.db import create_engine
    from billetterie_wallet.errors import WalletError
    from billetterie_wallet.services.organizers import create_organizer, parse_roles

    settings = load_settings()
    run_migrations(settings)

    async def run() -> tuple[str, tuple[str, ...]]:
        engine = create_engine(settings.resolved_database_url())
        try:
            new = await create_organizer(
                engine,
                code=code,
                name=name,
                roles=parse_roles(roles),
                now=SystemClock().now(),
                actor="cli",
            )
            return new.key, new.roles
        finally:
            await engine.dispose()

    try:
        key, granted = asyncio.run(run())
    except WalletError as exc:
        errors.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(2) from None
    console.print(f"organizer [bold]{code}[/], roles {', '.join(granted)}")
    console.print(f"API key (shown once): {key}", markup=False, highlight=False)


@organizers_app.command("revoke-key")
def organizers_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (bwk_<id>_...).")],
) -> None:
    """Revoke an API key at once."""
    from billetterie_wallet.clock import SystemClock
    from billetterie_wallet.db import create_engine
    from billetterie_wallet.errors import WalletError
    from billetterie_wallet.services.organizers import revoke_key

    settings = load_settings()
    run_migrations(settings)

    async def run() -> None:
        engine = create_engine(settings.resolved_database_url())
        try:
            await revoke_key(engine, key_id=key_id, now=SystemClock().now(), actor="cli")
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except WalletError as exc:
        errors.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(2) from None
    console.print(f"key {key_id} revoked")


@app.command()
def sweep() -> None:
    """Finish timed-out deletions and expire old transfer offers now (servers also do it)."""
    from datetime import timedelta

    from billetterie_wallet.clock import SystemClock
    from billetterie_wallet.db import create_engine
    from billetterie_wallet.services.organizer_ops import sweep as run_sweep

    settings = load_settings()
    run_migrations(settings)

    async def run() -> dict[str, int]:
        engine = create_engine(settings.resolved_database_url())
        try:
            return await run_sweep(
                engine,
                now=SystemClock().now(),
                deletion_timeout=timedelta(seconds=settings.deletion_timeout_seconds),
            )
        finally:
            await engine.dispose()

    counts = asyncio.run(run())
    console.print(
        f"{counts['deleted']} deletion(s) finished, {counts['expired_transfers']} offer(s) expired"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
