"""The one wall clock everything stamps with, in integer microseconds."""

from __future__ import annotations

import time


def wall_clock_us() -> int:
    return time.time_ns() // 1000
