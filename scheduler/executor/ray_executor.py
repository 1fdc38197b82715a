"""RayExecutor: runs the policy's placements on a Ray cluster.

Each job is one detached placement group ("neocloud-<job>") with one bundle
per node of its placement, every bundle pinned by a label selector to the Ray
node labelled `neocloud.io/node-id=<node>`, and one detached named runner actor
("neocloud-<job>-<rank>") per bundle (runner.py). Everything here returns at
once; progress arrives as events from poll(), which long-polls the runners
through outstanding object refs and never blocks. Because runners and groups
are detached, a new RayExecutor (a restarted scheduler) can reattach() to them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import get_placement_group, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from neocloud.domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from neocloud.domain.faults import fault_point
from neocloud.scheduler.executor import discovery, private_ray, tracking
from neocloud.scheduler.executor.capability import NodeProbes
from neocloud.scheduler.executor.logfile import read_chunk
from neocloud.scheduler.executor.rank import RankStatus
from neocloud.scheduler.executor.runner import RunnerActor
from neocloud.scheduler.executor.tracking import JobRecord, RankRecord
from neocloud.scheduler.executor.types import (
    END_CANCELLED,
    END_EXITED,
    END_GANG_FAILED,
    END_LOST,
    END_PREEMPTED,
    NODE_LABEL,
    ExecJob,
    ExecutorEvent,
    Exited,
    JobLost,
    NodeLost,
    RayNodeInfo,
    Released,
    pg_name,
    runner_name,
    valid_node_id,
)

logger = logging.getLogger(__name__)

DEFAULT_LOG_DIR = Path(tempfile.gettempdir()) / "neocloud" / "jobs"
WATCH_S = 5.0  # a runner answers a long poll at the latest after this long
REAP_S = 5.0  # one reap() call's patience before the executor asks again
CALL_S = 30.0  # blocking calls (read_log)
DRIVER_DONE_GRACE_S = 5.0  # a --ray job's worker ranks, once its driver is done: they end as soon as its head does


class RayExecutor:
    """The executor over Ray. Guarded by a lock, so the scheduler loop and an API
    thread (read_log) may share one."""

    def __init__(
        self,
        address: str | None = None,
        namespace: str = "neocloud",
        log_dir: str | Path = DEFAULT_LOG_DIR,
        *,
        bundle_cpus: float = 0.01,
        node_check_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        read_workdir: Callable[[str], bytes] | None = None,
        allow_unsandboxed_tenants: bool = False,
        sandbox_tenants: bool = True,
        **init_kwargs: Any,
    ) -> None:
        """Connect to the cluster at `address` (e.g. "ray://…" or "10.0.0.1:6379"),
        or start an embedded one when it is None. The embedded head has no GPUs
        unless `num_gpus=` (and `labels={NODE_LABEL: <node id>}`) say otherwise.
        `log_dir` must be a path every GPU node can write (runners write there).
        `allow_unsandboxed_tenants`: report every node as sandboxed (a laptop demo without bwrap).
        `sandbox_tenants=False` runs every rank as the runner's user (tests whose jobs signal
        through host files); logged, never a default."""
        self._ns = namespace
        self._log_dir = str(Path(log_dir).resolve())
        self._bundle_cpus = bundle_cpus
        self._node_check_s = node_check_s
        self._clock = clock
        # A stored workdir's bytes by digest (scheduler/artifacts); None: jobs with one cannot start.
        self._read_workdir = read_workdir
        self._lock = threading.RLock()
        self._jobs: dict[str, JobRecord] = {}
        self._pending: list[ExecutorEvent] = []
        self._alive: dict[str, str] = {}  # ray node id -> neocloud node id, alive at the last check
        self._next_node_check = 0.0
        self._closed = False
        self._probes = NodeProbes(allow_unsandboxed_tenants)
        self._sandbox_tenants = sandbox_tenants
        if not sandbox_tenants:
            logger.warning("tenant ranks run UNSANDBOXED on this executor (sandbox_tenants=False)")
        if ray.is_initialized() and address not in (None, "auto") and not address.startswith("ray://"):
            connected = ray.get_runtime_context().gcs_address
            if connected != address:
                # A connection left over from another cluster would make every job wait forever.
                logger.warning("leaving the Ray cluster at %s for %s", connected, address)
                ray.shutdown()
        if ray.is_initialized():
            current = ray.get_runtime_context().namespace
            if current != namespace:
                raise FailedPreconditionError(
                    f"this process is connected to Ray namespace {current!r}, not {namespace!r}"
                )
            self._owns_ray = False
        else:
            kwargs = dict(init_kwargs)
            if address is None:
                kwargs.setdefault("num_gpus", 0)
                kwargs.setdefault("include_dashboard", False)
            ray.init(address=address or "local", namespace=namespace, **kwargs)
            self._owns_ray = True
        self._check_nodes(emit=False)

    # --- nodes -------------------------------------------------------------------

    def nodes(self) -> dict[str, RayNodeInfo]:
        """neocloud node id -> its Ray node (alive or not), from the `neocloud.io/node-id` labels."""
        with self._lock:
            return self._probes.mark(discovery.labelled_nodes())

    def _check_nodes(self, emit: bool = True) -> list[ExecutorEvent]:
        now = self._clock()
        self._next_node_check = time.monotonic() + self._node_check_s
        alive = {info.ray_node_id: nid for nid, info in self.nodes().items() if info.alive}
        lost = {rid: nid for rid, nid in self._alive.items() if rid not in alive}
        self._alive = alive
        if not emit or not lost:
            return []
        events: list[ExecutorEvent] = [NodeLost(nid, now) for nid in sorted(set(lost.values()))]
        for job in list(self._jobs.values()):
            hit = [
                r for r in job.ranks if r.ray_node_id in lost or (r.ray_node_id is None and r.node_id in lost.values())
            ]
            if hit and not job.releasing:
                events += self._lose(job, hit, now, f"node {hit[0].node_id} lost")
        return events

    def _lose(self, job: JobRecord, ranks: Iterable[RankRecord], at: float, reason: str) -> list[ExecutorEvent]:
        """Some ranks' runners are gone: those still running end as lost, the job is
        reported lost once and the rest of it is stopped."""
        events: list[ExecutorEvent] = []
        running = False
        for r in ranks:
            running = running or not r.exited
            events += tracking.lose_rank(job, r, at)
        job.unverified = True  # a dead runner cannot prove its processes gone
        if running and not job.lost:
            job.lost = True
            events.append(JobLost(job.job_id, at, reason))
            logger.warning("job %s lost: %s", job.job_id, reason)
            self._stop(job, END_LOST, job.job.grace_s)
        return events

    # --- starting ----------------------------------------------------------------

    def start(
        self,
        job: ExecJob,
        placement: Sequence[tuple[str, Sequence[str]]],
        inventory: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Reserve the placement and start one runner per node; returns at once.

        `placement` is [(node_id, [gpu_uuid, ...]), ...], rank 0 first;
        `inventory` maps node ids to their GPU UUIDs in index order, so the
        runners can report which GPUs Ray really gave them."""
        if not self._sandbox_tenants:
            job = dataclasses.replace(job, tenant=None)
        if job.ray:  # a new token at each start: a requeued run's cluster is a new one
            job = dataclasses.replace(job, ray_token=private_ray.new_token())
        with self._lock:
            self._check_open()
            self._validate(job, placement)
            workdir = self._workdir(job)
            name = pg_name(job.job_id)
            with contextlib.suppress(ValueError):
                get_placement_group(name)
                raise AlreadyExistsError(
                    f"job {job.job_id} already has a placement group on the cluster: reattach() or release() it first"
                )
            bundles = [self._bundle(job, len(gpus)) for _, gpus in placement]
            pg = placement_group(
                bundles,
                strategy="STRICT_SPREAD" if len(placement) > 1 else "PACK",
                name=name,
                lifetime="detached",
                bundle_label_selector=[{NODE_LABEL: node_id} for node_id, _ in placement],
            )
            fault_point("start.pg")
            ranks: list[RankRecord] = []
            try:
                for rank, (node_id, gpus) in enumerate(placement):
                    actor = RunnerActor.options(
                        name=runner_name(job.job_id, rank),
                        namespace=self._ns,
                        lifetime="detached",
                        num_gpus=len(gpus),
                        num_cpus=self._bundle_cpus,
                        max_restarts=0,
                        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank),
                    ).remote(
                        job,
                        rank,
                        len(placement),
                        node_id,
                        tuple((inventory or {}).get(node_id, ())),
                        self._log_dir,
                        workdir,
                    )
                    ranks.append(RankRecord(rank=rank, node_id=node_id, actor=actor))
            except ValueError as e:  # a runner of that name exists (ActorAlreadyExistsError)
                for r in ranks:
                    ray.kill(r.actor)
                remove_placement_group(pg)
                raise AlreadyExistsError(f"job {job.job_id}: {e}") from e
            # Rank 0's address resolves before any rank launches (Ray resolves ref arguments).
            record = JobRecord(job=job, pg=pg, ranks=ranks, master=ranks[0].actor.address.remote())
            for r in ranks:
                r.launch_ref = r.actor.launch.remote(record.master)
            self._jobs[job.job_id] = record
            logger.info("job %s: placement group %s requested on %s", job.job_id, name, [n for n, _ in placement])

    def _validate(self, job: ExecJob, placement: Sequence[tuple[str, Sequence[str]]]) -> None:
        if job.job_id in self._jobs:
            raise AlreadyExistsError(f"job {job.job_id} is already running here")
        if not placement:
            raise InvalidArgumentError(f"job {job.job_id}: empty placement")
        node_ids = [n for n, _ in placement]
        if len(set(node_ids)) != len(node_ids):
            raise InvalidArgumentError(f"job {job.job_id}: a node appears twice in the placement {node_ids}")
        for node_id, gpus in placement:
            if not valid_node_id(node_id):
                raise InvalidArgumentError(f"job {job.job_id}: node id {node_id!r} cannot be a Ray node label value")
            if not gpus:
                raise InvalidArgumentError(f"job {job.job_id}: no GPUs on node {node_id}")
        known = self.nodes()
        for node_id, gpus in placement:
            info = known.get(node_id)
            if info is None or not info.alive:
                raise UnavailableError(
                    f"node {node_id} has no live Ray worker labelled {NODE_LABEL}={node_id} "
                    f"(start it with: ray start --address=<head> --labels={NODE_LABEL}={node_id})"
                )
            if len(gpus) > info.gpus:
                raise FailedPreconditionError(f"node {node_id}: {len(gpus)} GPUs asked, its Ray node has {info.gpus}")
            # A bundle no node can hold would wait forever: the job is refused instead (the policy counts GPUs only).
            if info.cpus is not None and job.cpus > info.cpus:
                raise FailedPreconditionError(f"node {node_id}: {job.cpus} CPUs asked, its Ray node has {info.cpus:g}")
            if info.memory_bytes is not None and job.memory_bytes > info.memory_bytes:
                raise FailedPreconditionError(
                    f"node {node_id}: {job.memory_bytes} bytes of memory asked, "
                    f"its Ray node has {info.memory_bytes:.0f}"
                )

    def _workdir(self, job: ExecJob) -> list[Any]:
        """The job's workdir in Ray's object store, once for all its ranks: [ObjectRef] (in a list, so
        that Ray hands the runner the reference and it fetches the bytes when it launches), or []."""
        if not job.workdir_digest:
            return []
        if self._read_workdir is None:
            raise FailedPreconditionError(f"job {job.job_id} has a workdir, and this executor has no workdir store")
        return [ray.put(self._read_workdir(job.workdir_digest))]

    def _bundle(self, job: ExecJob, gpus: int) -> dict[str, float]:
        """One node's share of the job: its GPUs, its CPUs (at least what the runner takes) and memory."""
        bundle = {"GPU": float(gpus), "CPU": max(self._bundle_cpus, float(job.cpus))}
        if job.memory_bytes:
            bundle["memory"] = float(job.memory_bytes)
        return bundle

    # --- stopping ----------------------------------------------------------------

    def preempt(self, job_id: str, grace_s: float) -> None:
        """Notice file, SIGTERM to every rank's process group, SIGKILL after `grace_s`."""
        with self._lock:
            self._stop(self._get(job_id), END_PREEMPTED, grace_s)

    def warn(self, job_id: str, reason: str) -> None:
        """Tell every rank an early reclaim warning (its warning file); fire and forget."""
        with self._lock:
            for r in self._get(job_id).ranks:
                if not r.dead:
                    r.actor.warn.remote(reason)

    def cancel(self, job_id: str, grace_s: float | None = None) -> None:
        with self._lock:
            job = self._get(job_id)
            self._stop(job, END_CANCELLED, job.job.grace_s if grace_s is None else grace_s)

    def _stop(self, job: JobRecord, reason: str, grace_s: float) -> None:
        if job.stop_reason is None:
            job.stop_reason = reason
        if job.ended() or job.releasing:
            return
        if not self._pg_created(job):
            # Nothing can have started: the ranks end now. The stop calls stay queued, so a
            # runner the group gets created for after all never starts its job.
            now = self._clock()
            for r in job.ranks:
                if not r.exited:
                    r.exited = True
                    self._pending.append(Exited(job.job_id, r.rank, None, job.stop_reason, at=now))
        for r in job.ranks:
            if not r.dead:
                r.actor.stop.remote(job.stop_reason, grace_s)

    def _pg_created(self, job: JobRecord) -> bool:
        if job.pg is None:  # reattached without its group: assume runners may be live
            return True
        try:
            return bool(ray.util.placement_group_table(job.pg).get("state") == "CREATED")
        except Exception:  # a GCS hiccup: assume it may exist, so stops go through the runners
            logger.exception("job %s: cannot read its placement group", job.job_id)
            return True

    # --- releasing ---------------------------------------------------------------

    def release(self, job_id: str) -> None:
        """Free the job's GPUs once no process of it survives: each runner SIGKILLs what
        is left of its group and proves it gone; then the runners are killed and the
        placement group removed, and poll() reports Released with the job's pids."""
        with self._lock:
            job = self._get(job_id)
            if job.releasing:
                return
            job.releasing = True
            created = self._pg_created(job)
            for r in job.ranks:
                if r.dead or (not created and r.status is None):
                    r.reaped = True  # no runner, or one that never got its bundle: nothing to reap
                else:
                    r.reap_ref = r.actor.reap.remote(REAP_S)

    def _finish_release(self, job: JobRecord) -> list[ExecutorEvent]:
        events: list[ExecutorEvent] = []
        now = self._clock()
        for r in job.ranks:
            if not r.exited:  # released while running: killed without notice
                r.exited = True
                st = r.status
                reason = (st.end_reason if st else None) or job.stop_reason or END_CANCELLED
                events.append(Exited(job.job_id, r.rank, st.exit_code if st else None, reason, at=now))
            with contextlib.suppress(Exception):
                ray.kill(r.actor, no_restart=True)
        fault_point("stop.pg")
        with contextlib.suppress(Exception):
            remove_placement_group(job.pg)
        del self._jobs[job.job_id]
        namespaces = tuple(sorted(job.pid_namespaces))
        events.append(Released(job.job_id, tuple(sorted(job.pids)), not job.unverified, namespaces))
        logger.info("job %s released (pids %s)", job.job_id, sorted(job.pids))
        return events

    # --- polling -----------------------------------------------------------------

    def poll(self) -> list[ExecutorEvent]:
        """Every event since the last poll; never blocks on the cluster."""
        with self._lock:
            self._check_open()
            events, self._pending = self._pending, []
            if time.monotonic() >= self._next_node_check:
                events += self._check_nodes()
            owners: dict[Any, tuple[JobRecord, RankRecord, str]] = {}
            for job in self._jobs.values():
                for r in job.ranks:
                    for kind in ("launch", "watch", "reap"):
                        ref = getattr(r, f"{kind}_ref")
                        if ref is not None:
                            owners[ref] = (job, r, kind)
            ready: list[Any] = []
            if owners:
                ready, _ = ray.wait(list(owners), num_returns=len(owners), timeout=0)
            for ref in ready:
                job, r, kind = owners[ref]
                setattr(r, f"{kind}_ref", None)
                if job.job_id in self._jobs:
                    events += self._collect(job, r, kind, ref)
            for job in list(self._jobs.values()):
                if job.releasing and all(r.reaped for r in job.ranks):
                    events += self._finish_release(job)
                    continue
                for r in job.ranks:
                    if not (r.exited or r.dead) and r.launch_ref is None and r.watch_ref is None:
                        r.watch_ref = r.actor.watch.remote(r.version, WATCH_S)
            return events

    def _collect(self, job: JobRecord, r: RankRecord, kind: str, ref: Any) -> list[ExecutorEvent]:
        try:
            result = ray.get(ref, timeout=0)
        except ray.exceptions.ActorUnavailableError:  # transient: ask again (launch and reap are idempotent)
            if kind == "reap":
                r.reap_ref = r.actor.reap.remote(REAP_S)
            elif kind == "launch":
                r.launch_ref = r.actor.launch.remote(job.master)
            return []
        except (ray.exceptions.RayActorError, ray.exceptions.ActorPlacementGroupRemoved) as e:
            if job.releasing:
                r.dead = r.reaped = True
                job.unverified = True
                return tracking.lose_rank(job, r, self._clock())
            return self._lose(job, [r], self._clock(), f"runner of rank {r.rank} died: {type(e).__name__}")
        except ray.exceptions.RayError as e:
            logger.error("job %s rank %d: %s failed: %s", job.job_id, r.rank, kind, e)
            if kind == "reap":
                r.reap_ref = r.actor.reap.remote(REAP_S)
                return []
            return self._lose(job, [r], self._clock(), f"runner of rank {r.rank} failed: {e}")
        if kind == "reap":
            gone, pids = result
            job.pids.update(pids)
            r.reaps += 1
            if gone:
                r.reaped = True
            else:
                logger.warning("job %s rank %d: processes survive reap #%d; retrying", job.job_id, r.rank, r.reaps)
                r.reap_ref = r.actor.reap.remote(REAP_S)
            return []
        assert isinstance(result, RankStatus)
        events = tracking.apply_status(job, r, result)
        if tracking.gang_failed(job, r):
            logger.info("job %s: rank %d exited %s; stopping the gang", job.job_id, r.rank, result.exit_code)
            self._stop(job, END_GANG_FAILED, job.job.grace_s)
        elif tracking.driver_done(job, r):
            logger.info("job %s: its driver exited 0; stopping the other nodes of its Ray", job.job_id)
            self._stop(job, END_EXITED, min(job.job.grace_s, DRIVER_DONE_GRACE_S))
        return events

    # --- logs, reattach, shutdown --------------------------------------------------

    def read_log(self, job_id: str, rank: int, offset: int = 0, max_bytes: int = 65536) -> tuple[bytes, bool]:
        """Up to `max_bytes` of rank `rank`'s stdout+stderr from `offset`; eof is True
        once the rank has ended and everything was read. Read through the runner;
        after release, from `log_dir` if it is on this machine."""
        with self._lock:
            job = self._jobs.get(job_id)
            r = job.ranks[rank] if job is not None and 0 <= rank < len(job.ranks) else None
            if r is not None and r.launch_ref is not None:
                return b"", False  # not launched yet (its bundle may not even be placed)
            actor = r.actor if r is not None and not r.dead else None
        if actor is not None:
            try:
                data, eof = ray.get(actor.read_log.remote(offset, max_bytes), timeout=CALL_S)
                return bytes(data), bool(eof)
            except ray.exceptions.RayActorError:
                pass
        path = Path(self._log_dir) / job_id / f"rank-{rank}.log"
        if not path.is_file():
            raise NotFoundError(f"no log for job {job_id} rank {rank}")
        return read_chunk(path, offset, max_bytes)

    def reattach(self, job_ids: Iterable[str]) -> set[str]:
        """Find jobs an earlier executor started (their runners and placement group,
        by name) and resume watching them without restarting anything. poll() then
        reports each found rank's state afresh (Started, Checkpoint, Exited as they
        apply), so the caller must treat those idempotently; ranks whose runner is
        gone are reported lost (JobLost). Returns the job ids found."""
        with self._lock:
            self._check_open()
            found = set()
            for job_id in set(job_ids):
                if job_id in self._jobs:
                    found.add(job_id)
                    continue
                record = discovery.find_job(job_id, self._ns)
                if record is None:
                    continue
                dead = [r for r in record.ranks if r.dead]
                if dead:
                    self._pending += self._lose(record, dead, self._clock(), "runner gone while the scheduler was away")
                self._jobs[job_id] = record
                found.add(job_id)
                logger.info("job %s reattached (%d ranks, %d lost)", job_id, record.world_size, len(dead))
            return found

    def detached_jobs(self) -> set[str]:
        """Job ids with a runner or a placement group on the cluster: what a
        restarted scheduler can reattach() (and then release())."""
        return discovery.job_ids_on_cluster()

    def remove(self, job_id: str) -> bool:
        """Release whatever the cluster holds for `job_id`, reattaching it first if this
        executor does not track it (a crash's orphan: a placement group alone is enough).
        Its runners kill what is left of its processes; poll() reports Released."""
        with self._lock:
            if job_id not in self._jobs and not self.reattach([job_id]):
                return False
            self.release(job_id)
            return True

    def shutdown(self) -> None:
        """Disconnect (ending the embedded cluster, if this executor started one).
        Jobs on a remote cluster keep running: a new executor can reattach()."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._jobs.clear()
            if self._owns_ray:
                ray.shutdown()

    def _get(self, job_id: str) -> JobRecord:
        self._check_open()
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} is not running on this executor")
        return job

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPreconditionError("the executor is shut down")
