"""`neocloud bench meter`: closing one hour of a full fleet into the ledger, and
invoicing a thousand tenants for a month.

The store is filled directly with what ingest and the controller would have
written (GPUs, jobs, allocations, attributed cells, usage rows), outside the
timing; what is timed is the ledger's `meter_hour` and `Books.invoice`, the
code the scheduler and `neocloud invoice` run.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from neocloud.scheduler.billing import Books, parse_ratecard
from neocloud.scheduler.metering import Ledger, usage_id
from neocloud.scheduler.store import open_db

HOUR = 1_795_000_000 // 3600 * 3600
MONTH_START = 1_793_491_200  # 2026-11-01T00:00:00Z
CLASSES = ("internal", "reserved", "on_demand", "spot")
CARD = """
prices:
  internal: {"*": "1.65"}
  on_demand: {"NVIDIA H200": "3.50", "*": "2.50"}
  spot: {"NVIDIA H200": "1.40", "*": "1.00"}
energy_per_kwh: {internal: "0", reserved: "0.085", on_demand: "0.085", spot: "0.085"}
"""


def close_hour(nodes: int = 28_800, seed: int = 7) -> dict[str, Any]:
    """One hour of `nodes` 8-GPU nodes: ~60 % of GPUs in jobs of 1-8 GPUs (some
    starting or ending inside the hour), every GPU with attributed energy."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="neocloud-bench-") as tmp:
        db = open_db(Path(tmp) / "bench.db")
        gpus: list[tuple[str, str, int, str]] = []
        jobs: list[tuple[str, str, str, str, int, int]] = []
        allocations: list[tuple[object, ...]] = []
        cells: list[tuple[object, ...]] = []
        for n in range(nodes):
            node = f"node-{n:05d}"
            uuids = [f"GPU-{n:05d}-{i}" for i in range(8)]
            gpus += [(u, node, i, "NVIDIA H200" if n % 10 < 7 else "NVIDIA H100") for i, u in enumerate(uuids)]
            free = list(uuids)
            while free and rng.random() < 0.6:
                size = min(len(free), rng.choice((1, 2, 4, 8)))
                held, free = free[:size], free[size:]
                job = f"j-{len(jobs):07d}"
                start = HOUR - 600 if rng.random() < 0.8 else HOUR + rng.uniform(0, 3000)
                end = None if rng.random() < 0.8 else HOUR + rng.uniform(3000, 3599)
                jobs.append((job, f"tenant-{rng.randrange(1000):04d}", job, rng.choice(CLASSES), size, size))
                allocations.append((f"a-{job}", job, jobs[-1][1], jobs[-1][3], node, json.dumps(held), start, end))
                cells += [(u, f"a-{job}", HOUR, 2.2e9, 3000, 3600, 690_000, 80 << 30) for u in held]
            cells += [(u, "", HOUR, 3.0e8, 0, 3600, 120_000, 0) for u in uuids if u in free or rng.random() < 0.2]
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO nodes (node_id, agent_version, backend, stream_epoch, last_seq, first_seen_us, last_seen_us)"
            " VALUES (?, '1.0', 'sim', 1, 0, 0, 0)",
            [(f"node-{n:05d}",) for n in range(nodes)],
        )
        db.executemany(
            "INSERT INTO gpus (uuid, node_id, gpu_index, model, memory_total_bytes, power_limit_mw)"
            " VALUES (?, ?, ?, ?, 150000000000, 700000)",
            gpus,
        )
        db.executemany(
            "INSERT INTO jobs (job_id, tenant, client_request_id, job_class, gpus, gpus_per_node, command, grace_s,"
            " state, submitted_at, queue_position) VALUES (?, ?, ?, ?, ?, ?, '[\"true\"]', 30, 'running', 0, 0)",
            jobs,
        )
        db.executemany(
            "INSERT INTO allocations (allocation_id, job_id, tenant, job_class, node_id, gpu_uuids, start, end)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            allocations,
        )
        db.executemany("INSERT INTO meter_cells VALUES (?, ?, ?, ?, ?, ?, ?, ?)", cells)
        db.execute("COMMIT")
        started, cpu = time.perf_counter(), time.process_time()
        result = Ledger(db).meter_hour(HOUR, now=HOUR + 3600)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        db.close()
    return {
        "close_hour_s": round(elapsed, 3),
        "close_hour_cpu_s": round(cpu, 3),
        "target_close_hour_s": 5.0,
        "gpus": len(gpus),
        "allocations": len(allocations),
        "ledger_rows": len(result.rows),
    }


def invoices(tenants: int = 1000, seed: int = 7) -> dict[str, Any]:
    """A month (720 hours) of usage rows for `tenants` tenants, 2 allocations each."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="neocloud-bench-") as tmp:
        db = open_db(Path(tmp) / "bench.db")
        rows = []
        for t in range(tenants):
            tenant = f"tenant-{t:04d}"
            for k in range(2):
                alloc, cls = f"a-{t}-{k}", rng.choice(CLASSES[2:])
                model = "NVIDIA H200" if k == 0 else "NVIDIA H100"
                for h in range(720):
                    hour = MONTH_START + h * 3600
                    rows.append((usage_id(alloc, model, hour), hour, tenant, f"j-{t}-{k}", alloc, model, cls, None,
                                 8 * 3_600_000, 8 * 2_200_000_000, 8 * 2_800_000, 690_000, 80 << 30))  # fmt: skip
        db.execute("BEGIN")
        db.executemany("INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        books = Books(db, parse_ratecard(CARD, "bench"))
        started = time.perf_counter()
        total = sum(books.invoice(f"tenant-{t:04d}", "2026-11").total for t in range(tenants))
        elapsed = time.perf_counter() - started
        db.close()
    return {
        # Scaled to 1,000 tenants when --tenants asks for another number.
        "invoices_1000_tenants_s": round(elapsed * 1000 / tenants, 3),
        "target_invoices_1000_tenants_s": 10.0,
        "tenants": tenants,
        "invoiced_usage_rows": len(rows),
        "revenue": str(total),
    }
