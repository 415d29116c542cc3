"""Barcodes and PDF tickets: CPU cost per ticket, in process (no database, no server).

    .venv/bin/python bench/tickets.py [--seconds 2] [--pages 10] [--json figures.json]

Figures: barcodes issued per second (Ed25519 sign + base32), verified per second by the library
and by the standalone verifier, QR encodings per second (segno), and the time to render an order's
PDF (one page per ticket) and one page of it to PNG (pypdfium2, as the tests do). One core; the
load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from billetterie.sales.barcode_verifier import verify_barcode
from billetterie.sales.barcodes import BarcodePayload, issue, verify
from billetterie.sales.pdf import TicketView, render_tickets

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def rate(work: Callable[[int], object], seconds: float) -> float:
    """Calls per second of ``work(i)`` over about ``seconds``."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            work(count)
            count += 1
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()

    key = Ed25519PrivateKey.generate()
    public = {1: key.public_key()}
    raw = {1: key.public_key().public_bytes_raw()}

    def payload(i: int) -> BarcodePayload:
        return BarcodePayload(1, 1, i + 1, 42, NOW, NOW + timedelta(days=30))

    codes = [issue(payload(i), key) for i in range(1000)]
    figures: dict[str, Any] = {"load_average_start": os.getloadavg()[0]}
    figures["barcodes_issued_per_s"] = rate(lambda i: issue(payload(i), key), args.seconds)
    figures["barcodes_verified_per_s"] = rate(
        lambda i: verify(codes[i % 1000], public, NOW), args.seconds
    )
    now_unix = int(NOW.timestamp())
    figures["standalone_verified_per_s"] = rate(
        lambda i: verify_barcode(codes[i % 1000], raw, now_unix), args.seconds
    )
    figures["qr_encodings_per_s"] = rate(
        lambda i: segno.make(codes[i % 1000], error="m"), args.seconds
    )

    tickets = [
        TicketView(
            institution_name="Bench institution",
            organization_name="Bench organization",
            product_name="Bench event",
            performance_start=NOW,
            time_zone="Europe/Zurich",
            venue_name="Hall",
            space_name="Main",
            area="A",
            block="1",
            row=str(i // 20 + 1),
            seat=str(i % 20 + 1),
            seat_category="Cat. 1",
            tariff_name="Full",
            price=45000,
            currency="EUR",
            order_id=1,
            ticket_id=i + 1,
            holder_name=None,
            barcode=codes[i],
        )
        for i in range(args.pages)
    ]
    start = time.perf_counter()
    runs = 0
    while time.perf_counter() - start < args.seconds or runs < 3:
        pdf = render_tickets(tickets, language="fr")
        runs += 1
    per_order = (time.perf_counter() - start) / runs
    figures["pdf_pages"] = args.pages
    figures["pdf_bytes"] = len(pdf)
    figures["pdf_ms_per_order"] = per_order * 1000
    figures["pdf_ms_per_page"] = per_order * 1000 / args.pages

    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(pdf)
    start = time.perf_counter()
    document[0].render(scale=2).to_pil()
    figures["png_ms_per_page_scale_2"] = (time.perf_counter() - start) * 1000
    figures["load_average_end"] = os.getloadavg()[0]

    width = max(len(name) for name in figures)
    for name, value in figures.items():
        shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
        print(f"{name:<{width}}  {shown:>12}")
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as file:
            json.dump(figures, file, indent=2)


if __name__ == "__main__":
    main()
