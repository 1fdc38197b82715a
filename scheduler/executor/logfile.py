"""Reading a rank's log file in chunks, as the runner (live) and the executor (after release) both do.

The log sits where the job can write, so a job could swap it for a symbolic link to a file it may not
read (another tenant's log, a key) and ask for its "output": the last component is opened without
following links, and a link reads as no log at all."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def read_chunk(path: str | Path, offset: int, max_bytes: int) -> tuple[bytes, bool]:
    """Up to `max_bytes` from `offset` (negative values count as 0), and whether that
    reached the end of what the file holds now. FileNotFoundError if it does not exist
    or is a symbolic link."""
    offset = max(offset, 0)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileNotFoundError(errno.ENOENT, "the log is a symbolic link, not the job's output", str(path)) from e
        raise
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        data = f.read(max(max_bytes, 0))
        size = f.seek(0, 2)
    return data, offset + len(data) >= size
