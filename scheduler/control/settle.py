"""How a job that stopped running ends, decided once (a StopIntent) and then
carried into the store, idempotently: a repair after a crash carries the same
decision again, with the same end time, whatever the time of the repair."""

from __future__ import annotations

import logging

from neocloud.scheduler.executor.types import (
    END_CANCELLED,
    END_DISK_QUOTA,
    END_EXITED,
    END_LOST,
    END_MAX_RUNTIME,
    END_PREEMPTED,
    END_WATCHDOG_FAILED,
    Exited,
)
from neocloud.scheduler.store.intents import StopIntent
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import ACTIVE_STATES, Job, JobState

logger = logging.getLogger(__name__)

REQUEUE = "requeue"  # StopIntent.outcome: back to the queue if the job allows it, else failed


def ending(job: Job, exits: list[Exited], lost_at: float | None, at: float) -> StopIntent:
    """What a job whose every rank has exited ends as; `at` is its first rank's end."""
    reasons = {e.end_reason for e in exits}
    if lost_at is not None or END_LOST in reasons:
        return StopIntent(job.job_id, lost_at or at, REQUEUE, END_LOST, "its node was lost")
    if END_PREEMPTED in reasons:
        return StopIntent(job.job_id, at, REQUEUE, END_PREEMPTED, "preempted")
    if END_WATCHDOG_FAILED in reasons:  # the runner's fault, not the job's: run it again
        return StopIntent(job.job_id, at, REQUEUE, END_WATCHDOG_FAILED, "its runner's watchdog failed; it was stopped")
    if END_CANCELLED in reasons or job.cancel_requested:
        return StopIntent(job.job_id, at, JobState.CANCELLED.value, JobState.CANCELLED.value, "cancelled by request")
    if END_DISK_QUOTA in reasons:  # run again, it would fill the disk again
        failed = JobState.FAILED.value
        return StopIntent(job.job_id, at, failed, failed, "stopped: its job directory passed its disk quota")
    if END_MAX_RUNTIME in reasons:
        failed = JobState.FAILED.value
        return StopIntent(job.job_id, at, failed, failed, "stopped at its maximum run time")
    if job.spec.ray:  # the driver's status is the job's: its Ray's other ranks end when it does
        exits = [e for e in exits if e.rank == 0] or exits
    codes = [e.exit_code for e in exits]
    ok = reasons == {END_EXITED} and all(c == 0 for c in codes)
    state = JobState.SUCCEEDED if ok else JobState.FAILED
    worst = next((c for c in codes if c != 0), 0)
    return StopIntent(job.job_id, at, state.value, state.value, "" if ok else f"exit codes {codes}", worst)


def settle(store: JobStore, intent: StopIntent) -> None:
    """Carry `intent` into the store: allocations closed at `intent.at`, the job requeued or
    ended. A job no longer running (settled already) is left as it is."""
    job = store.get(intent.job_id)
    if job.state not in ACTIVE_STATES:
        return
    if intent.outcome != REQUEUE:
        store.finish(job.job_id, JobState(intent.outcome), intent.exit_code, intent.message, now=intent.at)
        return
    store.close_allocations(job.job_id, intent.at, intent.end_reason)
    limit = store.policy_config().max_requeues
    if job.spec.requeue_on_preempt and job.requeues < limit:
        store.requeue(job.job_id, now=intent.at, reason=intent.message)
    else:
        message = f"{intent.message}; not requeued ({job.requeues} requeues of {limit} allowed)"
        store.finish(job.job_id, JobState.FAILED, None, message, now=intent.at)
