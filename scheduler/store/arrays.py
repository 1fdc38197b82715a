"""Job arrays (Slurm's `--array`): the index expression and its bounds.

An array is submitted atomically (store/jobs.py: every task in one SAVEPOINT,
or none), one job per index; the array's id is its first task's job id, and
each task runs with NEOCLOUD_ARRAY_JOB_ID and NEOCLOUD_ARRAY_TASK_ID."""

from __future__ import annotations

import itertools
import logging
import re

from neocloud.domain.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

MAX_ARRAY_TASKS = 10_000
MAX_ARRAY_INDEX = 999_999
MAX_ARRAY_EXPRESSION = 256
_PART = re.compile(r"(\d{1,7})(?:-(\d{1,7})(?::(\d{1,7}))?)?")


def indices(expression: str) -> list[int]:
    """The indices of "0-99", "0-15:4", "1,3,5" or a mix, ascending; InvalidArgumentError naming the
    fault for a malformed expression, an index past MAX_ARRAY_INDEX, a repeated index or more than
    MAX_ARRAY_TASKS tasks (counted before any list is built)."""
    if len(expression) > MAX_ARRAY_EXPRESSION:
        raise InvalidArgumentError(f"array is {len(expression)} characters long; the limit is {MAX_ARRAY_EXPRESSION}")
    ranges: list[range] = []
    for part in expression.split(","):
        match = _PART.fullmatch(part.strip())
        if match is None:
            raise InvalidArgumentError(
                f"array: {part!r} is not an index, a range A-B or a range with a step A-B:S (e.g. 0-99, 0-15:4, 1,3,5)"
            )
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        step = int(match[3]) if match[3] is not None else 1
        if last < first or step < 1:
            raise InvalidArgumentError(f"array: {part!r} must run upwards with a step of at least 1")
        if last > MAX_ARRAY_INDEX:
            raise InvalidArgumentError(f"array: index {last} is past the largest, {MAX_ARRAY_INDEX}")
        ranges.append(range(first, last + 1, step))
    size = sum(len(r) for r in ranges)
    if size > MAX_ARRAY_TASKS:
        raise InvalidArgumentError(f"array {expression!r} has {size} tasks; an array has at most {MAX_ARRAY_TASKS}")
    out = sorted(i for r in ranges for i in r)
    repeated = next((a for a, b in itertools.pairwise(out) if a == b), None)
    if repeated is not None:
        raise InvalidArgumentError(f"array: index {repeated} is named twice")
    return out
