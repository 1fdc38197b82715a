"""Workdir archives: a deterministic gzip tar of a directory, and the checks that make one safe to unpack.

The format is shared by the client (which packs), the API (which checks a whole upload once) and the
runner (which unpacks into a job directory). Unpacking is a security boundary, so every member is
checked here rather than trusting `tarfile`'s filters (Python 3.11.4+ only): a member's path must be
relative with no `..`, and may not pass through a symlink of the archive; a symlink's target must stay
inside the root (and may not go through another symlink); a hard link must name an earlier regular
file; only regular files, directories and those links are allowed (no devices, fifos, sparse files);
files and unpacked bytes are counted as they come and refused past the limits (a decompression bomb
stops at the bound, including tar headers). Refusals raise InvalidArgumentError naming the entry.
Writes use O_NOFOLLOW and O_EXCL under a root the caller owns, and symlinks are made last, so nothing is
written outside the root whatever the archive holds.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from neocloud.domain.errors import InvalidArgumentError
from neocloud.domain.ignore import IGNORE_FILE, IgnoreRules

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_HEADER_SLACK = 3 * tarfile.BLOCKSIZE  # a member's headers (pax, long name, its own) and padding


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_files: int = 100_000  # entries of any kind
    max_bytes: int = 4 << 30  # bytes of file content unpacked


@dataclass(frozen=True, slots=True)
class ArchiveInfo:
    files: int  # regular files (hard links included)
    bytes: int  # file content


class _Capped:
    """A read-only stream that refuses to give more than `cap` bytes (a gzip bomb stops here)."""

    def __init__(self, inner: gzip.GzipFile, cap: int) -> None:
        self._inner, self._left = inner, cap

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(_CHUNK if size < 0 else size)
        self._left -= len(data)
        if self._left < 0:
            raise InvalidArgumentError("archive unpacks to more bytes than the quota allows")
        return data


def _path(name: str) -> str:
    """A member's normalised relative path, or InvalidArgumentError naming it."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        raise InvalidArgumentError(f"archive entry {name!r}: absolute or malformed path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgumentError(f"archive entry {name!r}: '..' in its path")
    if not parts:
        raise InvalidArgumentError(f"archive entry {name!r}: names the root")
    return "/".join(parts)


class _Checker:
    """Checks members one by one, counting against the limits."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.entries = self.files = self.bytes = 0
        self.regular: set[str] = set()
        self.seen: set[str] = set()
        self.links: dict[str, tuple[str, str]] = {}  # symlink path -> (target from the root, as written)

    def _through_link(self, path: str) -> str | None:
        parts = path.split("/")
        return next((p for i in range(1, len(parts)) if (p := "/".join(parts[:i])) in self.links), None)

    def member(self, m: tarfile.TarInfo) -> str:
        path = _path(m.name)
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise InvalidArgumentError(f"archive entry {path!r}: more than {self.limits.max_files} entries")
        if path in self.seen:
            raise InvalidArgumentError(f"archive entry {path!r}: appears twice")
        self.seen.add(path)
        if link := self._through_link(path):
            raise InvalidArgumentError(f"archive entry {path!r}: its path goes through the symlink {link!r}")
        if m.isreg():
            self.files += 1
            self.bytes += m.size
            if self.bytes > self.limits.max_bytes:
                raise InvalidArgumentError(f"archive entry {path!r}: more than {self.limits.max_bytes} bytes")
            self.regular.add(path)
        elif m.islnk():
            target = _path(m.linkname)
            if target not in self.regular:
                raise InvalidArgumentError(f"archive entry {path!r}: hard link to {m.linkname!r}, not a file before it")
            self.files += 1
        elif m.issym():
            if m.linkname.startswith("/"):
                raise InvalidArgumentError(f"archive entry {path!r}: symlink to the absolute path {m.linkname!r}")
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), m.linkname))
            if target == ".." or target.startswith("../") or target == ".":
                raise InvalidArgumentError(f"archive entry {path!r}: symlink {m.linkname!r} points out of the workdir")
            self.links[path] = (target, m.linkname)
        elif not m.isdir():
            raise InvalidArgumentError(f"archive entry {path!r}: {_kind(m)} not allowed (files, directories, links)")
        return path

    def finish(self) -> ArchiveInfo:
        """The cross-checks that need every member: no symlink's target goes through another symlink."""
        for path, (_, linkname) in sorted(self.links.items()):
            # Step by step as the kernel resolves it: a `..` after a symlink goes up from its target,
            # which a lexical normalisation would hide.
            here: list[str] = posixpath.dirname(path).split("/") if "/" in path else []
            for part in linkname.split("/"):
                if part == ".." and here:
                    here.pop()
                elif part not in ("", "."):
                    here.append(part)
                    if "/".join(here) in self.links:
                        raise InvalidArgumentError(f"archive entry {path!r}: symlink through another symlink")
        return ArchiveInfo(self.files, self.bytes)


