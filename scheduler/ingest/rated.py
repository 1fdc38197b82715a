"""The power a GPU can draw, from a table the operator owns, never from the node.

Energy a node reports is credited at most at its GPUs' rated power x time
(docs/DESIGN.md section 6, threat (f)): a counter bridged across a reset, a
huge jump and a power limit the node claims are all held to this bound. The
table is kept in code (site settings hold scalars only): to add a model,
add a row and ship a release.

The bound for a model is the highest board power of any variant whose NVML
name contains the key (e.g. "H100" covers the 700 W SXM and the 350-400 W
PCIe/NVL cards): it must never under-bill an honest GPU. A model not in the
table gets UNKNOWN_MODEL_MW, the highest single-GPU rating of the parts we run.
"""

from __future__ import annotations

from functools import lru_cache

# (substring of the NVML name, rated board power in mW). First match wins, so a
# longer key goes before any key it contains ("GB200" before "B200").
RATED_POWER_MW: tuple[tuple[str, int], ...] = (
    ("GB300", 1_400_000),
    ("B300", 1_400_000),
    ("GB200", 1_200_000),
    ("B200", 1_000_000),
    ("B100", 700_000),
    ("H200", 700_000),  # the trace in tests/data: 700 W limit, the ceiling of its constraints
    ("H100", 700_000),
    ("H800", 700_000),
    ("H20", 500_000),
    ("A100", 400_000),
    ("A800", 400_000),
    ("L40", 350_000),
    ("L4", 72_000),
    ("A10", 150_000),
)
UNKNOWN_MODEL_MW = 1_000_000
# The credit for one span between two readings may exceed rated power x span by
# this factor and no more. The real H200 trace in tests/data (700 W limit) has
# 0.5 s spans at up to 1.19x its limit (power capping is enforced as an average,
# and the counter and the time of a reading come from two NVML calls ~3 ms
# apart), so an honest GPU is never cut; a node gains at most 25 % over rated.
SLACK = 1.25
# Resets bridged per GPU per hour of reading time; later ones bridge nothing
# (the new counter value becomes the baseline) and are counted as capped.
MAX_BRIDGED_RESETS_PER_HOUR = 4
HOUR_US = 3_600_000_000


@lru_cache(maxsize=1024)
def bound_mw(model: str) -> int:
    """The rated power of a GPU model, whatever the node says its limit is."""
    name = model.upper()
    for key, mw in RATED_POWER_MW:
        if key in name:
            return mw
    return UNKNOWN_MODEL_MW


def max_credit_mj(model: str, span_us: int) -> int:
    """The most energy one span between two readings may credit."""
    return int(bound_mw(model) * SLACK * max(0, span_us) // 1_000_000)
