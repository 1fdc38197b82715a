"""The chaos soak, short: 8 agents in one agent-host process, a scheduler process
with mTLS, a hostile node, and every kind of fault (cut, reset, blackhole, agent
host and scheduler kill -9) within 20 s; nothing lost, nothing counted twice,
not a millijoule off."""

from __future__ import annotations

from pathlib import Path

from neocloud.bench import chaos
from neocloud.bench.hostile import EXPECTED
from neocloud.bench.verify import passed


def test_short_soak_loses_and_doubles_nothing(tmp_path: Path) -> None:
    result = chaos.run(chaos.Settings(agents=8, gpus=2, seconds=20, seed=7, fault_every_s=1.5), str(tmp_path))
    assert all(n >= 1 for n in result["faults"].values()), result["faults"]
    assert result["samples_sent"] >= 8 * 2 * 10  # ~20 ticks each, less what kill -9s took before sealing
    assert result["samples_acked"] == result["samples_stored"] == result["samples_sent"]
    assert result["lost"] == result["double_counted"] == result["util_sum_difference"] == 0
    assert result["energy_abs_difference_mj"] == 0 and result["energy_truth_mj"] > 0
    assert result["unacked_batches"] == result["rejected_batches"] == result["gpus_taken_by_another_node"] == 0
    hostile = result["hostile"]
    assert hostile["unexpected"] == []
    assert {kind for kind, want in EXPECTED.items() if hostile["outcomes"].get(f"{kind}:{want}")} == set(EXPECTED)
    assert passed(result)
