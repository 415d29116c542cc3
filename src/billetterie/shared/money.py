"""Money is an integer number of thousandths of the currency unit (4000 = 4.00 EUR)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

THOUSANDTHS = Decimal(1000)


def parse_amount(value: object) -> int:
    """``"45.50"`` or ``45.5`` (currency units) -> 45500. Raises ValueError on anything else."""
    if isinstance(value, bool):
        raise ValueError("not an amount")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError("not an amount") from exc
    if not amount.is_finite():
        raise ValueError("not an amount")
    scaled = amount * THOUSANDTHS
    if scaled != scaled.to_integral_value():
        raise ValueError("more than three decimals")
    if amount < 0:
        raise ValueError("negative amount")
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def format_amount(thousandths: int) -> str:
    """45500 -> ``"45.50"``; keeps a third decimal only when there is one."""
    value = Decimal(thousandths) / THOUSANDTHS
    text = f"{value:.3f}"
    return text[:-1] if text.endswith("0") else text
