"""The limits a rank gets when it asked for none: its share of the node by GPUs (sandbox.default_limits),
and the runner that uses them, or the job's own --memory/--cpus where given."""

from __future__ import annotations

from pathlib import Path

import pytest

from neocloud.scheduler.executor import sandbox
from neocloud.scheduler.executor.sandbox import Limits, SandboxError, default_limits

GIB = 1 << 30


def test_a_rank_gets_its_gpus_share_of_the_memory_the_reserve_leaves_and_of_the_cpus() -> None:
    # 1 TiB: the reserve is 5 % (over 2 GiB); 2 of 8 GPUs take a quarter of the rest, 96 cores -> 24.
    assert default_limits(1024 * GIB, 96, 2, 8) == Limits(memory_bytes=(1024 * GIB - 1024 * GIB // 20) // 4, cpus=24)


def test_the_reserve_is_at_least_2_gib() -> None:
    assert default_limits(16 * GIB, 8, 1, 2) == Limits(memory_bytes=7 * GIB, cpus=4)


def test_every_rank_gets_at_least_one_cpu_and_cpus_are_rounded_down() -> None:
    assert default_limits(64 * GIB, 2, 1, 8).cpus == 1
    assert default_limits(64 * GIB, 10, 1, 4).cpus == 2


def test_without_gpus_known_a_rank_gets_the_whole_node_less_the_reserve() -> None:
    whole = Limits(memory_bytes=14 * GIB, cpus=8)
    assert default_limits(16 * GIB, 8, 1, 0) == whole  # no inventory
    assert default_limits(16 * GIB, 8, 0, 4) == whole  # no GPU assigned by Ray
    assert default_limits(16 * GIB, 8, 9, 4) == whole  # never more than the node


def test_a_node_at_its_reserve_still_limits_its_ranks() -> None:
    limits = default_limits(1 * GIB, 1, 1, 1)
    assert limits.memory_bytes == sandbox.MIN_DEFAULT_MEMORY_BYTES > 0  # never 0, which is "unlimited"


def test_mem_total_is_read_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683664 kB\nMemFree:        21664080 kB\n")
    assert sandbox.mem_total_bytes(meminfo) == 24683664 * 1024
    assert sandbox.mem_total_bytes() > 0  # this host's


@pytest.mark.parametrize("text", ["MemFree: 1 kB\n", "MemTotal: lots kB\n", None])
def test_an_unreadable_meminfo_is_a_sandbox_error(tmp_path: Path, text: str | None) -> None:
    meminfo = tmp_path / "meminfo"
    if text is not None:
        meminfo.write_text(text)
    with pytest.raises(SandboxError, match="MemTotal"):
        sandbox.mem_total_bytes(meminfo)
