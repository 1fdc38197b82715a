"""Fault points: named step boundaries of the controller's multi-step actions
where a test can inject a crash. Disarmed (always, outside tests) one costs a
set lookup. It lives in the domain, below both the controller and the
executor, because both hold step boundaries (the executor's between creating a
placement group and starting its runners)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

# Every fault point, in the order a job meets them; tests assert this list matches the calls in the code.
POINTS: tuple[str, ...] = (
    "start.intent",  # start intent recorded; the store still says queued
    "start.store",  # the store says running (allocations open); nothing on Ray
    "start.pg",  # placement group created; no runner yet
    "start.runners",  # runners created; the start intent not yet cleared
    "stop.intent",  # stop intent (with the job's outcome) recorded; the store still says running
    "stop.store",  # the store settled the job (allocations closed); release not asked yet
    "stop.release",  # release asked of the executor; runners and group still there
    "stop.pg",  # runners killed; the placement group not yet removed
)

_armed: set[str] = set()


class CrashInjected(BaseException):
    """A crash a test asked for. A BaseException, so no `except Exception` on the way
    up (the controller loop's, the executor's) mistakes it for an ordinary error."""


def fault_point(name: str) -> None:
    """A step boundary: crash here if a test armed `name`."""
    if name not in _armed:
        return
    _armed.discard(name)  # once: the restarted controller must get past it
    logger.warning("fault point %s: injected crash", name)
    raise CrashInjected(name)


def arm(name: str) -> None:
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}; known: {', '.join(POINTS)}")
    _armed.add(name)


def disarm() -> None:
    _armed.clear()


@contextmanager
def armed(name: str) -> Iterator[None]:
    """`name` armed inside the block, every point disarmed after it."""
    arm(name)
    try:
        yield
    finally:
        disarm()
