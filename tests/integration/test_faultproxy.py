"""The fault proxy breaks a connection each way a network does: a cut is a FIN to
both ends, a reset an RST, a blackhole drops bytes and keeps the sockets open."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from neocloud.bench.faultproxy import FaultProxy


@pytest.fixture
def echo_proxy() -> Iterator[FaultProxy]:
    server = socket.create_server(("127.0.0.1", 0))

    def echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                threading.Thread(target=echo, args=(server.accept()[0],), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    proxy = FaultProxy(server.getsockname()[1])
    yield proxy
    proxy.close()
    server.close()


def _connected(proxy: FaultProxy) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    client.sendall(b"ping")
    assert client.recv(16) == b"ping"
    return client


def test_cut_is_an_end_of_stream(echo_proxy: FaultProxy) -> None:
    client, other = _connected(echo_proxy), _connected(echo_proxy)
    assert echo_proxy.cut([1]) == [1]
    assert client.recv(16) == b""
    other.sendall(b"still")  # only the one connection was cut
    assert other.recv(16) == b"still"
    assert echo_proxy.live() == [2]


def test_reset_is_a_connection_reset(echo_proxy: FaultProxy) -> None:
    client = _connected(echo_proxy)
    assert echo_proxy.reset() == [1]
    with pytest.raises(ConnectionResetError):
        client.recv(16)


def test_blackhole_drops_bytes_and_keeps_the_socket_open(echo_proxy: FaultProxy) -> None:
    client = _connected(echo_proxy)
    assert echo_proxy.blackhole() == [1]
    client.sendall(b"lost")
    client.settimeout(0.5)
    with pytest.raises(TimeoutError):
        client.recv(16)
    assert echo_proxy.live() == [1]
    echo_proxy.reset([1])  # the path comes back; the proxy has forgotten the flow
    client.settimeout(5)
    with pytest.raises(ConnectionResetError):
        client.recv(16)
    fresh = _connected(echo_proxy)  # new connections go through again
    fresh.close()
