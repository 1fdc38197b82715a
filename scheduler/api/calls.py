"""Calls in progress per peer: one host may hold at most so many of the
server's call slots at once (gRPC's own limit counts all peers together),
so one client opening streams it never uses cannot starve every other.
A call past the limit gets RESOURCE_EXHAUSTED. Peers are told apart by
host, not port: a client that opens many connections is still one peer, and
so are all nodes behind one NAT or proxy (size the limit for that)."""

from __future__ import annotations

import logging

from neocloud.domain.errors import ResourceExhaustedError
from neocloud.scheduler.api.auth import peer_host

logger = logging.getLogger(__name__)


class CallsPerPeer:
    """Counts on the server's event loop only (no lock); `most` None: count, never refuse."""

    def __init__(self, most: int | None) -> None:
        self.most = most
        self._open: dict[str, int] = {}

    def enter(self, peer: str) -> str:
        """Count a call from `peer`; its host (to pass to `leave`), or ResourceExhaustedError."""
        host = peer_host(peer)
        held = self._open.get(host, 0)
        if self.most is not None and held >= self.most:
            raise ResourceExhaustedError(
                f"{host} has {held} calls in progress, the most one peer may: end some, or wait"
            )
        self._open[host] = held + 1
        return host

    def leave(self, host: str) -> None:
        held = self._open[host] - 1
        if held:
            self._open[host] = held
        else:
            del self._open[host]

    def held(self, peer: str) -> int:
        return self._open.get(peer_host(peer), 0)