def _kind(m: tarfile.TarInfo) -> str:
    kinds = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a fifo"}
    return kinds.get(m.type, f"an entry of type {m.type!r}")


# A long name or a pax header is read whole by tarfile before any member is seen; none of ours needs more.
MAX_HEADER_DATA = 64 * 1024


class _BoundedInfo(tarfile.TarInfo):
    """TarInfo that refuses a GNU long-name or pax header bigger than MAX_HEADER_DATA before reading it
    (an 8 MiB upload could otherwise hold a 400 MB name that costs gigabytes of memory to parse)."""

    def _proc_gnulong(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        self._bound()
        return super()._proc_gnulong(tarfile_)  # type: ignore[misc]

    def _proc_pax(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        self._bound()
        return super()._proc_pax(tarfile_)  # type: ignore[misc]

    def _bound(self) -> None:
        if self.size > MAX_HEADER_DATA:
            raise tarfile.HeaderError(f"a header of {self.size} bytes (at most {MAX_HEADER_DATA})")


# RecursionError: tarfile reads a chain of long-name headers recursively.
_DAMAGED = (tarfile.TarError, OSError, EOFError, zlib.error, RecursionError)


@contextlib.contextmanager
def _whole() -> Iterator[None]:
    """A damaged stream (not gzip, truncated, a bad checksum) is the archive's fault, wherever it shows."""
    try:
        yield
    except _DAMAGED as e:
        raise InvalidArgumentError(f"not a whole gzip tar archive: {e}") from None


def _members(stream: IO[bytes], checker: _Checker) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, str]]:
    """Each member, checked; then the rest of the stream, so that gzip's checksum and length at its
    end are verified too (within the same bound)."""
    cap = checker.limits.max_bytes + (checker.limits.max_files + 2) * _HEADER_SLACK
    with _whole(), gzip.GzipFile(fileobj=stream, mode="rb") as gz:
        capped = _Capped(gz, cap)
        with tarfile.open(fileobj=capped, mode="r|", tarinfo=_BoundedInfo) as tar:  # type: ignore[call-overload]
            for m in tar:
                yield tar, m, checker.member(m)
        while capped.read(_CHUNK):
            pass


def check(stream: IO[bytes], limits: ArchiveLimits) -> ArchiveInfo:
    """Read a whole archive once and refuse it if any member would be refused at unpack time."""
    checker = _Checker(limits)
    with _whole():
        for tar, m, _ in _members(stream, checker):
            if m.isreg() and (f := tar.extractfile(m)) is not None:
                while f.read(_CHUNK):
                    pass
    return checker.finish()


