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
