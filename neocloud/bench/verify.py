"""The verdict of `neocloud bench chaos`: the agent hosts' ground truth (what the
simulated GPUs produced and the spools sealed) against the scheduler's store.

Per GPU, the store's metered sample count and utilisation sum (meter_cells) and
its accumulated energy (gpus.energy_total_mj) must equal the truth: samples
missing are lost, samples over are double-counted; the energy the GPU used is
its counter's last sealed reading minus its first (the counter never goes back).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

from neocloud.bench import chaoshost


def compare(db_path: Path, truth_paths: list[Path], reports: dict[str, dict[str, int]]) -> dict[str, Any]:
    truth: dict[tuple[str, int, int], dict[str, list[Any]]] = {}
    for path in truth_paths:
        truth.update(chaoshost.read_truth(path))
    samples: dict[str, int] = defaultdict(int)
    util: dict[str, int] = defaultdict(int)
    readings: dict[str, list[int]] = defaultdict(list)
    node_of: dict[str, str] = {}
    sent = acked = batches = 0
    for (node, epoch, seq), gpus in sorted(truth.items()):
        report = reports.get(node)
        # Only what the spool committed counts (a later line replaced an interrupted intent).
        if report is None or epoch != report["epoch"] or seq > report["last_seq"]:
            continue
        batches += 1
        in_batch = sum(g[0] for g in gpus.values())
        sent += in_batch
        if seq <= report["last_seq"] - report["unacked_batches"]:
            acked += in_batch
        for uuid, (count, util_sum, energy) in gpus.items():
            samples[uuid] += count
            util[uuid] += util_sum
            readings[uuid].extend(energy)
            node_of[uuid] = node
    stored_samples, stored_util, stored_energy, owners = _store(db_path)
    lost = double = util_diff = energy_diff = energy_abs = 0
    backwards = 0
    for uuid, count in samples.items():
        lost += max(0, count - stored_samples.get(uuid, 0))
        double += max(0, stored_samples.get(uuid, 0) - count)
        util_diff += abs(stored_util.get(uuid, 0) - util[uuid])
    for uuid, values in readings.items():
        backwards += sum(b < a for a, b in itertools.pairwise(values))
        diff = stored_energy.get(uuid, 0) - (values[-1] - values[0])
        energy_diff += diff
        energy_abs += abs(diff)
    # A GPU the truth has that the store gives to another node (the hostile one) is disturbed.
    stolen = sum(1 for uuid in samples if owners.get(uuid) not in (None, node_of[uuid]))
    return {
        "samples_sent": sent,
        "samples_acked": acked,
        "samples_stored": sum(stored_samples.get(u, 0) for u in samples),
        "lost": lost,
        "double_counted": double,
        "util_sum_difference": util_diff,
        "energy_difference_mj": energy_diff,
        "energy_abs_difference_mj": energy_abs,
        "energy_truth_mj": sum(v[-1] - v[0] for v in readings.values()),
        "counter_went_back": backwards,
        "gpus_taken_by_another_node": stolen,
        "batches": batches,
        "gpus": len(samples),
        "unacked_batches": sum(r["unacked_batches"] for r in reports.values()),
        "rejected_batches": sum(r["rejected_batches"] for r in reports.values()),
        "dropped_samples": sum(r["dropped_samples"] for r in reports.values()),
    }


def passed(result: dict[str, Any]) -> bool:
    hostile = result.get("hostile", {})
    return not (
        result["lost"]
        or result["double_counted"]
        or result["util_sum_difference"]
        or result["energy_abs_difference_mj"]
        or result["counter_went_back"]
        or result["gpus_taken_by_another_node"]
        or hostile.get("unexpected")
        or result.get("crashes")
    )


def _store(db_path: Path) -> tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, str]]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        samples, util = {}, {}
        for uuid, count, util_sum in db.execute(
            "SELECT uuid, SUM(util_count), SUM(util_sum) FROM meter_cells GROUP BY uuid"
        ):
            samples[uuid], util[uuid] = int(count), int(util_sum)
        energy, owners = {}, {}
        for uuid, node, total in db.execute("SELECT uuid, node_id, energy_total_mj FROM gpus"):
            energy[uuid], owners[uuid] = int(total), str(node)
    finally:
        db.close()
    return samples, util, energy, owners
