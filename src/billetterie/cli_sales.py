"""``billetterie vouchers``, ``billetterie credit`` and ``billetterie accounts``: the money side of
the box office from the command line (gift vouchers, contacts' credit balances, resellers'
pending-account statements)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from billetterie.config import Settings

vouchers_app = typer.Typer(help="Gift vouchers.", no_args_is_help=True)
credit_app = typer.Typer(help="Contacts' credit balances.", no_args_is_help=True)
accounts_app = typer.Typer(help="Resellers' pending accounts.", no_args_is_help=True)
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

Institution = Annotated[str, typer.Option("--institution", "-i", help="Institution code.")]
Amount = Annotated[str, typer.Option(help="Amount in currency units, e.g. 50.00.")]
DEMO_VOUCHER = "DEMOGIFT50"


def _amount(text: str) -> int:
    from billetterie.shared.money import parse_amount

    try:
        value = parse_amount(text)
    except ValueError:
        errors.print(f"[red]not an amount: {text}[/]")
        raise typer.Exit(2) from None
    if value <= 0:
        errors.print("[red]the amount must be positive[/]")
        raise typer.Exit(2)
    return value


def _day(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(text), time(), UTC)
    except ValueError:
        errors.print(f"[red]not a date (YYYY-MM-DD): {text}[/]")
        raise typer.Exit(2) from None


async def _with_engine(settings: Settings, work: Any) -> Any:
    from billetterie.shared.db import create_engine

    engine = create_engine(settings.resolved_database_url())
    try:
        return await work(engine)
    finally:
        await engine.dispose()


async def _institution(engine: Any, code: str) -> tuple[int, str]:
    from billetterie.catalog.services import institution_currency
    from billetterie.shared.db import read

    async with read(engine) as conn:
        return await institution_currency(conn, code)


def _fail(exc: Exception) -> None:
    code = getattr(exc, "code", "error")
    errors.print(f"[red]{code}[/]: {exc}")
    raise typer.Exit(1) from None


@vouchers_app.command("issue")
def vouchers_issue(
    institution: Institution,
    amount: Amount,
    code: Annotated[str | None, typer.Option(help="The voucher's code (random if absent).")] = None,
    expires: Annotated[str | None, typer.Option(help="Last day of validity, YYYY-MM-DD.")] = None,
) -> None:
    """Issue a gift voucher worth AMOUNT; prints its code."""
    from billetterie.sales.accounts import issue_voucher
    from billetterie.shared.clock import SystemClock
    from billetterie.shared.errors import DomainError

    settings = Settings()
    value, until = _amount(amount), _day(expires)

    async def work(engine: Any) -> Any:
        institution_id, currency = await _institution(engine, institution)
        return await issue_voucher(
            engine,
            institution_id=institution_id,
            currency=currency,
            amount=value,
            now=SystemClock().now(),
            expires_at=until,
            code=code,
            actor="cli",
        )

    try:
        voucher = asyncio.run(_with_engine(settings, work))
    except DomainError as exc:
        _fail(exc)
    console.print(f"voucher [bold]{voucher.code}[/]: {amount} {voucher.currency}")


@vouchers_app.command("show")
def vouchers_show(
    institution: Institution, code: Annotated[str, typer.Argument(help="The voucher's code.")]
) -> None:
    """A voucher's balance and its ledger."""
    _show_account(institution, "VOUCHER", code)


@credit_app.command("add")
def credit_add(
    institution: Institution,
    contact: Annotated[str, typer.Option(help="The contact number.")],
    amount: Amount,
    reason: Annotated[str, typer.Option(help="Shown in the ledger.")] = "credit added",
) -> None:
    """Put AMOUNT on a contact's credit balance."""
    from billetterie.sales.accounts import add_credit
    from billetterie.shared.clock import SystemClock

    settings = Settings()
    value = _amount(amount)

    async def work(engine: Any) -> Any:
        institution_id, currency = await _institution(engine, institution)
        return await add_credit(
            engine,
            institution_id=institution_id,
            contact_number=contact,
            currency=currency,
            amount=value,
            description=reason,
            now=SystemClock().now(),
            actor="cli",
        )

    from billetterie.shared.money import format_amount

    account = asyncio.run(_with_engine(settings, work))
    console.print(
        f"contact {contact}: credit balance {format_amount(account.balance)} {account.currency}"
    )


