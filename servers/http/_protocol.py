"""uvicorn's HTTP protocol with Nagle's algorithm off on every accepted connection.

asyncio's loop sets ``TCP_NODELAY`` only on sockets whose ``proto`` says TCP, and the listening
socket uvicorn shares between ``--workers`` processes is made with ``proto`` 0: its connections
kept Nagle on, so an answer's body (written after its headers) waited for the client's delayed
ACK, ~40 ms a request. Setting it on the accepted socket itself covers every way of listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

try:  # uvicorn[standard] brings httptools; h11 is uvicorn's own fallback
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - a platform without httptools wheels
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock: Any = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayHttpProtocol(_Base):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)
