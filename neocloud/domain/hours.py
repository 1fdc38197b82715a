"""UTC hours, the unit the ledger, attribution and contract shortfalls are kept in."""

from __future__ import annotations

import itertools
import math

HOUR_S = 3600


def hour_of(t: float) -> int:
    """The start (Unix seconds) of the UTC hour that holds `t`."""
    return int(t // HOUR_S) * HOUR_S


def hour_cuts(t0: float, t1: float) -> list[float]:
    """The UTC hour boundaries strictly inside (t0, t1)."""
    return [float(h) for h in range(hour_of(t0) + HOUR_S, math.ceil(t1), HOUR_S) if t0 < h < t1]


def hour_pieces(t0: float, t1: float) -> list[tuple[float, float]]:
    """[t0, t1) cut at UTC hour boundaries."""
    return list(itertools.pairwise([t0, *hour_cuts(t0, t1), t1]))
