"""What the controller is in the middle of, durable: an intent is written before
each multi-step action and cleared when its last step is done, so a controller
that crashes between steps finds, after a restart, what to complete or roll back.

- start J on P: intent -> store (queued -> running, allocations open) -> Ray (placement
  group, runners) -> intent cleared;
- stop J: intent (with the outcome already decided: what the job ended as, and when)
  -> store (allocations closed at that time) -> Ray (runners, placement group removed)
  -> release reported -> intent cleared;
- the GPUs of a stopped job wait for NVML's word that none of its processes is left
  (a cleanup), across restarts too.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass

from neocloud.scheduler.policy.types import JobClass, RunningJob
from neocloud.scheduler.store.base import StoreBase

logger = logging.getLogger(__name__)

Placement = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class StartIntent:
    job_id: str
    at: float  # when the allocations open
    placement: Placement


@dataclass(frozen=True, slots=True)
class StopIntent:
    """How a job ended, decided before anything is written: `outcome` is "requeue" or the
    terminal state; the job's allocations close at `at` (its end, not the time of a repair)."""

    job_id: str
    at: float
    outcome: str
    end_reason: str
    message: str = ""
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class CleanupRow:
    job_id: str
    gpu_uuids: tuple[str, ...]
    pids: frozenset[int]
    released_us: int | None  # None until Ray reported the release
    holder: RunningJob | None
    pid_namespaces: frozenset[int] = frozenset()


class IntentStore(StoreBase):
    @classmethod
    def beside(cls, store: StoreBase) -> IntentStore:
        """An IntentStore on `store`'s own connection and lock: its writes are ordered with the
        store's (an in-memory store has no second connection)."""
        intents = cls(store._db, store._clock)
        intents._lock = store._lock
        return intents

    def begin_start(self, job_id: str, placement: Placement, at: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO intents (job_id, action, at, detail) VALUES (?, 'start', ?, ?)",
                (job_id, at, json.dumps([[n, list(u)] for n, u in placement])),
            )

    def begin_stop(self, intent: StopIntent, cleanup: CleanupRow) -> None:
        """The stop intent and the GPUs it will leave awaiting NVML, in one transaction."""
        detail = {"outcome": intent.outcome, "end_reason": intent.end_reason, "message": intent.message}
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO intents (job_id, action, at, detail) VALUES (?, 'stop', ?, ?)",
                (intent.job_id, intent.at, json.dumps({**detail, "exit_code": intent.exit_code})),
            )
            _put_cleanup(db, cleanup)

    def clear(self, job_id: str, action: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM intents WHERE job_id = ? AND action = ?", (job_id, action))

    def intents(self) -> list[StartIntent | StopIntent]:
        with self._read() as db:
            rows = db.execute("SELECT job_id, action, at, detail FROM intents ORDER BY at, job_id").fetchall()
        out: list[StartIntent | StopIntent] = []
        for job_id, action, at, detail in rows:
            d = json.loads(detail)
            if action == "start":
                out.append(StartIntent(job_id, float(at), tuple((str(n), tuple(u)) for n, u in d)))
            else:
                out.append(StopIntent(job_id, float(at), d["outcome"], d["end_reason"], d["message"], d["exit_code"]))
        return out

    # --- cleanups ---------------------------------------------------------------------------------

    def put_cleanup(self, cleanup: CleanupRow) -> None:
        with self._write() as db:
            _put_cleanup(db, cleanup)

    def released(self, cleanup: CleanupRow) -> None:
        """Ray reported the release: the cleanup now waits for NVML, and the stop is done."""
        with self._write() as db:
            _put_cleanup(db, cleanup)
            db.execute("DELETE FROM intents WHERE job_id = ? AND action = 'stop'", (cleanup.job_id,))

    def drop_cleanup(self, job_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM cleanups WHERE job_id = ?", (job_id,))

    def cleanups(self) -> list[CleanupRow]:
        with self._read() as db:
            rows = db.execute(
                "SELECT job_id, gpu_uuids, pids, released_us, holder, pid_namespaces FROM cleanups"
            ).fetchall()
        return [
            CleanupRow(
                job_id,
                tuple(json.loads(uuids)),
                frozenset(json.loads(pids)),
                released,
                _holder(job_id, holder),
                frozenset(json.loads(namespaces)),
            )
            for job_id, uuids, pids, released, holder, namespaces in rows
        ]


def _put_cleanup(db: sqlite3.Connection, c: CleanupRow) -> None:
    h = c.holder
    holder = None
    if h is not None:
        holder = json.dumps(
            {
                "tenant": h.tenant,
                "job_class": int(h.job_class),
                "placement": [[n, list(u)] for n, u in h.placement],
                "started_at": h.started_at,
                "contract_id": h.contract_id,
                "notice_at": h.preemption_notice_at,
            }
        )
    db.execute(
        "INSERT OR REPLACE INTO cleanups (job_id, gpu_uuids, pids, released_us, holder, pid_namespaces)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            c.job_id, json.dumps(list(c.gpu_uuids)), json.dumps(sorted(c.pids)), c.released_us, holder,
            json.dumps(sorted(c.pid_namespaces)),
        ),
    )  # fmt: skip


def _holder(job_id: str, text: str | None) -> RunningJob | None:
    if text is None:
        return None
    d = json.loads(text)
    placement = tuple((str(n), tuple(u)) for n, u in d["placement"])
    return RunningJob(
        job_id, d["tenant"], JobClass(d["job_class"]), placement, d["started_at"],
        contract_id=d["contract_id"], preemption_notice_at=d["notice_at"],
    )  # fmt: skip
