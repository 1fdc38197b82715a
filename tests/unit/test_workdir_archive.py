"""Workdir archives: the packer is deterministic and honours .neocloudignore; the unpacker refuses
every hostile archive naming the entry, and writes nothing outside its root."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from neocloud.domain.archive import ArchiveLimits, check, pack, unpack
from neocloud.domain.errors import InvalidArgumentError

LIMITS = ArchiveLimits(max_files=100, max_bytes=1 << 20)


def _tree(root: Path) -> None:
    (root / "data").mkdir(parents=True)
    (root / "run.py").write_text("print('hi')\n")
    (root / "run.py").chmod(0o750)
    (root / "data" / "input.txt").write_text("42\n")
    (root / "data" / "big.ckpt").write_bytes(b"x" * 1000)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "run.cpython-311.pyc").write_bytes(b"\0")
    (root / "link").symlink_to("data/input.txt")
    (root / ".neocloudignore").write_text("__pycache__/\n*.ckpt\n")


def _pack(root: Path, limits: ArchiveLimits = LIMITS) -> bytes:
    out = io.BytesIO()
    pack(root, out, limits)
    return out.getvalue()


def test_pack_is_deterministic_and_honours_the_ignore_file(tmp_path: Path) -> None:
    _tree(tmp_path / "a")
    _tree(tmp_path / "b")
    os.utime(tmp_path / "b" / "run.py", (1, 1))
    blob = _pack(tmp_path / "a")
    assert blob == _pack(tmp_path / "b")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [".neocloudignore", "data", "data/input.txt", "link", "run.py"]
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}
    assert next(m for m in members if m.name == "run.py").mode == 0o755
    info = check(io.BytesIO(blob), LIMITS)
    assert (info.files, info.bytes) == (3, len("print('hi')\n") + 3 + len("__pycache__/\n*.ckpt\n"))


def test_round_trip(tmp_path: Path) -> None:
    _tree(tmp_path / "src")
    (tmp_path / "job").mkdir()
    unpack(io.BytesIO(_pack(tmp_path / "src")), tmp_path / "job", LIMITS)
    assert (tmp_path / "job" / "data" / "input.txt").read_text() == "42\n"
    assert os.readlink(tmp_path / "job" / "link") == "data/input.txt"
    assert os.access(tmp_path / "job" / "run.py", os.X_OK)
    assert not (tmp_path / "job" / "__pycache__").exists()


def test_pack_refuses_a_fifo_and_a_symlink_pointing_out(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    os.mkfifo(tmp_path / "w" / "pipe")
    with pytest.raises(InvalidArgumentError, match="pipe"):
        _pack(tmp_path / "w")
    os.unlink(tmp_path / "w" / "pipe")
    (tmp_path / "w" / "escape").symlink_to("../../etc")
    with pytest.raises(InvalidArgumentError, match="escape"):
        _pack(tmp_path / "w")


def _archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, None if data is None else io.BytesIO(data))
    return out.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "absolute path": (lambda: _archive(_file("/etc/evil")), "/etc/evil"),
    "dot-dot": (lambda: _archive(_file("a/../../evil")), "a/../../evil"),
    "symlink out": (lambda: _archive(_special("out", tarfile.SYMTYPE, "../../etc")), "out"),
    "absolute symlink": (lambda: _archive(_special("out", tarfile.SYMTYPE, "/etc/passwd")), "out"),
    "write through a symlink": (
        lambda: _archive(_special("d", tarfile.SYMTYPE, "sub"), _file("d/x")),
        "d/x",
    ),
    "symlink through a symlink": (
        lambda: _archive(
            _special("p/q/L", tarfile.SYMTYPE, ".."),  # p/q/L is p: lexically p/q/L/../.. is p, really ..
            _special("x", tarfile.SYMTYPE, "p/q/L/../.."),
        ),
        "x",
    ),
    "hard link out": (lambda: _archive(_special("h", tarfile.LNKTYPE, "../../etc/passwd")), "h"),
    "hard link to nothing before it": (lambda: _archive(_special("h", tarfile.LNKTYPE, "later")), "h"),
    "character device": (lambda: _archive(_special("null", tarfile.CHRTYPE)), "null"),
    "block device": (lambda: _archive(_special("sda", tarfile.BLKTYPE)), "sda"),
    "fifo": (lambda: _archive(_special("pipe", tarfile.FIFOTYPE)), "pipe"),
    "too many files": (lambda: _archive(*(_file(f"f{i}") for i in range(101))), "f100"),
    "too many bytes": (lambda: _archive(_file("a", b"\0" * (600 << 10)), _file("b", b"\0" * (600 << 10))), "'b'"),
    "the same entry twice": (lambda: _archive(_file("a"), _file("a")), "a"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_naming_the_entry_and_nothing_is_written_outside(case: str, tmp_path: Path) -> None:
    build, entry = HOSTILE[case]
    blob = build()
    with pytest.raises(InvalidArgumentError, match=entry.replace(".", r"\.")):
        check(io.BytesIO(blob), LIMITS)
    parent = tmp_path / "parent"
    (parent / "job" / "sub").mkdir(parents=True)
    with pytest.raises(InvalidArgumentError, match=entry.replace(".", r"\.")):
        unpack(io.BytesIO(blob), parent / "job", LIMITS)
    assert sorted(os.listdir(parent)) == ["job"]
    assert sorted(os.listdir(tmp_path)) == ["parent"]


def test_a_gzip_bomb_stops_at_the_bound(tmp_path: Path) -> None:
    """A member claiming a huge file is refused before its bytes are read; a huge pax header (which
    tarfile would read whole into memory) is refused at its header."""
    big = tarfile.TarInfo("bomb")
    big.size = 1 << 40
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, 8 << 20
    for header in (big.tobuf(tarfile.PAX_FORMAT), pax.tobuf(tarfile.USTAR_FORMAT) + b"a" * pax.size):
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb") as gz:
            gz.write(header)
        assert len(out.getvalue()) < 64 << 10
        (tmp_path / "job").mkdir()
        with pytest.raises(InvalidArgumentError, match=r"bomb|more bytes than the quota|a header of \d+ bytes"):
            unpack(io.BytesIO(out.getvalue()), tmp_path / "job", LIMITS)
        assert os.listdir(tmp_path / "job") == []
        (tmp_path / "job").rmdir()


@pytest.mark.parametrize("damage", ["not gzip", "cut in a file", "cut in the trailer", "a flipped byte"])
def test_a_damaged_stream_is_invalid_argument_never_another_error(damage: str, tmp_path: Path) -> None:
    """Truncated or corrupt archives are the archive's fault (INVALID_ARGUMENT), found by check and by
    unpack alike, including a bad gzip checksum at the very end."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_bytes(os.urandom(200_000))
    blob = _pack(tmp_path / "src")
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF
    damaged = {
        "not gzip": b"hello",
        "cut in a file": blob[: len(blob) // 2],
        "cut in the trailer": blob[:-4],
        "a flipped byte": bytes(flipped),
    }[damage]
    with pytest.raises(InvalidArgumentError, match="not a whole gzip tar archive"):
        check(io.BytesIO(damaged), LIMITS)
    (tmp_path / "job").mkdir()
    with pytest.raises(InvalidArgumentError, match="not a whole gzip tar archive"):
        unpack(io.BytesIO(damaged), tmp_path / "job", LIMITS)


@pytest.mark.parametrize(
    ("members", "entry"),
    [
        ((_file("control/rank-0.preempt"),), "control/rank-0.preempt"),  # into the runner's directory
        ((_special("control", tarfile.DIRTYPE),), "control"),
        ((_file("rank-0.log"),), "rank-0.log"),  # over a file the runner made
    ],
)
def test_unpack_never_enters_or_replaces_what_the_directory_held(
    members: tuple[tuple[tarfile.TarInfo, bytes | None], ...], entry: str, tmp_path: Path
) -> None:
    (tmp_path / "control").mkdir()
    (tmp_path / "rank-0.log").write_text("runner's")
    with pytest.raises(InvalidArgumentError, match=entry):
        unpack(io.BytesIO(_archive(*members)), tmp_path, LIMITS)
    assert os.listdir(tmp_path / "control") == [] and (tmp_path / "rank-0.log").read_text() == "runner's"


def test_modes_are_the_archives_whatever_the_umask(tmp_path: Path) -> None:
    """Ray's workers unpack with umask 077: the job's own user (the sandbox's) must still read it."""
    _tree(tmp_path / "src")
    (tmp_path / "job").mkdir()
    old = os.umask(0o077)
    try:
        unpack(io.BytesIO(_pack(tmp_path / "src")), tmp_path / "job", LIMITS)
    finally:
        os.umask(old)
    assert (tmp_path / "job" / "data").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "job" / "data" / "input.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "job" / "run.py").stat().st_mode & 0o777 == 0o755


def _gz(raw: bytes) -> io.BytesIO:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as gz:
        gz.write(raw)
    out.seek(0)
    return out


def test_a_long_name_header_is_refused_before_it_is_read_whole() -> None:
    """A GNU long name of 400 kB (a 400 MB one fits in a few MB of gzip) is refused at its header,
    well within the archive's byte bound: tarfile would otherwise read it into memory whole."""
    longname = tarfile.TarInfo("././@LongLink")
    longname.type, longname.size = tarfile.GNUTYPE_LONGNAME, 400 << 10
    raw = longname.tobuf(tarfile.GNU_FORMAT) + b"a" * longname.size + b"\0" * 512
    big = ArchiveLimits(max_files=100, max_bytes=8 << 20)
    with pytest.raises(InvalidArgumentError, match="header of 409600 bytes"):
        check(_gz(raw), big)


def test_a_chain_of_long_name_headers_is_a_damaged_archive_not_a_crash() -> None:
    link = tarfile.TarInfo("././@LongLink")
    link.type, link.size = tarfile.GNUTYPE_LONGNAME, 512
    raw = (link.tobuf(tarfile.GNU_FORMAT) + b"n" * 512) * 5000
    with pytest.raises(InvalidArgumentError):
        check(_gz(raw), ArchiveLimits(max_files=100, max_bytes=64 << 20))
