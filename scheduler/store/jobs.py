"""The durable job state: jobs, their events and their allocation intervals.

Every write is one transaction (see StoreBase), so a job never exists without
its "submitted" event and never runs without its allocations. The API submits
(in groups: one transaction and one fsync for every submit that arrived while
the last group committed, each in a SAVEPOINT of its own), reads and cancels;
the controller starts, preempts, requeues and finishes. Allocation intervals
[start, end) are what metering bills from.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from neocloud.domain.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from neocloud.scheduler.policy.types import INTERNAL_TENANT
from neocloud.scheduler.store import validate
from neocloud.scheduler.store.admin import AdminStore
from neocloud.scheduler.store.records import (
    ACTIVE_STATES,
    CLASS_NAMES,
    CLASSES_BY_NAME,
    TERMINAL_STATES,
    Allocation,
    Job,
    JobEvent,
    JobSpec,
    JobState,
)

logger = logging.getLogger(__name__)

_JOB_COLUMNS = (
    "job_id, tenant, client_request_id, job_class, gpus, gpus_per_node, gpu_model, command, entrypoint, env,"
    " grace_s, max_runtime_s, requeue_on_preempt, contract_id, state, submitted_at, queue_position, started_at,"
    " ended_at, requeues, exit_code, message, cancel_requested, last_checkpoint_at, preemption_notice_at"
)
_ALLOCATION_COLUMNS = "allocation_id, job_id, tenant, job_class, node_id, gpu_uuids, start, end, end_reason"
MAX_LIST = 1000


def _job(row: Sequence[Any]) -> Job:
    (job_id, tenant, request_id, job_class, gpus, per_node, model, command, entrypoint, env, grace,
     max_runtime, requeue, contract, state, submitted, position, started, ended, requeues, exit_code,
     message, cancel, checkpoint, notice) = row  # fmt: skip
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
    )


def _allocation(row: Sequence[Any]) -> Allocation:
    alloc_id, job_id, tenant, job_class, node_id, uuids, start, end, reason = row
    return Allocation(
        str(alloc_id), str(job_id), str(tenant), CLASSES_BY_NAME[str(job_class)], str(node_id),
        tuple(json.loads(str(uuids))), float(start), end, reason,
    )  # fmt: skip


def _event(db: sqlite3.Connection, job_id: str, at: float, kind: str, message: str, state: JobState) -> None:
    db.execute(
        "INSERT INTO job_events (job_id, at, kind, message, state) VALUES (?, ?, ?, ?, ?)",
        (job_id, at, kind, message, state.value),
    )


def _get(db: sqlite3.Connection, job_id: str) -> Job:
    row = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no job {job_id!r}")
    return _job(row)


def _close(db: sqlite3.Connection, job_id: str, at: float, reason: str) -> list[Allocation]:
    """End a job's open allocations at `at` (never before they started)."""
    open_rows = db.execute(
        f"SELECT {_ALLOCATION_COLUMNS} FROM allocations WHERE job_id = ? AND end IS NULL", (job_id,)
    ).fetchall()
    db.execute(
        "UPDATE allocations SET end = MAX(?, start), end_reason = ? WHERE job_id = ? AND end IS NULL",
        (at, reason, job_id),
    )
    return [_allocation((*row[:7], max(at, float(row[6])), reason)) for row in open_rows]


