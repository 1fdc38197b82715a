"""`neocloud demo` end to end, as a user runs it: a short scenario on two nodes
at high speed, then the store it leaves behind (--work-dir) must show that the
scenario happened (a tenant shipped its code and ran it across both nodes in
sandboxes, spot ran, the internal spike preempted spot with notice, the reserved
tenant ran), the command exits 0 and nothing it started is left."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from neocloud.scheduler.executor import sandbox
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore

# One demo minute = one wall second. The lab is quiet: initech ships the demo's trainer workdir and
# runs it as a gang across both nodes; then globex's reserved job and two acme spot jobs take the
# fleet, and the lab's work spikes back and must preempt acme.
SCENARIO = """\
minutes: 14
speed: 60
site: {power_budget_w: 40000, min_runtime: 0}
tenants:
  globex:
    contract: {id: globex-demo, power_w: 5600}  # its terms: the shipped rate card's contracts.globex-demo
  acme:
  initech:
internal:
  - {at: 0, gpus: 0, note: the lab is quiet}
  - {at: 9, gpus: 8, note: spike}
jobs:
  # Half a second of work, done before globex's reserved job could claim a node of it (~2 s to start).
  - {at: 0, tenant: initech, class: on_demand, gpus: 16, gpus_per_node: 8, duration: 0.5, workdir: trainer}
  - {at: 4, tenant: globex, class: reserved, gpus: 8}
  - {at: 4, tenant: acme, class: spot, gpus: 4, count: 2, grace: 1, checkpoint: 0.5}
"""


def _processes_marked(mark: str) -> list[str]:
    """Live processes whose environment or command line carries `mark`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if mark.encode() in text:
            found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()[:120]!r}")
    return found


def test_short_demo_plays_the_whole_scenario(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    work = tmp_path / "site"
    mark = f"neocloud-demo-test-{uuid.uuid4().hex}"  # inherited by agents, Ray and its workers
    env = {**os.environ, "NEOCLOUD_DEMO_TEST_MARK": mark}
    cmd = [sys.executable, "-m", "neocloud", "demo", "--nodes", "2", "--scenario", str(scenario),
           "--work-dir", str(work)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
    out = done.stdout
    assert done.returncode == 0, f"stdout:\n{out}\nstderr:\n{done.stderr}"

    # Not a terminal: one compact line per refresh, then the summary.
    lines = [line for line in out.splitlines() if line.startswith("[min ")]
    assert len(lines) >= 8 and "\x1b" not in out
    assert "tenant" in out and "GPU-seconds" in out and "/metrics" in out

    store = JobStore(open_db(str(work / "scheduler.db")))
    try:
        proofs = _shipped_gang_ran(store, work, out)
        spot = store.list_jobs(tenant="acme")
        assert len(spot) == 2
        assert all(store.allocations(j.job_id) for j in spot), "every spot job ran"
        preempted = [j for j in spot if any(a.end_reason == "preempted" for a in store.allocations(j.job_id))]
        assert preempted, "the internal spike preempted spot work"
        for job in preempted:
            kinds = [e.kind for e in store.events_since(job.job_id)]
            assert kinds.index("preemption_notice") < kinds.index("requeued")
            log = (work / "job-logs" / job.job_id / "rank-0.log").read_text()
            assert '"reason": "preempted"' in log, log  # the job read its notice file when SIGTERM came
            assert job.last_checkpoint_at is not None  # checkpoints went through the runner's file
        (reserved,) = store.list_jobs(tenant="globex")
        (allocation,) = store.allocations(reserved.job_id)
        assert allocation.end_reason != "preempted" and len(allocation.gpu_uuids) == 8
        assert "preemption_notice" not in [e.kind for e in store.events_since(reserved.job_id)]
        internal = store.list_jobs(tenant="internal")
        spike = max(internal, key=lambda j: j.submitted_at)
        notices = [e.at for j in preempted for e in store.events_since(j.job_id) if e.kind == "preemption_notice"]
        assert any(a.start >= min(notices) for a in store.allocations(spike.job_id)), "the spike got its GPUs"
        usage = store.usage_gpu_seconds_since(0.0)
        assert usage.get("acme", 0) > 0 and usage.get("globex", 0) > 0
    finally:
        store.close()

    # Each tenant's invoice, rated from the ledger, and the invoices' usage matching the ledger's rows.
    for tenant in ("internal", "globex", "acme"):
        assert f"Invoice  tenant: {tenant}" in out
    assert "Commitment globex-demo" in out and "Spot NVIDIA H200 GPU-hours" in out
    assert "fleet split" in out and "idle" in out
    (check,) = [line for line in out.splitlines() if line.startswith("ledger check:")]
    assert check.endswith("(match)"), check
    with sqlite3.connect(work / "scheduler.db") as db:
        (ledger_ms,) = db.execute("SELECT SUM(gpu_ms) FROM usage WHERE tenant = 'acme'").fetchone()
    acme_hours = next(line for line in out.split("Invoice  tenant: acme")[1].splitlines() if "GPU-hours" in line)
    assert float(acme_hours.split()[4]) == pytest.approx(ledger_ms / 3.6e6, abs=0.001)

    assert _processes_marked(mark) == [], "agents, Ray or jobs left running"
    assert _processes_marked(str(work)) == []

    caps = sandbox.probe()
    if not caps.full:  # everything else is checked: only the sandbox's proof needs what this host lacks
        assert all(p == {"unsandboxed": list(caps.missing)} for p in proofs), proofs
        pytest.skip(f"this host cannot sandbox tenant ranks (missing: {', '.join(caps.missing)})")
    # Each rank: a tenant uid (never root), its own namespaces, limits through a cgroup.
    assert all(
        p["uid"] > 0 and p["cgroup"] in ("v1", "v2") and {"pid", "mount"} <= set(p["namespaces"]) for p in proofs
    ), proofs
    assert "sandboxed as uid" in out


def _shipped_gang_ran(store: JobStore, work: Path, out: str) -> list[dict[str, Any]]:
    """initech's job ran the trainer it shipped, from its own copy on each of the two nodes, to the end;
    the summary names it and its digest. Gives the sandbox proofs of its ranks."""
    (job,) = store.list_jobs(tenant="initech")
    assert job.spec.workdir_digest.startswith("sha256:")
    assert job.state.name == "SUCCEEDED", [(e.kind, e.message) for e in store.events_since(job.job_id)]
    ranks = store.allocations(job.job_id)
    assert len(ranks) == 2 and len({a.node_id for a in ranks}) == 2, ranks
    for rank in (0, 1):
        log = (work / "job-logs" / job.job_id / f"rank-{rank}.log").read_text()
        assert f"rank {rank} in " in log and ": read 3 lines of data/corpus.txt" in log, log
        assert "work done" in log, log
    assert f"shipped code: initech's {job.job_id} (succeeded) ran on demo-node-1, demo-node-2" in out
    assert job.spec.workdir_digest in out
    return [json.loads(a.sandbox) for a in ranks]
