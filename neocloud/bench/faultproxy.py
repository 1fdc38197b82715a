"""A TCP proxy on loopback that breaks connections the ways a network does, for
the chaos soak and the tests: cut (FIN both ways), reset (RST both ways) and
blackhole (bytes dropped both ways, sockets left open, as when a firewall
forgets a flow), one connection at a time or all at once.

One asyncio loop on its own thread carries every connection (a soak has
hundreds); the public methods are thread-safe and return once done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_LINGER_ZERO = struct.pack("ii", 1, 0)  # close() then sends RST instead of FIN


class _Side(asyncio.Protocol):
    """One socket of a proxied connection; forwards what it reads to its peer."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self is self.conn.client:
            transport.pause_reading()  # until there is somewhere to send it
            asyncio.get_running_loop().create_task(self.conn.connect_upstream())

    def data_received(self, data: bytes) -> None:
        if not self.conn.blackholed and self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        if not self.conn.blackholed:
            self.conn.end(reset=False)
        return True  # keep our write side until the connection ends

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.end(reset=False)

    # Flow control: when our socket cannot take more, stop reading from the peer.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class Connection:
    """A client connection and its upstream; ids count from 1 in accept order."""

    def __init__(self, proxy: FaultProxy, conn_id: int) -> None:
        self.id = conn_id
        self.blackholed = False
        self.ended = False
        self._proxy = proxy
        self.client = _Side(self)
        self.upstream = _Side(self)

    async def connect_upstream(self) -> None:
        try:
            await asyncio.get_running_loop().create_connection(lambda: self.upstream, *self._proxy.target)
        except OSError:
            self.end(reset=True)  # as a refused connection looks to the client
            return
        self.client.peer, self.upstream.peer = self.upstream, self.client
        if self.ended and self.upstream.transport is not None:  # the client left meanwhile
            self.upstream.transport.close()
        elif self.client.transport is not None and not self.client.transport.is_closing():
            self.client.transport.resume_reading()

    def end(self, reset: bool) -> None:
        if self.ended:
            return
        self.ended = True
        self._proxy._live.pop(self.id, None)
        for side in (self.client, self.upstream):
            transport = side.transport
            if transport is None or transport.is_closing():
                continue
            if reset:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
                transport.abort()
            else:
                transport.close()


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._live: dict[int, Connection] = {}
        self.connections = 0  # accepted in all
        self._thread = threading.Thread(target=self._loop.run_forever, name="neocloud-faultproxy", daemon=True)
        self._thread.start()
        self._server = self._call(self._listen())
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _listen(self) -> asyncio.Server:
        return await self._loop.create_server(self._accepted, "127.0.0.1", 0)

    def _accepted(self) -> _Side:
        self.connections += 1
        conn = Connection(self, self.connections)
        self._live[conn.id] = conn
        return conn.client

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _apply(self, ids: Iterable[int] | None, action: str) -> list[int]:
        chosen = list(self._live) if ids is None else [i for i in ids if i in self._live]
        for conn_id in chosen:
            conn = self._live[conn_id]
            if action == "blackhole":
                conn.blackholed = True
            else:
                conn.end(reset=action == "reset")
        return chosen

    def live(self) -> list[int]:
        """Ids of the connections open now."""
        return self._call(self._ids())

    async def _ids(self) -> list[int]:
        return sorted(self._live)

    def cut(self, ids: Iterable[int] | None = None) -> list[int]:
        """Close these connections (all by default) with a FIN to both ends; returns the ids hit."""
        return self._call(self._apply(ids, "cut"))

    def reset(self, ids: Iterable[int] | None = None) -> list[int]:
        """Abort these connections with a RST to both ends."""
        return self._call(self._apply(ids, "reset"))

    def blackhole(self, ids: Iterable[int] | None = None) -> list[int]:
        """From now on drop every byte of these connections, both ways, keeping them open: only
        the ends' keepalives notice (or a later cut or reset)."""
        return self._call(self._apply(ids, "blackhole"))

    def close(self) -> None:
        """Stop accepting and cut every connection."""
        if self._loop.is_closed():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        await self._apply(None, "cut")
        await asyncio.sleep(0)  # let the transports close
