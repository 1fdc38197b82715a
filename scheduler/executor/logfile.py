"""Reading a rank's log file in chunks, as the runner (live) and the executor (after release) both do."""

from __future__ import annotations

from pathlib import Path


def read_chunk(path: str | Path, offset: int, max_bytes: int) -> tuple[bytes, bool]:
    """Up to `max_bytes` from `offset` (negative values count as 0), and whether that
    reached the end of what the file holds now. FileNotFoundError if it does not exist."""
    offset = max(offset, 0)
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(max(max_bytes, 0))
        size = f.seek(0, 2)
    return data, offset + len(data) >= size
