"""The port told to a child process in advance stays out of the ranges other processes draw from."""

from __future__ import annotations

import socket

from neocloud.wire.netaddr import free_loopback_port


def test_a_free_port_is_outside_ray_and_the_ephemeral_range_and_bindable() -> None:
    ports = {free_loopback_port() for _ in range(20)}
    assert all(20000 <= p < 32768 for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
