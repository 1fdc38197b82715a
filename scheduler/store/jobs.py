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
from neocloud.scheduler.store import arrays, deps, rows, validate
from neocloud.scheduler.store.admin import AdminStore
from neocloud.scheduler.store.records import (
    ACTIVE_STATES,
    CLASS_NAMES,
    TERMINAL_STATES,
    Allocation,
    Job,
    JobEvent,
    JobSpec,
    JobState,
)

logger = logging.getLogger(__name__)

MAX_LIST = 1000


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
            array = f", array {job.spec.array}" if job.spec.array else ""
            logger.info(
                "job %s submitted by %s (%d GPUs, %s%s)",
                job.job_id,
                job.tenant,
                job.spec.gpus,
                job.job_class.name,
                array,
            )
        return [o for o in outcomes if o is not None]

    def _submit_one(self, db: sqlite3.Connection, spec: JobSpec, now: float) -> tuple[Job, bool]:
        """Queue one validated spec inside the caller's transaction: (the job, whether it is new)."""
        row = db.execute(
            f"SELECT {rows.JOB_COLUMNS} FROM jobs WHERE tenant = ? AND client_request_id = ?",
            (spec.tenant, spec.client_request_id),
        ).fetchone()
        if row is not None:
            existing = rows.job(row)
            if existing.spec != spec:
                raise AlreadyExistsError(
                    f"client_request_id {spec.client_request_id!r} was already used for job {existing.job_id} "
                    "with a different spec; use a fresh request id for a new job"
                )
            return existing, False
        if spec.tenant != INTERNAL_TENANT:
            tenant = db.execute("SELECT internal FROM tenants WHERE name = ?", (spec.tenant,)).fetchone()
            if tenant is None:
                raise FailedPreconditionError(f"tenant {spec.tenant!r} does not exist")
            validate.tenant_class(spec, internal_team=bool(tenant[0]))
        if spec.contract_id is not None:
            self._check_contract(db, spec, now)
        waiting = deps.unmet(db, spec.tenant, spec.after_ok)
        indices: list[int | None] = list(arrays.indices(spec.array)) if spec.array else [None]
        first: Job | None = None
        for index in indices:
            job_id = "j-" + secrets.token_hex(6)
            array_job_id = None if index is None else first.job_id if first else job_id
            # The first task answers the request id; the others get ids of their own.
            request_id = spec.client_request_id if first is None else f"{array_job_id}[{index}]"
            job = Job(
                job_id, spec, JobState.QUEUED, submitted_at=now, queue_position=now,
                message=deps.message(waiting) if waiting else "", array_job_id=array_job_id, array_index=index,
            )  # fmt: skip
            db.execute(
                f"INSERT INTO jobs ({rows.JOB_COLUMNS}) VALUES ({rows.JOB_MARKS})",
                (
                    job.job_id, spec.tenant, request_id, CLASS_NAMES[spec.job_class], spec.gpus,
                    spec.gpus_per_node, spec.gpu_model, None if spec.command is None else json.dumps(spec.command),
                    spec.entrypoint, json.dumps(spec.env, sort_keys=True), spec.grace_s, spec.max_runtime_s,
                    int(spec.requeue_on_preempt), spec.contract_id, job.state.value, now, now, None, None, 0, None,
                    job.message, 0, None, None, spec.name, spec.cpus, spec.memory_bytes, json.dumps(spec.after_ok),
                    spec.array, array_job_id, index, spec.workdir_digest, int(spec.ray),
                ),
            )  # fmt: skip
            what = f"{spec.gpus} GPU(s), class {CLASS_NAMES[spec.job_class]}"
            rows.event(db, job.job_id, now, "submitted", what if index is None else f"{what}, task {index}", job.state)
            first = first or job
        assert first is not None  # indices is never empty
        deps.wait(db, first.job_id, waiting)  # an array waits whole, under its id
        return first, True

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
            return rows.get(db, job_id)

    def list_jobs(
        self,
        tenant: str | None = None,
        states: Collection[JobState] | None = None,
        limit: int = 100,
        name: str = "",
        array_job_id: str = "",
    ) -> list[Job]:
        """Newest first (an array's tasks in index order); `tenant` None means every tenant, `states`
        None every state, `name` and `array_job_id` empty any."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("tenant", tenant), ("name", name or None), ("array_job_id", array_job_id or None)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if states:
            clauses.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(JobState(s).value for s in states)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        limit = max(1, min(int(limit), MAX_LIST))
        with self._read() as db:
            found = db.execute(
                f"SELECT {rows.JOB_COLUMNS} FROM jobs{where} ORDER BY submitted_at DESC, array_index, rowid DESC"
                f" LIMIT {limit}",
                params,
            ).fetchall()
        return [rows.job(row) for row in found]

    def queued(self) -> list[Job]:
        """Queued jobs in queue order (a requeued job keeps its original place), less those waiting for a
        dependency (store/deps.py): the policy never sees them."""
        with self._read() as db:
            found = db.execute(
                f"SELECT {rows.JOB_COLUMNS} FROM jobs WHERE state = 'queued' AND {deps.READY}"
                " ORDER BY queue_position, rowid"
            ).fetchall()
        return [rows.job(row) for row in found]

    def running(self) -> list[tuple[Job, list[Allocation]]]:
        """Jobs holding GPUs (running or preempting) with their open allocations."""
        with self._read() as db:
            query = f"SELECT {rows.JOB_COLUMNS} FROM jobs WHERE state IN ('running', 'preempting')"
            query += " ORDER BY started_at, rowid"
            jobs = [rows.job(row) for row in db.execute(query)]
            allocations: dict[str, list[Allocation]] = {}
            for row in db.execute(
                f"SELECT {rows.ALLOCATION_COLUMNS} FROM allocations WHERE end IS NULL ORDER BY rowid"
            ):
                allocations.setdefault(str(row[1]), []).append(rows.allocation(row))
        return [(job, allocations.get(job.job_id, [])) for job in jobs]

    def allocations(self, job_id: str, open_only: bool = False) -> list[Allocation]:
        extra = " AND end IS NULL" if open_only else ""
        with self._read() as db:
            found = db.execute(
                f"SELECT {rows.ALLOCATION_COLUMNS} FROM allocations WHERE job_id = ?{extra} ORDER BY start, rowid",
                (job_id,),
            ).fetchall()
        return [rows.allocation(row) for row in found]

    def allocations_since(self, t: float) -> list[Allocation]:
        """Every allocation open at or after `t` (for metering and fair-share decay)."""
        with self._read() as db:
            found = db.execute(
                f"SELECT {rows.ALLOCATION_COLUMNS} FROM allocations WHERE end IS NULL OR end > ? ORDER BY start, rowid",
                (t,),
            ).fetchall()
        return [rows.allocation(row) for row in found]

    def events_since(self, job_id: str, after_event_id: int = 0, limit: int = MAX_LIST) -> list[JobEvent]:
        with self._read() as db:
            found = db.execute(
                "SELECT event_id, job_id, at, kind, message, state FROM job_events WHERE job_id = ? AND event_id > ?"
                " ORDER BY event_id LIMIT ?",
                (job_id, after_event_id, limit),
            ).fetchall()
        return [JobEvent(r[0], r[1], r[2], r[3], r[4], JobState(r[5])) for r in found]

    def usage_gpu_seconds_since(self, t: float, now: float | None = None) -> dict[str, float]:
        """GPU-seconds per tenant held in [t, now): closed allocations and open ones up to `now`."""
        now = self._now(now)
        with self._read() as db:
            found = db.execute(
                "SELECT tenant, SUM(json_array_length(gpu_uuids) * (MIN(COALESCE(end, :now), :now) - MAX(start, :t)))"
                " FROM allocations WHERE MIN(COALESCE(end, :now), :now) > MAX(start, :t) GROUP BY tenant",
                {"t": t, "now": now},
            ).fetchall()
        return {str(tenant): float(seconds) for tenant, seconds in found}

    # --- the controller's transitions ---------------------------------------------------------------

    def start(
        self, job_id: str, allocations: Sequence[tuple[str, Sequence[str]]], now: float | None = None
    ) -> list[Allocation]:
        """queued -> running on `allocations` ((node_id, GPU UUIDs) per node, gpus_per_node on each).
        FailedPreconditionError if the job is not queued, a node is cordoned or a GPU is held already."""
        now = self._now(now)
        with self._write() as db:
            job = rows.get(db, job_id)
            if job.state is not JobState.QUEUED:
                raise FailedPreconditionError(f"job {job_id} is {job.state.value}, not queued: it cannot start")
            placement = [(str(node), tuple(str(u) for u in uuids)) for node, uuids in allocations]
            self._check_placement(db, job, placement)
            opened = []
            for node_id, uuids in placement:
                a = Allocation("a-" + secrets.token_hex(8), job_id, job.tenant, job.job_class, node_id, uuids, now)
                db.execute(
                    f"INSERT INTO allocations ({rows.ALLOCATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, '')",
                    (a.allocation_id, job_id, a.tenant, CLASS_NAMES[a.job_class], node_id, json.dumps(uuids), now),
                )
                opened.append(a)
            db.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, preemption_notice_at = NULL WHERE job_id = ?",
                (now, job_id),
            )
            nodes = ", ".join(f"{n} ({len(u)} GPUs)" for n, u in placement)
            rows.event(db, job_id, now, "started", f"on {nodes}", JobState.RUNNING)
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
        found = db.execute(
            f"SELECT job_id, gpu_uuids FROM allocations WHERE end IS NULL AND node_id IN ({marks})", nodes
        ).fetchall()
        held = {u: holder for holder, held_uuids in found for u in json.loads(held_uuids)}
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

    def set_allocation_gpus(self, job_id: str, node_id: str, gpu_uuids: Sequence[str], sandbox: str = "") -> None:
        """Record which GPUs of a node the job really holds: Ray assigns them, the policy only
        counted them, and metering must attribute the right ones; and the sandbox its rank
        runs in there (also an event, so it outlives the allocation in the job's record)."""
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
                "UPDATE allocations SET gpu_uuids = ?, sandbox = ? WHERE allocation_id = ?",
                (json.dumps(list(gpu_uuids)), sandbox, row[0]),
            )
            if sandbox:
                rows.event(db, job_id, self._now(None), "sandbox", f"{node_id}: {sandbox}", rows.get(db, job_id).state)

    def notify_preemption(self, job_id: str, now: float | None = None, reason: str = "") -> Job:
        """running -> preempting (the executor signals the job); a job preempting already is left as is."""
        now = self._now(now)
        with self._write() as db:
            job = rows.get(db, job_id)
            if job.state is JobState.PREEMPTING:
                return job
            if job.state is not JobState.RUNNING:
                raise FailedPreconditionError(f"job {job_id} is {job.state.value}, not running: it cannot be preempted")
            db.execute("UPDATE jobs SET state = 'preempting', preemption_notice_at = ? WHERE job_id = ?", (now, job_id))
            rows.event(db, job_id, now, "preemption_notice", reason, JobState.PREEMPTING)
            return rows.get(db, job_id)

    def close_allocations(self, job_id: str, at: float, end_reason: str) -> list[Allocation]:
        """End the job's open allocations at `at` (the GPUs are free; the job's state is unchanged)."""
        with self._write() as db:
            rows.get(db, job_id)
            return rows.close(db, job_id, at, end_reason)

    def requeue(self, job_id: str, now: float | None = None, reason: str = "", counted: bool = True) -> Job:
        """running/preempting -> queued at its original place, requeues + 1, open allocations closed.
        A job whose cancellation was requested ends as cancelled instead. `counted=False` (a start the
        control plane itself cut short) leaves `requeues` alone: the job's max_requeues is not spent on
        the scheduler's crash."""
        now = self._now(now)
        with self._write() as db:
            job = rows.get(db, job_id)
            if job.state not in ACTIVE_STATES:
                raise FailedPreconditionError(f"job {job_id} is {job.state.value}: only running jobs are requeued")
            if job.cancel_requested:
                return self._finish(db, job, JobState.CANCELLED, None, "cancelled by request", now)
            rows.close(db, job_id, now, "requeued")
            db.execute(
                "UPDATE jobs SET state = 'queued', requeues = requeues + ?, started_at = NULL,"
                " preemption_notice_at = NULL, message = ? WHERE job_id = ?",
                (int(counted), reason, job_id),
            )
            rows.event(db, job_id, now, "requeued", reason, JobState.QUEUED)
            return rows.get(db, job_id)

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
            job = rows.get(db, job_id)
            if job.state is state:
                return job
            if job.state in TERMINAL_STATES:
                raise FailedPreconditionError(f"job {job_id} has {job.state.value} already")
            return self._finish(db, job, state, exit_code, message, now)

    @staticmethod
    def _finish(
        db: sqlite3.Connection, job: Job, state: JobState, exit_code: int | None, message: str, now: float
    ) -> Job:
        JobStore._end(db, job, state, exit_code, message, now)
        ended = rows.get(db, job.job_id)
        # Its dependents: released if it succeeded, cancelled (and theirs after them) if not.
        todo = deps.released(db, ended)
        while todo:
            dependent_id, reason = todo.pop()
            dependent = rows.get(db, dependent_id)
            if dependent.state is JobState.QUEUED:  # a job waiting for a dependency never starts
                JobStore._end(db, dependent, JobState.CANCELLED, None, reason, now)
                todo += deps.released(db, rows.get(db, dependent_id))
        return ended

    @staticmethod
    def _end(
        db: sqlite3.Connection, job: Job, state: JobState, exit_code: int | None, message: str, now: float
    ) -> None:
        rows.close(db, job.job_id, now, state.value)
        db.execute(
            "UPDATE jobs SET state = ?, exit_code = ?, message = ?, ended_at = ? WHERE job_id = ?",
            (state.value, exit_code, message, now, job.job_id),
        )
        rows.event(db, job.job_id, now, state.value, message, state)
        logger.info("job %s %s (exit code %s) %s", job.job_id, state.value, exit_code, message)

    def request_cancel(self, job_id: str, now: float | None = None, whole_array: bool = False) -> Job:
        """A queued job is cancelled at once; a running one is flagged for the controller to stop.
        Cancelling a cancelled job changes nothing; a finished one is FailedPreconditionError. With
        `whole_array`, every unfinished task of the job's array is cancelled, in one transaction (a job
        of no array alone); the job's own task is returned."""
        now = self._now(now)
        with self._write() as db:
            job = rows.get(db, job_id)
            if not whole_array or job.array_job_id is None:
                return self._cancel(db, job, now)
            tasks = db.execute(
                f"SELECT {rows.JOB_COLUMNS} FROM jobs WHERE array_job_id = ? AND cancel_requested = 0"
                " AND state IN ('queued', 'running', 'preempting') ORDER BY array_index",
                (job.array_job_id,),
            ).fetchall()
            for row in tasks:
                self._cancel(db, rows.job(row), now)
            return rows.get(db, job_id)

    def _cancel(self, db: sqlite3.Connection, job: Job, now: float) -> Job:
        if job.state is JobState.CANCELLED or job.cancel_requested:
            return job
        if job.state in TERMINAL_STATES:
            raise FailedPreconditionError(f"job {job.job_id} has {job.state.value} already: nothing to cancel")
        if job.state is JobState.QUEUED:
            return self._finish(db, job, JobState.CANCELLED, None, "cancelled by request", now)
        db.execute("UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?", (job.job_id,))
        rows.event(db, job.job_id, now, "cancel_requested", "the job will be stopped", job.state)
        return rows.get(db, job.job_id)

    def record_checkpoint(self, job_id: str, at: float) -> bool:
        """Note the job's latest checkpoint; False (and nothing written) unless it is running."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET last_checkpoint_at = ? WHERE job_id = ? AND state IN ('running', 'preempting')",
                (at, job_id),
            )
            if cursor.rowcount == 0:
                rows.get(db, job_id)  # NotFoundError for an unknown job
                return False
        return True
