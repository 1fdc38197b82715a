"""The files a runner writes for its job (preemption notice, reclaim warning), in a
directory the runner owns and the job may only read.

The job's own directory is the job's to fill: a job that pre-created a directory or
a symbolic link at the name the runner wrote its notice through made the write fail,
and with it the SIGTERM that followed. Here every write goes through a descriptor of
the control directory (opened without following links), into a fresh temporary name
created with O_EXCL|O_NOFOLLOW, then renamed over the final name, so nothing the job
can create in its own directory is ever opened or replaced by the runner.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

DIR_MODE = 0o755  # the job (another uid under the sandbox) reads; only the runner writes
FILE_MODE = 0o644


class ControlDirError(OSError):
    """The control directory is not one the runner made and owns."""


class ControlDir:
    """`<job dir>/control`, made (or checked) on open and held by descriptor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)
        # O_NOFOLLOW: a link planted at the name is refused, never followed.
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        st = os.fstat(self._fd)
        if st.st_uid != os.geteuid() or not stat.S_ISDIR(st.st_mode):
            os.close(self._fd)
            raise ControlDirError(f"{path} is owned by uid {st.st_uid}, not by the runner's ({os.geteuid()})")
        os.fchmod(self._fd, DIR_MODE)  # a reused directory gets its mode back: nobody else writes here

    def path_of(self, name: str) -> Path:
        return self.path / name

    def write(self, name: str, text: str) -> None:
        """Replace `name` atomically with `text`: a reader sees the whole file or none of it."""
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, FILE_MODE, dir_fd=self._fd)
        try:
            os.fchmod(fd, FILE_MODE)  # whatever the runner's umask: the job must read it
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self._fd)
            raise

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self._fd)

    def close(self) -> None:
        os.close(self._fd)
