"""The money commands: vouchers, credit balances and pending-account statements."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from billetterie.cli import app
from tests.sales_kit import sales_document
from tests.test_cli import cli_env, write  # noqa: F401 - the fixture

runner = CliRunner()


def test_vouchers_credit_and_statements(cli_env: Path) -> None:  # noqa: F811
    source = write(cli_env / "acme.yaml", sales_document("ACME"))
    assert runner.invoke(app, ["setup", "import", str(source)]).exit_code == 0

    issued = runner.invoke(
        app, ["vouchers", "issue", "-i", "ACME", "--amount", "25.50", "--code", "GIFT1"]
    )
    assert issued.exit_code == 0, issued.output
    assert "voucher GIFT1: 25.50 EUR" in issued.output
    again = runner.invoke(
        app, ["vouchers", "issue", "-i", "ACME", "--amount", "5", "--code", "GIFT1"]
    )
    assert again.exit_code == 1 and "exists already" in again.output
    shown = runner.invoke(app, ["vouchers", "show", "-i", "ACME", "GIFT1"])
    assert shown.exit_code == 0, shown.output
    assert "balance 25.50 EUR" in shown.output and "voucher issued" in shown.output
    assert runner.invoke(app, ["vouchers", "show", "-i", "ACME", "NOPE"]).exit_code == 1
    bad = runner.invoke(app, ["vouchers", "issue", "-i", "ACME", "--amount", "-3"])
    assert bad.exit_code == 2

    added = runner.invoke(
        app, ["credit", "add", "-i", "ACME", "--contact", "C-9", "--amount", "10"]
    )
    assert added.exit_code == 0, added.output
    assert "contact C-9: credit balance 10.00 EUR" in added.output

    none_yet = runner.invoke(
        app,
        [
            "accounts",
            "statement",
            "-i",
            "ACME",
            "ACMERES",
            "--start",
            "2026-11-01",
            "--end",
            "2026-12-01",
        ],
    )
    assert none_yet.exit_code == 1 and "error.payment.unknown_account" in none_yet.output
    unknown = runner.invoke(app, ["vouchers", "issue", "-i", "NOPE", "--amount", "5"])
    assert unknown.exit_code != 0
