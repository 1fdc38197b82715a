"""Small address helpers shared by the agent and the scheduler."""

from __future__ import annotations

import ipaddress
import random
import socket


def split_host_port(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError says what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Between Ray's worker ports (10002-19999 by default) and the kernel's ephemeral range (32768 and up on
# Linux): a port told to a child in advance is not taken meanwhile by a process that binds port 0.
_QUIET_PORTS = range(20000, 32768)


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a child process that must be told its port in advance),
    outside the ranges other processes draw from, so it is still free when the child binds it."""
    for port in random.sample(_QUIET_PORTS, 64):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # all taken: whatever the kernel gives
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
