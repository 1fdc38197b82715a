from __future__ import annotations

from pathlib import Path

import pytest

from neocloud.scheduler.executor.logfile import read_chunk


def test_reads_in_chunks_and_says_when_it_reached_the_end(tmp_path: Path) -> None:
    log = tmp_path / "rank-0.log"
    log.write_bytes(b"0123456789")
    assert read_chunk(log, 0, 4) == (b"0123", False)
    assert read_chunk(log, 4, 100) == (b"456789", True)
    assert read_chunk(log, -5, 2) == (b"01", False)  # a negative offset reads from the start
    assert read_chunk(log, 10, 4) == (b"", True)
    assert read_chunk(log, 3, -1) == (b"", False)  # a negative size reads nothing


def test_a_missing_log_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_chunk(tmp_path / "absent.log", 0, 10)


def test_a_log_swapped_for_a_link_to_someone_elses_file_reads_as_no_log(tmp_path: Path) -> None:
    secret = tmp_path / "other-tenant.log"
    secret.write_bytes(b"the other tenant's output")
    log = tmp_path / "rank-0.log"
    log.symlink_to(secret)
    with pytest.raises(FileNotFoundError, match="symbolic link"):
        read_chunk(log, 0, 100)