@credit_app.command("show")
def credit_show(
    institution: Institution, contact: Annotated[str, typer.Argument(help="Contact number.")]
) -> None:
    """A contact's credit balance and its ledger."""
    _show_account(institution, "CREDIT", contact)


@accounts_app.command("show")
def accounts_show(
    institution: Institution,
    point_of_sale: Annotated[str, typer.Argument(help="The reseller's point of sale code.")],
) -> None:
    """A pending account's balance, limit and ledger."""
    _show_account(institution, "PENDING_ACCOUNT", point_of_sale)


@accounts_app.command("statement")
def accounts_statement(
    institution: Institution,
    point_of_sale: Annotated[str, typer.Argument(help="The reseller's point of sale code.")],
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Day after the last, YYYY-MM-DD.")],
    output: Annotated[Path | None, typer.Option(help="Write the CSV here.")] = None,
) -> None:
    """A pending account's statement over [START, END) as CSV (stdout unless --output)."""
    from billetterie.sales.accounts import statement, statement_csv
    from billetterie.sales.models import AccountKind
    from billetterie.shared.errors import DomainError

    settings = Settings()
    first, after = _day(start), _day(end)
    assert first is not None and after is not None

    async def work(engine: Any) -> str:
        institution_id, _ = await _institution(engine, institution)
        account, opening, lines = await statement(
            engine,
            institution_id=institution_id,
            kind=AccountKind.PENDING_ACCOUNT,
            code=point_of_sale,
            start=first,
            end=after,
        )
        return statement_csv(account, opening, lines)

    try:
        text = asyncio.run(_with_engine(settings, work))
    except DomainError as exc:
        _fail(exc)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"[green]written[/] {output}")


def _show_account(institution: str, kind: str, code: str) -> None:
    from billetterie.sales.accounts import find_account, ledger
    from billetterie.sales.models import AccountKind
    from billetterie.shared.db import read
    from billetterie.shared.money import format_amount

    settings = Settings()

    async def work(engine: Any) -> Any:
        institution_id, _ = await _institution(engine, institution)
        async with read(engine) as conn:
            account = await find_account(conn, institution_id, AccountKind(kind), code)
            return account, [] if account is None else await ledger(conn, account.id)

    account, entries = asyncio.run(_with_engine(settings, work))
    if account is None:
        errors.print(f"[red]no {kind.lower().replace('_', ' ')} {code}[/]")
        raise typer.Exit(1)
    console.print(
        f"{kind.lower().replace('_', ' ')} [bold]{code}[/]: balance "
        f"{format_amount(account.balance)} {account.currency}"
        + (f", credit limit {format_amount(account.credit_limit)}" if account.credit_limit else "")
    )
    table = Table()
    for column in ("date", "order", "kind", "amount", "balance", "description"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            e.at.isoformat(timespec="seconds"),
            str(e.order_id or ""),
            e.kind,
            format_amount(e.amount),
            format_amount(e.balance_after),
            e.description,
        )
    console.print(table)


async def ensure_demo_voucher(settings: Settings) -> str:
    """The demo's gift voucher (50.00), issued once."""
    from billetterie.sales.accounts import find_account, issue_voucher
    from billetterie.sales.models import AccountKind
    from billetterie.shared.clock import SystemClock
    from billetterie.shared.db import read

    async def work(engine: Any) -> str:
        institution_id, currency = await _institution(engine, "DEMO")
        async with read(engine) as conn:
            found = await find_account(conn, institution_id, AccountKind.VOUCHER, DEMO_VOUCHER)
        if found is None:
            await issue_voucher(
                engine,
                institution_id=institution_id,
                currency=currency,
                amount=50_000,
                now=SystemClock().now(),
                code=DEMO_VOUCHER,
                actor="demo",
            )
        return DEMO_VOUCHER

    result: str = await _with_engine(settings, work)
    return result
