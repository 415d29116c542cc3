"""How the box office is served by uvicorn.

With ``--workers N`` uvicorn binds the listening socket itself and asyncio then leaves Nagle's
algorithm on for accepted connections, so every small answer waits for the client's delayed ACK
(about 40 ms on Linux; uvicorn issue #3149). The protocol below sets ``TCP_NODELAY`` on each
connection, as a single-process uvicorn already does.

The HTTP parser is httptools (C; h11, pure Python, costs several times the CPU per request),
and uvicorn runs on uvloop (``loop="auto"`` picks it when installed, as it is here).
"""

from __future__ import annotations

import asyncio
import gc
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _no_delay(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """httptools with ``TCP_NODELAY`` (a module-level class: the worker processes receive it
    by name)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _no_delay(transport)
        super().connection_made(transport)


def tune_collector() -> None:
    """Tune a server process's garbage collector once it has started.

    What start-up made (modules, the app: about 230,000 objects) is frozen out of every
    collection, and the youngest generation is collected every 50,000 allocations instead of
    700: with a hundred calls in flight, the default promoted their short-lived objects to
    the oldest generation, whose full collections then scanned the whole heap. Measured on the
    development machine, over a 40-second ``bench/rush.py``: 2.6 s of collector CPU per worker
    before, about 0.45 s after.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
