"""The chaos soak's verdict: the truth each agent host logs before its spool commits,
against the store. A sample missing, a sample twice or a millijoule off is found."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from neocloud.agent.convert import build_batch
from neocloud.agent.gpu.sim import SimBackend
from neocloud.agent.spool import Spool
from neocloud.bench import chaoshost
from neocloud.bench.verify import compare, passed
from neocloud.scheduler.store.db import open_db

NODE = "chaos-000"
FIRST = "uuid = (SELECT MIN(uuid) FROM gpus)"


def _seal(tmp_path: Path, batches: int) -> tuple[Spool, chaoshost.TruthLog, dict[str, dict[str, int]]]:
    spool = Spool(tmp_path / "spool.db")
    log = chaoshost.TruthLog(chaoshost.truth_path(tmp_path, 0))
    sealing = chaoshost.TruthSpool(spool, log)
    sim = SimBackend(NODE, 2, load=0.5)
    for _ in range(batches):
        sealing.append(build_batch(NODE, sim.inventory(), [sim.read(True), sim.read(False)], sim.now_us()))
    report = {"epoch": spool.epoch, "last_seq": spool.last_seq, "unacked_batches": 0, "rejected_batches": 0}
    return spool, log, {NODE: {**report, "dropped_samples": 0}}


def _store(tmp_path: Path, truth: dict[tuple[str, int, int], dict[str, list[Any]]]) -> Path:
    """A store holding exactly what the truth says (as the scheduler would)."""
    path = tmp_path / "scheduler.db"
    db = open_db(path)
    db.execute("INSERT INTO nodes VALUES (?, '', 'sim', 1, 0, 0, 0, 0)", (NODE,))
    per_gpu: dict[str, list[Any]] = {}
    for gpus in truth.values():
        for uuid, (count, util, energy) in gpus.items():
            total = per_gpu.setdefault(uuid, [0, 0, []])
            total[0] += count
            total[1] += util
            total[2] += energy
    for index, (uuid, (count, util, energy)) in enumerate(sorted(per_gpu.items())):
        db.execute(
            "INSERT INTO gpus (uuid, node_id, gpu_index, model, memory_total_bytes, power_limit_mw, energy_total_mj)"
            " VALUES (?, ?, ?, 'NVIDIA H200', 1, 700000, ?)",
            (uuid, NODE, index, energy[-1] - energy[0]),
        )
        db.execute(
            "INSERT INTO meter_cells (uuid, owner, hour, energy_mj, util_sum, util_count, peak_power_mw,"
            " memory_peak_bytes) VALUES (?, 'idle', 0, 0, ?, ?, 0, 0)",
            (uuid, util, count),
        )
    db.close()
    return path


def _alter(path: Path, sql: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(sql)
    db.close()


def test_a_store_equal_to_the_truth_passes_and_each_difference_is_found(tmp_path: Path) -> None:
    spool, _, reports = _seal(tmp_path, 3)
    truth = chaoshost.read_truth(chaoshost.truth_path(tmp_path, 0))
    db = _store(tmp_path, truth)
    paths = [chaoshost.truth_path(tmp_path, 0)]
    result = compare(db, paths, reports)
    assert (result["samples_sent"], result["samples_stored"], result["batches"]) == (12, 12, 3)
    assert result["energy_truth_mj"] > 0 and passed(result)

    _alter(db, f"UPDATE meter_cells SET util_count = util_count + 1 WHERE {FIRST}")
    assert compare(db, paths, reports)["double_counted"] == 1
    _alter(db, f"UPDATE meter_cells SET util_count = util_count - 3 WHERE {FIRST}")
    assert compare(db, paths, reports)["lost"] == 2
    _alter(db, f"UPDATE meter_cells SET util_count = util_count + 2, util_sum = util_sum + 50 WHERE {FIRST}")
    assert compare(db, paths, reports)["util_sum_difference"] == 50
    _alter(db, "UPDATE meter_cells SET util_sum = util_sum - 50")
    _alter(db, "UPDATE gpus SET energy_total_mj = energy_total_mj + 1 WHERE gpu_index = 0")
    result = compare(db, paths, reports)
    assert (result["lost"], result["double_counted"], result["energy_difference_mj"]) == (0, 0, 1)
    assert not passed(result)
    spool.close()


def test_what_a_kill_left_before_the_spool_committed_does_not_count(tmp_path: Path) -> None:
    spool, log, reports = _seal(tmp_path, 2)
    uuid = SimBackend(NODE, 1).inventory()[0].uuid
    # The line for seq 3 was written, then the process died before the spool's commit.
    log.write({"n": NODE, "e": spool.epoch, "s": 3, "g": {uuid: [1000, 0, [1]]}})
    truth = chaoshost.read_truth(chaoshost.truth_path(tmp_path, 0))
    assert (NODE, spool.epoch, 3) in truth
    del truth[(NODE, spool.epoch, 3)]
    result = compare(_store(tmp_path, truth), [chaoshost.truth_path(tmp_path, 0)], reports)
    assert result["samples_sent"] == 8 and passed(result)
    spool.close()
