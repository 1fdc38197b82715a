"""Job dependencies (Slurm's `--dependency=afterok`): a job waits, queued, until
every job it names has succeeded; if one fails or is cancelled, the job is
cancelled with a reason naming it. Naming an array's id (its first task's job
id) means every task of the array, as in Slurm; an array that waits, waits whole.

The table job_waits holds the dependencies not yet met, from a waiter (a job's
id, or an array's) to what it waits for (a job's id, or an array's); a queued
job whose waiter has a row there is held back from the policy
(JobStore.queued). Every dependency exists before its dependent, so a cycle
cannot be formed. All functions run inside the caller's transaction."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from neocloud.domain.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from neocloud.scheduler.store.records import Job, JobState

logger = logging.getLogger(__name__)

MAX_AFTER_OK = 64
MAX_JOB_ID = 64
_SHOWN = 3  # dependencies named in a waiting job's message

# The queued jobs the policy may consider: no dependency of theirs (or their array's) still to be met.
READY = "NOT EXISTS (SELECT 1 FROM job_waits w WHERE w.job_id = COALESCE(jobs.array_job_id, jobs.job_id))"
# The queued jobs of one waiter (a job, or every task of an array).
_WAITER = "(job_id = :w OR array_job_id = :w) AND state = 'queued'"


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
    (no leak); one that failed or was cancelled already (an array: any task of it) is
    FailedPreconditionError: the dependent could never start."""
    waiting = []
    for job_id in after_ok:
        row = db.execute("SELECT tenant, array_job_id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None or row[0] != tenant:
            raise NotFoundError(f"after_ok: no job {job_id!r}")
        states = {
            JobState(r[0])
            for r in db.execute("SELECT DISTINCT state FROM jobs WHERE job_id = :j OR array_job_id = :j", {"j": job_id})
        }
        ended = states & {JobState.FAILED, JobState.CANCELLED}
        if ended:
            what = f"job {job_id}" if row[1] != job_id else f"a task of array {job_id}"
            raise FailedPreconditionError(f"after_ok: {what} has {min(ended).value}; a job after it could never start")
        if states != {JobState.SUCCEEDED}:
            waiting.append(job_id)
    return waiting


def wait(db: sqlite3.Connection, waiter: str, waiting: Sequence[str]) -> None:
    """Record that `waiter` (a job's id, or an array's for all its tasks) waits for `waiting`."""
    db.executemany("INSERT INTO job_waits (job_id, after_job_id) VALUES (?, ?)", [(waiter, w) for w in waiting])


def message(waiting: Sequence[str]) -> str:
    """A waiting job's pending reason."""
    shown = ", ".join(waiting[:_SHOWN]) + (f" and {len(waiting) - _SHOWN} more" if len(waiting) > _SHOWN else "")
    return f"waiting for {shown} to succeed (after-ok)"


def released(db: sqlite3.Connection, ended: Job) -> list[tuple[str, str]]:
    """`ended` has just ended. What waited for it (or for its array, once every task succeeded) waits
    no more, and says what it still waits for; if it did not succeed, each queued job that waited
    for it or its array is returned, with the reason, for the caller to cancel (their own waiters
    follow when they are)."""
    array = ended.array_job_id
    ok = ended.state is JobState.SUCCEEDED
    verb = "failed" if ended.state is JobState.FAILED else "was cancelled"
    # (what was waited for, whether that has now succeeded, the reason if it cannot)
    outcomes = []
    if ended.job_id != array:  # a job, or a task other than its array's first, named alone
        outcomes.append((ended.job_id, ok, f"dependency {ended.job_id} {verb} (after-ok)"))
    if array is not None:
        whole = (
            ok
            and not db.execute(
                "SELECT 1 FROM jobs WHERE array_job_id = ? AND state != 'succeeded' LIMIT 1", (array,)
            ).fetchone()
        )
        if whole or not ok:
            outcomes.append((array, ok, f"dependency {array}: its task {ended.array_index} {verb} (after-ok)"))
    cancel: list[tuple[str, str]] = []
    for key, succeeded, reason in outcomes:
        waiters = [str(r[0]) for r in db.execute("SELECT job_id FROM job_waits WHERE after_job_id = ?", (key,))]
        db.execute("DELETE FROM job_waits WHERE after_job_id = ?", (key,))
        for waiter in waiters:
            if succeeded:
                rest = [str(r[0]) for r in db.execute("SELECT after_job_id FROM job_waits WHERE job_id = ?", (waiter,))]
                news = message(rest) if rest else "dependencies met (after-ok)"
                db.execute(f"UPDATE jobs SET message = :m WHERE {_WAITER}", {"m": news, "w": waiter})
                continue
            db.execute("DELETE FROM job_waits WHERE job_id = ?", (waiter,))
            cancel += [
                (str(r[0]), reason) for r in db.execute(f"SELECT job_id FROM jobs WHERE {_WAITER}", {"w": waiter})
            ]
    return cancel
