"""Helpers shared by the test packages."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
H200_TRACE = TRACES / "h200-two-procs.jsonl"


def wait_until(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Poll a condition the code under test reaches asynchronously."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)
