"""A rank's log file: read in chunks, as the runner (live) and the executor (after release) both
do, and deleted with its job directory once the job has ended longer than the retention ago.

The log sits where the job can write, so a job could swap it for a symbolic link to a file it may not
read (another tenant's log, a key) and ask for its "output": the last component is opened without
following links, and a link reads as no log at all."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)


def open_for_append(path: str | Path) -> BinaryIO:
    """A rank's log, opened by the runner (often root) in a directory the job can write: a link the job
    planted at the name is not followed, and only a regular file is written (OSError otherwise)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "ab")


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


# How long a node keeps a finished job's directory (logs, control files, workdir): the runner's
# environment may set NEOCLOUD_LOG_RETENTION_S (seconds) on the node; 7 days otherwise.
RETENTION_ENV = "NEOCLOUD_LOG_RETENTION_S"
DEFAULT_RETENTION_S = 7 * 24 * 3600.0


def retention_s(environ: Mapping[str, str] = os.environ) -> float:
    """The configured retention; a value that is not a number >= 0 is refused loudly, not ignored."""
    text = environ.get(RETENTION_ENV)
    if text is None:
        return DEFAULT_RETENTION_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"{RETENTION_ENV}={text!r}: give the seconds a finished job's logs are kept (>= 0)")
    return value


def running_marker(rank: int) -> str:
    """The control file a runner holds while its rank runs (made at launch, removed at its end)."""
    return f"rank-{rank}.running"


def ended_marker(rank: int) -> str:
    """The control file a runner writes when its rank has ended (its mtime: when)."""
    return f"rank-{rank}.ended"


def sweep_expired(log_dir: Path, retention: float, now: float, keep: str = "") -> list[str]:
    """Delete the job directories under `log_dir` none of whose ranks here still runs and whose
    last rank ended longer than `retention` ago; never `keep`. Only the runner-owned control
    directory decides (a job cannot plant its markers), and a directory with no end marker stays.
    Returns the job ids deleted."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(log_dir))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name == keep or not entry.is_dir(follow_symlinks=False):
            continue
        ended = _ended_at(Path(entry.path) / "control")
        if ended is not None and now - ended > retention:
            shutil.rmtree(entry.path, ignore_errors=True)  # fd-based on Linux: links inside are not followed
            logger.info("deleted the logs of job %s (ended %.0f s ago)", entry.name, now - ended)
            removed.append(entry.name)
    return removed


def _ended_at(control: Path) -> float | None:
    """When the last rank of this directory ended, or None while one runs (or none ended).
    A `control` the runner does not own was swapped by the job (its directory is writable to
    it): its markers are not believed, and the job directory's own mtime says how old it is."""
    try:
        st = control.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            return control.parent.lstat().st_mtime
        names = os.listdir(control)
    except OSError:
        return None
    if any(n.endswith(".running") for n in names):
        return None
    times = [(control / n).lstat().st_mtime for n in names if n.startswith("rank-") and n.endswith(".ended")]
    return max(times) if times else None
