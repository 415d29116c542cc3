"""How the box office is served by uvicorn.

With ``--workers N`` uvicorn binds the listening socket itself and asyncio then leaves Nagle's
algorithm on for accepted connections, so every small answer waits for the client's delayed ACK
(about 40 ms on Linux; uvicorn issue #3149). The protocol below sets ``TCP_NODELAY`` on each
connection, as a single-process uvicorn already does.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
