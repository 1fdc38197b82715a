"""Job dependencies (Slurm's `--dependency=afterok`): a job waits, queued, until
every job it names has succeeded; if one fails or is cancelled, the job is
cancelled with a reason naming it.

The table job_waits holds the dependencies not yet met; a queued job with a row
there is held back from the policy (JobStore.queued). Every dependency exists
before its dependent, so a cycle cannot be formed. All functions run inside the
caller's transaction."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from neocloud.domain.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from neocloud.scheduler.store.records import JobState

logger = logging.getLogger(__name__)

MAX_AFTER_OK = 64
MAX_JOB_ID = 64
_SHOWN = 3  # dependencies named in a waiting job's message

# The queued jobs the policy may consider: no dependency still to be met.
READY = "NOT EXISTS (SELECT 1 FROM job_waits w WHERE w.job_id = jobs.job_id)"


def validate(after_ok: Sequence[str]) -> None:
    if len(after_ok) > MAX_AFTER_OK:
        raise InvalidArgumentError(f"after_ok names {len(after_ok)} jobs; the limit is {MAX_AFTER_OK}")
    for job_id in after_ok:
        if not isinstance(job_id, str) or not 0 < len(job_id) <= MAX_JOB_ID:
            raise InvalidArgumentError(f"after_ok: {job_id!r} is not a job id (1-{MAX_JOB_ID} characters)")
    if len(set(after_ok)) != len(after_ok):
        raise InvalidArgumentError("after_ok names a job twice")


def unmet(db: sqlite3.Connection, tenant: str, after_ok: Sequence[str]) -> list[str]:
    """The dependencies still to be met. A job of another tenant is NotFoundError, as an unknown one
    (no leak); one that failed or was cancelled already is FailedPreconditionError: the dependent
    could never start."""
    waiting = []
    for job_id in after_ok:
        row = db.execute("SELECT tenant, state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None or row[0] != tenant:
            raise NotFoundError(f"after_ok: no job {job_id!r}")
        state = JobState(row[1])
        if state in (JobState.FAILED, JobState.CANCELLED):
            raise FailedPreconditionError(f"after_ok: job {job_id} has {state.value}; a job after it could never start")
        if state is not JobState.SUCCEEDED:
            waiting.append(job_id)
    return waiting


def wait(db: sqlite3.Connection, job_id: str, waiting: Sequence[str]) -> None:
    db.executemany("INSERT INTO job_waits (job_id, after_job_id) VALUES (?, ?)", [(job_id, w) for w in waiting])


def message(waiting: Sequence[str]) -> str:
    """A waiting job's pending reason."""
    shown = ", ".join(waiting[:_SHOWN]) + (f" and {len(waiting) - _SHOWN} more" if len(waiting) > _SHOWN else "")
    return f"waiting for {shown} to succeed (after-ok)"


def released(db: sqlite3.Connection, parent_id: str, state: JobState) -> list[tuple[str, str]]:
    """`parent_id` has ended in `state`. Succeeded: its dependents wait for it no longer (their
    messages say what they still wait for); otherwise each dependent is returned, with the reason,
    for the caller to cancel (its own dependents follow when it is)."""
    dependents = [str(r[0]) for r in db.execute("SELECT job_id FROM job_waits WHERE after_job_id = ?", (parent_id,))]
    db.execute("DELETE FROM job_waits WHERE after_job_id = ?", (parent_id,))
    if state is not JobState.SUCCEEDED:
        db.executemany("DELETE FROM job_waits WHERE job_id = ?", [(d,) for d in dependents])
        verb = "failed" if state is JobState.FAILED else "was cancelled"
        return [(d, f"dependency {parent_id} {verb} (after-ok)") for d in dependents]
    for dependent in dependents:
        rest = [str(r[0]) for r in db.execute("SELECT after_job_id FROM job_waits WHERE job_id = ?", (dependent,))]
        db.execute(
            "UPDATE jobs SET message = ? WHERE job_id = ? AND state = 'queued'",
            (message(rest) if rest else "dependencies met (after-ok)", dependent),
        )
    return []
