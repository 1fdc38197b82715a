"""When a silent node counts as lost, and the grace a restarted scheduler gives
every node before judging it.

A node whose agent has been silent for AGENT_LOST_AFTER_S is lost: nothing is
placed on it and its work is requeued. Right after a restart every agent is
silent (they reconnect with a backoff of up to 30 s, and after a long outage
the nodes may still be booting), so the restarted scheduler gives every node
not heard from since it started a grace of

    restart_grace_s(downtime) = AGENT_LOST_AFTER_S + min(downtime, RESTART_GRACE_CAP_S)

from its start, the downtime being now minus the previous run's last sign of
life (its heartbeat file beside the store, or the last telemetry it stored).
During the grace nothing new is placed on such a node and nothing running on
it is preempted or requeued; the node's reconnection ends its grace.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from neocloud.domain.fleet import NodeState

logger = logging.getLogger(__name__)

# A short agent restart is not a loss; a minute of silence is.
AGENT_LOST_AFTER_S = 60.0
# The downtime-scaled part of the grace stops here: a long outage is usually a site-wide
# one (power, network) after which GPU nodes still reboot and load their driver (3-5 min),
# but a node really gone must not hold its jobs, or a contract's capacity, for hours.
RESTART_GRACE_CAP_S = 300.0
# How often a running scheduler leaves its heartbeat: it bounds how much of a downtime
# goes unseen (the grace errs long) and how much of a killed job goes unbilled (short).
HEARTBEAT_EVERY_S = 5.0


def restart_grace_s(downtime_s: float) -> float:
    return AGENT_LOST_AFTER_S + min(max(downtime_s, 0.0), RESTART_GRACE_CAP_S)


@dataclass(frozen=True, slots=True)
class Liveness:
    """The liveness rule of one scheduler run. The default (no restart) is the plain
    AGENT_LOST_AFTER_S rule."""

    started: float = 0.0  # when this run started, Unix seconds
    grace_s: float = 0.0  # nodes silent since before `started` are spared until started + grace_s
    last_alive: float | None = None  # the previous run's last sign of life (None: none known)

    @classmethod
    def after_restart(cls, last_alive: float | None, now: float) -> Liveness:
        downtime = 0.0 if last_alive is None else now - last_alive
        grace = restart_grace_s(downtime)
        logger.info("nodes not yet reconnected get %.0f s of grace (the scheduler was down %.0f s)", grace, downtime)
        return cls(now, grace, last_alive)

    def awaiting(self, node: NodeState, now: float) -> bool:
        """Silent since before this run started and still within the restart grace:
        nothing new goes there, nothing running there is disturbed."""
        return not node.connected and node.last_seen_us < self.started * 1e6 and now < self.started + self.grace_s

    def lost(self, node: NodeState, now: float) -> bool:
        silent_s = now - node.last_seen_us / 1e6
        return not node.connected and silent_s > AGENT_LOST_AFTER_S and not self.awaiting(node, now)

    def stopped_by(self, now: float) -> float:
        """The latest time a job found gone after the restart may be billed to: the
        previous run's last sign of life, never the downtime after it."""
        return now if self.last_alive is None else min(now, self.last_alive)


NO_RESTART = Liveness()


class Heartbeat:
    """The scheduler's sign of life, a Unix time in a small file beside the store,
    replaced at most every HEARTBEAT_EVERY_S. Outside SQLite so that it never waits
    for the store's write lock, nor holds it."""

    def __init__(self, path: Path, every_s: float = HEARTBEAT_EVERY_S) -> None:
        self.path = path
        self._every_s = every_s
        self._next = 0.0
        self._failing = False

    def last(self) -> float | None:
        """The last beat written, or None (no file: a first start; unreadable: logged)."""
        try:
            return float(self.path.read_text().strip())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("cannot read the heartbeat %s (%s): the downtime is taken from the telemetry", self.path, e)
            return None

    def beat(self, now: float) -> None:
        if now < self._next:
            return
        self._next = now + self._every_s
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(f"{now:.3f}\n")
            os.replace(tmp, self.path)  # a reader sees the old beat or the new one, never half
        except OSError as e:
            if not self._failing:  # one line per failing spell, not one per beat
                logger.error("cannot write the heartbeat %s: %s", self.path, e)
            self._failing = True
        else:
            self._failing = False


def last_sign_of_life(heartbeat: Heartbeat | None, nodes: list[NodeState]) -> float | None:
    """When the previous run was last known alive: its heartbeat, or the latest
    telemetry it stored (a store from before heartbeats, or a lost file)."""
    seen = max((n.last_seen_us / 1e6 for n in nodes), default=None)
    beat = heartbeat.last() if heartbeat is not None else None
    return max((t for t in (beat, seen) if t is not None), default=None)