class JobStore(AdminStore):
    """Jobs, events and allocations, plus (from AdminStore) tenants, tokens, contracts, settings, cordons."""

    # --- submitting and reading ---------------------------------------------------------------------

    def submit(self, spec: JobSpec, now: float | None = None) -> Job:
        """Queue a job. Idempotent per (tenant, client_request_id): the same spec again returns the job
        already queued; a different spec under that id is AlreadyExistsError."""
        outcome = self.submit_many([(spec, now)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def submit_many(self, requests: Sequence[tuple[JobSpec, float | None]]) -> list[Job | Exception]:
        """Group commit: queue several jobs in one transaction, so that one fsync makes them all durable.

        Each request is taken as `submit` takes it, in order, inside a SAVEPOINT of its own, and gets an
        outcome of its own: its Job, or the exception that refused it (a NeocloudError; anything else is
        a bug, reported to that request only), with nothing of it written. One refused request changes
        nothing for the others, and two requests with one (tenant, client_request_id) give one job, as if
        they came one after the other. The jobs are durable when this returns. If the transaction itself
        fails (BEGIN or COMMIT, or an error after which SQLite rolled all of it back), this raises and
        nothing of the group is written."""
        outcomes: list[Job | Exception | None] = [None] * len(requests)
        todo: list[tuple[int, JobSpec, float]] = []
        for i, (spec, now) in enumerate(requests):
            try:
                validate.job_spec(spec)
            except Exception as e:  # noqa: BLE001 - this request's outcome; the group goes on
                outcomes[i] = e
            else:
                todo.append((i, spec, self._now(now)))
        created: list[Job] = []
        if todo:
            with self._write() as db:
                for i, spec, now in todo:
                    db.execute("SAVEPOINT submit")
                    try:
                        job, new = self._submit_one(db, spec, now)
                    except Exception as e:  # this request's outcome; the group goes on
                        if not db.in_transaction:  # SQLite rolled back the whole group (I/O error, interrupt)
                            raise
                        db.execute("ROLLBACK TO submit")
                        outcomes[i] = e
                    else:
                        outcomes[i] = job
                        if new:
                            created.append(job)
                    db.execute("RELEASE submit")
        for job in created:
            logger.info(
                "job %s submitted by %s (%d GPUs, %s)", job.job_id, job.tenant, job.spec.gpus, job.job_class.name
            )
        return [o for o in outcomes if o is not None]

    def _submit_one(self, db: sqlite3.Connection, spec: JobSpec, now: float) -> tuple[Job, bool]:
        """Queue one validated spec inside the caller's transaction: (the job, whether it is new)."""
        row = db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE tenant = ? AND client_request_id = ?",
            (spec.tenant, spec.client_request_id),
        ).fetchone()
        if row is not None:
            existing = _job(row)
            if existing.spec != spec:
                raise AlreadyExistsError(
                    f"client_request_id {spec.client_request_id!r} was already used for job {existing.job_id} "
                    "with a different spec; use a fresh request id for a new job"
                )
            return existing, False
        if (
            spec.tenant != INTERNAL_TENANT
            and not db.execute("SELECT 1 FROM tenants WHERE name = ?", (spec.tenant,)).fetchone()
        ):
            raise FailedPreconditionError(f"tenant {spec.tenant!r} does not exist")
        if spec.contract_id is not None:
            self._check_contract(db, spec, now)
        job = Job("j-" + secrets.token_hex(6), spec, JobState.QUEUED, submitted_at=now, queue_position=now)
        db.execute(
            f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({', '.join('?' * 25)})",
            (
                job.job_id, spec.tenant, spec.client_request_id, CLASS_NAMES[spec.job_class], spec.gpus,
                spec.gpus_per_node, spec.gpu_model, None if spec.command is None else json.dumps(spec.command),
                spec.entrypoint, json.dumps(spec.env, sort_keys=True), spec.grace_s, spec.max_runtime_s,
                int(spec.requeue_on_preempt), spec.contract_id, job.state.value, now, now, None, None, 0, None,
                "", 0, None, None,
            ),
        )  # fmt: skip
        _event(db, job.job_id, now, "submitted", f"{spec.gpus} GPU(s), class {CLASS_NAMES[spec.job_class]}", job.state)
        return job, True

    @staticmethod
    def _check_contract(db: sqlite3.Connection, spec: JobSpec, now: float) -> None:
        row = db.execute(
            "SELECT tenant, end, gpus, gpu_model FROM contracts WHERE contract_id = ?", (spec.contract_id,)
        ).fetchone()
        if row is None or row[0] != spec.tenant:
            raise InvalidArgumentError(f"contract_id {spec.contract_id!r} is not one of your contracts")
        _, end, gpus, model = row
        if end <= now:
            raise FailedPreconditionError(f"contract {spec.contract_id} has ended: it can run no new jobs")
        if gpus and spec.gpus > gpus:
            raise InvalidArgumentError(f"gpus ({spec.gpus}) is more than contract {spec.contract_id} holds ({gpus})")
        if model and spec.gpu_model and model != spec.gpu_model:
            raise InvalidArgumentError(
                f"gpu_model {spec.gpu_model!r} differs from contract {spec.contract_id}'s {model!r}"
            )

    def get(self, job_id: str) -> Job:
        with self._read() as db:
            return _get(db, job_id)

    def list_jobs(
        self, tenant: str | None = None, states: Collection[JobState] | None = None, limit: int = 100
    ) -> list[Job]:
        """Newest first; `tenant` None means every tenant, `states` None every state."""
        clauses, params = [], []
        if tenant is not None:
            clauses.append("tenant = ?")
            params.append(tenant)
        if states:
            clauses.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(JobState(s).value for s in states)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        limit = max(1, min(int(limit), MAX_LIST))
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs{where} ORDER BY submitted_at DESC, rowid DESC LIMIT {limit}", params
            ).fetchall()
        return [_job(row) for row in rows]

    def queued(self) -> list[Job]:
        """Queued jobs in queue order (a requeued job keeps its original place)."""
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY queue_position, rowid"
            ).fetchall()
        return [_job(row) for row in rows]

    def running(self) -> list[tuple[Job, list[Allocation]]]:
        """Jobs holding GPUs (running or preempting) with their open allocations."""
        with self._read() as db:
            query = (
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ('running', 'preempting') ORDER BY started_at, rowid"
            )
            jobs = [_job(row) for row in db.execute(query)]
            allocations: dict[str, list[Allocation]] = {}
            for row in db.execute(f"SELECT {_ALLOCATION_COLUMNS} FROM allocations WHERE end IS NULL ORDER BY rowid"):
                allocations.setdefault(str(row[1]), []).append(_allocation(row))
        return [(job, allocations.get(job.job_id, [])) for job in jobs]

    def allocations(self, job_id: str, open_only: bool = False) -> list[Allocation]:
        extra = " AND end IS NULL" if open_only else ""
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_ALLOCATION_COLUMNS} FROM allocations WHERE job_id = ?{extra} ORDER BY start, rowid",
                (job_id,),
            ).fetchall()
        return [_allocation(row) for row in rows]

    def allocations_since(self, t: float) -> list[Allocation]:
        """Every allocation open at or after `t` (for metering and fair-share decay)."""
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_ALLOCATION_COLUMNS} FROM allocations WHERE end IS NULL OR end > ? ORDER BY start, rowid",
                (t,),
            ).fetchall()
        return [_allocation(row) for row in rows]

    def events_since(self, job_id: str, after_event_id: int = 0, limit: int = MAX_LIST) -> list[JobEvent]:
        with self._read() as db:
            rows = db.execute(
                "SELECT event_id, job_id, at, kind, message, state FROM job_events WHERE job_id = ? AND event_id > ?"
                " ORDER BY event_id LIMIT ?",
                (job_id, after_event_id, limit),
            ).fetchall()
        return [JobEvent(r[0], r[1], r[2], r[3], r[4], JobState(r[5])) for r in rows]

    def usage_gpu_seconds_since(self, t: float, now: float | None = None) -> dict[str, float]:
        """GPU-seconds per tenant held in [t, now): closed allocations and open ones up to `now`."""
        now = self._now(now)
        with self._read() as db:
            rows = db.execute(
                "SELECT tenant, SUM(json_array_length(gpu_uuids) * (MIN(COALESCE(end, :now), :now) - MAX(start, :t)))"
                " FROM allocations WHERE MIN(COALESCE(end, :now), :now) > MAX(start, :t) GROUP BY tenant",
                {"t": t, "now": now},
            ).fetchall()
        return {str(tenant): float(seconds) for tenant, seconds in rows}

    # --- the controller's transitions ---------------------------------------------------------------

    def start(
        self, job_id: str, allocations: Sequence[tuple[str, Sequence[str]]], now: float | None = None
    ) -> list[Allocation]:
        """queued -> running on `allocations` ((node_id, GPU UUIDs) per node, gpus_per_node on each).
        FailedPreconditionError if the job is not queued, a node is cordoned or a GPU is held already."""
        now = self._now(now)
        with self._write() as db:
            job = _get(db, job_id)
            if job.state is not JobState.QUEUED:
                raise FailedPreconditionError(f"job {job_id} is {job.state.value}, not queued: it cannot start")
            placement = [(str(node), tuple(str(u) for u in uuids)) for node, uuids in allocations]
            self._check_placement(db, job, placement)
            opened = []
            for node_id, uuids in placement:
                a = Allocation("a-" + secrets.token_hex(8), job_id, job.tenant, job.job_class, node_id, uuids, now)
                db.execute(
                    f"INSERT INTO allocations ({_ALLOCATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                    (a.allocation_id, job_id, a.tenant, CLASS_NAMES[a.job_class], node_id, json.dumps(uuids), now),
                )
                opened.append(a)
            db.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, preemption_notice_at = NULL WHERE job_id = ?",
                (now, job_id),
            )
            nodes = ", ".join(f"{n} ({len(u)} GPUs)" for n, u in placement)
            _event(db, job_id, now, "started", f"on {nodes}", JobState.RUNNING)
        logger.info("job %s started on %s", job_id, nodes)
        return opened

    @staticmethod
    def _check_placement(db: sqlite3.Connection, job: Job, placement: list[tuple[str, tuple[str, ...]]]) -> None:
        per_node = job.spec.gpus_per_node
        uuids = [u for _, node_uuids in placement for u in node_uuids]
        nodes = [n for n, _ in placement]
        if len(uuids) != job.spec.gpus or any(len(u) != per_node for _, u in placement):
            raise FailedPreconditionError(
                f"job {job.job_id} needs {job.spec.gpus} GPU(s), {per_node} on each node; the placement gives "
                f"{[len(u) for _, u in placement]}"
            )
        if len(set(uuids)) != len(uuids) or len(set(nodes)) != len(nodes):
            raise FailedPreconditionError(f"the placement of job {job.job_id} names a GPU or a node twice")
        cordoned = {r[0] for r in db.execute("SELECT node_id FROM node_cordons")} & set(nodes)
        if cordoned:
            raise FailedPreconditionError(
                f"node(s) {', '.join(sorted(cordoned))} are cordoned: nothing new starts there"
            )
        marks = ", ".join("?" * len(nodes))
        rows = db.execute(
            f"SELECT job_id, gpu_uuids FROM allocations WHERE end IS NULL AND node_id IN ({marks})", nodes
        ).fetchall()
        held = {u: holder for holder, held_uuids in rows for u in json.loads(held_uuids)}
        taken = sorted(set(uuids) & set(held))
        if taken:
            raise FailedPreconditionError(f"GPU {taken[0]} is held by job {held[taken[0]]} already")

    def set_pending_reasons(self, reasons: dict[str, str]) -> None:
        """Tell queued jobs why they wait (the policy's words), in their message."""
        with self._write() as db:
            db.executemany(
                "UPDATE jobs SET message = ? WHERE job_id = ? AND state = 'queued'",
                [(reason, job_id) for job_id, reason in reasons.items()],
            )

    def set_allocation_gpus(self, job_id: str, node_id: str, gpu_uuids: Sequence[str]) -> None:
        """Record which GPUs of a node the job really holds: Ray assigns them, the policy only
        counted them, and metering must attribute the right ones."""
        with self._write() as db:
            row = db.execute(
                "SELECT allocation_id, gpu_uuids FROM allocations WHERE job_id = ? AND node_id = ? AND end IS NULL",
                (job_id, node_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"job {job_id} holds no open allocation on node {node_id}")
            if len(json.loads(row[1])) != len(gpu_uuids):
                raise FailedPreconditionError(
                    f"job {job_id} holds {len(json.loads(row[1]))} GPUs on {node_id}, not {len(gpu_uuids)}"
                )
            db.execute(
                "UPDATE allocations SET gpu_uuids = ? WHERE allocation_id = ?", (json.dumps(list(gpu_uuids)), row[0])
            )

    def notify_preemption(self, job_id: str, now: float | None = None, reason: str = "") -> Job:
        """running -> preempting (the executor signals the job); a job preempting already is left as is."""
        now = self._now(now)
        with self._write() as db:
            job = _get(db, job_id)
            if job.state is JobState.PREEMPTING:
                return job
            if job.state is not JobState.RUNNING:
                raise FailedPreconditionError(f"job {job_id} is {job.state.value}, not running: it cannot be preempted")
            db.execute("UPDATE jobs SET state = 'preempting', preemption_notice_at = ? WHERE job_id = ?", (now, job_id))
            _event(db, job_id, now, "preemption_notice", reason, JobState.PREEMPTING)
            return _get(db, job_id)

    def close_allocations(self, job_id: str, at: float, end_reason: str) -> list[Allocation]:
        """End the job's open allocations at `at` (the GPUs are free; the job's state is unchanged)."""
        with self._write() as db:
            _get(db, job_id)
            return _close(db, job_id, at, end_reason)

    def requeue(self, job_id: str, now: float | None = None, reason: str = "", counted: bool = True) -> Job:
        """running/preempting -> queued at its original place, requeues + 1, open allocations closed.
        A job whose cancellation was requested ends as cancelled instead. `counted=False` (a start the
        control plane itself cut short) leaves `requeues` alone: the job's max_requeues is not spent on
        the scheduler's crash."""
        now = self._now(now)
        with self._write() as db:
            job = _get(db, job_id)
            if job.state not in ACTIVE_STATES:
                raise FailedPreconditionError(f"job {job_id} is {job.state.value}: only running jobs are requeued")
            if job.cancel_requested:
                return self._finish(db, job, JobState.CANCELLED, None, "cancelled by request", now)
            _close(db, job_id, now, "requeued")
            db.execute(
                "UPDATE jobs SET state = 'queued', requeues = requeues + ?, started_at = NULL,"
                " preemption_notice_at = NULL, message = ? WHERE job_id = ?",
                (int(counted), reason, job_id),
            )
            _event(db, job_id, now, "requeued", reason, JobState.QUEUED)
            return _get(db, job_id)

    def finish(
        self, job_id: str, state: JobState, exit_code: int | None = None, message: str = "", now: float | None = None
    ) -> Job:
        """-> succeeded/failed/cancelled; open allocations close with reason = state. Finishing again in
        the same state changes nothing."""
        now = self._now(now)
        state = JobState(state)
        if state not in TERMINAL_STATES:
            raise InvalidArgumentError(f"state must be succeeded, failed or cancelled, not {state.value}")
        with self._write() as db:
            job = _get(db, job_id)
            if job.state is state:
                return job
            if job.state in TERMINAL_STATES:
                raise FailedPreconditionError(f"job {job_id} has {job.state.value} already")
            return self._finish(db, job, state, exit_code, message, now)

    @staticmethod
    def _finish(
        db: sqlite3.Connection, job: Job, state: JobState, exit_code: int | None, message: str, now: float
    ) -> Job:
        _close(db, job.job_id, now, state.value)
        db.execute(
            "UPDATE jobs SET state = ?, exit_code = ?, message = ?, ended_at = ? WHERE job_id = ?",
            (state.value, exit_code, message, now, job.job_id),
        )
        _event(db, job.job_id, now, state.value, message, state)
        logger.info("job %s %s (exit code %s) %s", job.job_id, state.value, exit_code, message)
        return _get(db, job.job_id)

    def request_cancel(self, job_id: str, now: float | None = None) -> Job:
        """A queued job is cancelled at once; a running one is flagged for the controller to stop.
        Cancelling a cancelled job changes nothing; a finished one is FailedPreconditionError."""
        now = self._now(now)
        with self._write() as db:
            job = _get(db, job_id)
            if job.state is JobState.CANCELLED or job.cancel_requested:
                return job
            if job.state in TERMINAL_STATES:
                raise FailedPreconditionError(f"job {job_id} has {job.state.value} already: nothing to cancel")
            if job.state is JobState.QUEUED:
                return self._finish(db, job, JobState.CANCELLED, None, "cancelled by request", now)
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?", (job_id,))
            _event(db, job_id, now, "cancel_requested", "the job will be stopped", job.state)
            return _get(db, job_id)

    def record_checkpoint(self, job_id: str, at: float) -> bool:
        """Note the job's latest checkpoint; False (and nothing written) unless it is running."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET last_checkpoint_at = ? WHERE job_id = ? AND state IN ('running', 'preempting')",
                (at, job_id),
            )
            if cursor.rowcount == 0:
                _get(db, job_id)  # NotFoundError for an unknown job
                return False
        return True
