"""The jobs, job_events and allocations tables as rows: their columns, and the
reads and writes every job transition shares (inside the caller's transaction)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from neocloud.domain.errors import NotFoundError
from neocloud.scheduler.store.records import CLASSES_BY_NAME, Allocation, Job, JobSpec, JobState

logger = logging.getLogger(__name__)

JOB_COLUMNS = (
    "job_id, tenant, client_request_id, job_class, gpus, gpus_per_node, gpu_model, command, entrypoint, env,"
    " grace_s, max_runtime_s, requeue_on_preempt, contract_id, state, submitted_at, queue_position, started_at,"
    " ended_at, requeues, exit_code, message, cancel_requested, last_checkpoint_at, preemption_notice_at,"
    " name, cpus, memory_bytes, after_ok, array_spec, array_job_id, array_index, workdir_digest, ray"
)
JOB_MARKS = ", ".join("?" * len(JOB_COLUMNS.split(",")))
ALLOCATION_COLUMNS = "allocation_id, job_id, tenant, job_class, node_id, gpu_uuids, start, end, end_reason, sandbox"


def job(row: Sequence[Any]) -> Job:
    (job_id, tenant, request_id, job_class, gpus, per_node, model, command, entrypoint, env, grace,
     max_runtime, requeue, contract, state, submitted, position, started, ended, requeues, exit_code,
     message, cancel, checkpoint, notice, name, cpus, memory, after_ok, array, array_job_id,
     array_index, workdir_digest, ray) = row  # fmt: skip
    spec = JobSpec(
        tenant=str(tenant),
        client_request_id=str(request_id),
        job_class=CLASSES_BY_NAME[str(job_class)],
        gpus=int(gpus),
        gpus_per_node=int(per_node),
        command=None if command is None else tuple(json.loads(str(command))),
        entrypoint=entrypoint,
        env=json.loads(str(env)),
        gpu_model=model,
        grace_s=float(grace),
        max_runtime_s=max_runtime,
        requeue_on_preempt=bool(requeue),
        contract_id=contract,
        name=str(name),
        cpus=int(cpus),
        memory_bytes=int(memory),
        after_ok=tuple(json.loads(str(after_ok))),
        array=str(array),
        workdir_digest=str(workdir_digest),
        ray=bool(ray),
    )
    return Job(
        job_id=str(job_id),
        spec=spec,
        state=JobState(state),
        submitted_at=float(submitted),
        queue_position=float(position),
        started_at=started,
        ended_at=ended,
        requeues=int(requeues),
        exit_code=exit_code,
        message=str(message),
        cancel_requested=bool(cancel),
        last_checkpoint_at=checkpoint,
        preemption_notice_at=notice,
        array_job_id=array_job_id,
        array_index=array_index,
    )


def allocation(row: Sequence[Any]) -> Allocation:
    alloc_id, job_id, tenant, job_class, node_id, uuids, start, end, reason, sandbox = row
    return Allocation(
        str(alloc_id), str(job_id), str(tenant), CLASSES_BY_NAME[str(job_class)], str(node_id),
        tuple(json.loads(str(uuids))), float(start), end, reason, str(sandbox),
    )  # fmt: skip


def event(db: sqlite3.Connection, job_id: str, at: float, kind: str, message: str, state: JobState) -> None:
    db.execute(
        "INSERT INTO job_events (job_id, at, kind, message, state) VALUES (?, ?, ?, ?, ?)",
        (job_id, at, kind, message, state.value),
    )


def get(db: sqlite3.Connection, job_id: str) -> Job:
    row = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no job {job_id!r}")
    return job(row)


def close(db: sqlite3.Connection, job_id: str, at: float, reason: str) -> list[Allocation]:
    """End a job's open allocations at `at` (never before they started)."""
    open_rows = db.execute(
        f"SELECT {ALLOCATION_COLUMNS} FROM allocations WHERE job_id = ? AND end IS NULL", (job_id,)
    ).fetchall()
    db.execute(
        "UPDATE allocations SET end = MAX(?, start), end_reason = ? WHERE job_id = ? AND end IS NULL",
        (at, reason, job_id),
    )
    return [allocation((*row[:7], max(at, float(row[6])), reason, row[9])) for row in open_rows]
