"""`neocloud meter replay`: audit a bill from raw readings (see `scheduler/metering/audit.py`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neocloud.domain.trace import TraceError
from neocloud.scheduler.metering.audit import read_allocations, replay
from neocloud.scheduler.metering.split import MeteringError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("meter", help="metering tools (audit a bill from raw readings)")
    actions = p.add_subparsers(dest="meter", metavar="ACTION")
    actions.required = True
    r = actions.add_parser(
        "replay",
        help="recompute per-allocation GPU-seconds and joules from a telemetry trace",
        description="Recompute usage from a recorded trace (the format of tests/data/*.jsonl; the GPU's identity comes "
        "from the .meta.json beside it) and allocation intervals, with the code the live path uses. Energy between "
        "two counter readings is split at allocation boundaries in proportion to power; for every GPU the "
        "allocations plus idle add up to the counter delta. Prints JSON.",
    )
    r.add_argument("--trace", type=Path, action="append", required=True, help="trace .jsonl (repeat for more GPUs)")
    r.add_argument(
        "--allocations", type=Path, required=True, help="CSV with header job,tenant,class,gpu_uuid,start,end (Unix s)"
    )
    r.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        result = replay(args.trace, read_allocations(args.allocations))
    except (MeteringError, TraceError) as e:
        print(f"neocloud meter replay: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0