def _parents(root: Path, path: str, made: set[str]) -> None:
    """Make the directories on the way to `path`. Only directories this unpack made may be
    written into: an archive cannot reach into what `root` already held (a runner's control
    directory, say), nor through anything that is not a plain directory."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        here = "/".join(parts[:i])
        if here not in made:
            try:
                _mkdir(root / here)
            except FileExistsError:
                raise InvalidArgumentError(f"archive entry {path!r}: {here!r} is already in the directory") from None
            made.add(here)


def _mkdir(path: Path) -> None:
    os.mkdir(path, 0o755)
    os.chmod(path, 0o755, follow_symlinks=False)  # readable by the job's user, whatever the umask


def unpack(stream: IO[bytes], root: Path, limits: ArchiveLimits) -> ArchiveInfo:
    """Unpack into `root` (an existing directory the caller owns), checking as it goes. Entries
    may not replace or enter anything already in `root` (refused, naming the entry)."""
    checker = _Checker(limits)
    made: set[str] = set()
    with _whole():
        for tar, m, path in _members(stream, checker):
            try:
                _write(tar, m, root, path, made)
            except (EOFError, zlib.error, gzip.BadGzipFile, tarfile.TarError):
                raise  # the stream's fault, not the entry's: _whole says so
            except OSError as e:
                raise InvalidArgumentError(f"archive entry {path!r}: cannot unpack: {e.strerror or e}") from None
    info = checker.finish()
    for path, (_, linkname) in sorted(checker.links.items()):  # last, so no write above went through one
        _parents(root, path, made)
        try:
            os.symlink(linkname, root / path)
        except OSError as e:
            raise InvalidArgumentError(f"archive entry {path!r}: cannot unpack: {e.strerror}") from None
    return info


def _write(tar: tarfile.TarFile, m: tarfile.TarInfo, root: Path, path: str, made: set[str]) -> None:
    _parents(root, path, made)
    target = root / path
    if m.isdir():
        if path not in made:
            _mkdir(target)  # FileExistsError for what root already held
            made.add(path)
    elif m.islnk():
        os.link(root / _path(m.linkname), target, follow_symlinks=False)
    elif m.isreg():
        mode = 0o755 if m.mode & 0o111 else 0o644
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        os.fchmod(fd, mode)  # the archive's mode, whatever the unpacker's umask (Ray's workers: 077)
        with os.fdopen(fd, "wb") as out, tar.extractfile(m) as data:  # type: ignore[union-attr]
            while chunk := data.read(_CHUNK):
                out.write(chunk)


def pack(root: Path, out: BinaryIO, limits: ArchiveLimits) -> ArchiveInfo:
    """Write `root` (minus what its .neocloudignore names) to `out` as a deterministic gzip tar: sorted,
    mtime 0, owner 0:0, modes 0644/0755. Refuses devices, fifos, sockets and symlinks pointing out."""
    ignore_file = root / IGNORE_FILE
    rules = IgnoreRules(ignore_file.read_text() if ignore_file.is_file() else "")
    checker = _Checker(limits)
    with (
        gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel, full, st in _walk(root, "", rules):
            info = _info(rel, full, st)
            checker.member(info)
            if info.isreg():
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return checker.finish()


def _info(rel: str, full: Path, st: os.stat_result) -> tarfile.TarInfo:
    """The member for one entry, with nothing of this machine in it (mtime, owner, umask)."""
    info = tarfile.TarInfo(rel)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.mode = 0o755 if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111 else 0o644
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISREG(st.st_mode):
        info.size = st.st_size
    else:
        raise InvalidArgumentError(f"{full}: not a file, directory or symlink (a device, fifo or socket)")
    return info


def _walk(root: Path, prefix: str, rules: IgnoreRules) -> Iterator[tuple[str, Path, os.stat_result]]:
    for name in sorted(os.listdir(root / prefix if prefix else root)):
        rel = f"{prefix}{name}"
        full = root / rel
        st = os.lstat(full)
        is_dir = stat.S_ISDIR(st.st_mode)
        if rules.ignored(rel, is_dir):
            continue
        yield rel, full, st
        if is_dir:
            yield from _walk(root, rel + "/", rules)
