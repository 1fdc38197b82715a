"""The runner: one detached Ray actor per rank of a job, on the node its
placement-group bundle pins it to. It starts the job's process group, watches
it (exit, checkpoint file, max runtime), delivers preemption notices, and proves
the group is gone before the executor frees the GPUs.

The actor is threaded: a long-poll `watch()` from the executor, `stop()`,
`read_log()` and `reap()` run side by side. One thread forks the job and waits
for it (the kernel's parent-death signal is tied to that thread, so it must
live as long as the job); a second one is the watchdog.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from neocloud.domain.errors import NeocloudError
from neocloud.scheduler.executor import disk, logfile, procs, rank_start, sandbox
from neocloud.scheduler.executor import workdir as workdirs
from neocloud.scheduler.executor.control_files import ControlDir
from neocloud.scheduler.executor.logfile import read_chunk
from neocloud.scheduler.executor.rank import RankStatus, map_gpus, public_spec
from neocloud.scheduler.executor.types import (
    END_CANCELLED,
    END_DISK_QUOTA,
    END_EXITED,
    END_MAX_RUNTIME,
    END_WATCHDOG_FAILED,
    ExecJob,
)

logger = logging.getLogger(__name__)

TICK_S = 0.2  # watchdog period: checkpoint mtime, kill deadlines, max runtime
SCAN_S = 1.0  # how often the job's group is scanned for new pids
STRAGGLER_GRACE_S = 5.0  # after the leader exits by itself, the rest of its group gets at most this
MAX_READ = 4 << 20
FAILSAFE_GRACE_S = 5.0  # a rank whose watchdog failed gets at most this between SIGTERM and SIGKILL


@dataclass
class _State:
    version: int = 0
    pid: int | None = None
    pids: set[int] = field(default_factory=set)
    started_at: float | None = None
    exit_code: int | None = None
    end_reason: str | None = None
    ended_at: float | None = None
    stop_reason: str | None = None
    kill_at: float | None = None
    checkpoint_mtime: float | None = None
    last_checkpoint_at: float | None = None
    sandbox: str = ""
    watchdog_failure: str | None = None


def _ray_identity() -> tuple[str, str, list[Any]]:
    """(Ray node id, node IP, GPU ids) of the worker this runner lives in."""
    return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), list(ray.get_gpu_ids())


class Runner:
    def __init__(
        self,
        job: ExecJob,
        rank: int,
        world_size: int,
        node_id: str,
        inventory: Sequence[str],
        log_dir: str,
        workdir: Sequence[Any] = (),
    ) -> None:
        self._job = job
        self._workdir = workdir  # [ObjectRef] of the job's workdir archive, or nothing
        self._rank = rank
        self._world = world_size
        self._node_id = node_id
        self._files: ControlDir | None = None
        self._marked_ended = False
        self._ray_node_id, self._ip, ray_ids = _ray_identity()
        self._indices, self._uuids = map_gpus(ray_ids, inventory)
        self._setup = rank_start.RankSetup(
            job=job,
            rank=rank,
            world_size=world_size,
            node_ip=self._ip,
            cuda_visible=",".join(str(i) for i in ray_ids),
            gpu_indices=self._indices,
            node_gpus=len(inventory),
            job_dir=Path(log_dir) / job.job_id,
        )
        self._pid_namespace = procs.own_pid_namespace()  # under Kubernetes, the pod's, not the host's
        self._port: int | None = None
        self._disk: disk.DiskQuota | None = None  # a tenant rank's job directory quota, set at spawn
        if job.tenant is not None:
            sandbox.node_capabilities()  # probed once per worker, before any rank of it starts
        if not procs.become_subreaper():
            logger.warning("cannot become a child subreaper: a killed job's orphans are left to init to reap")
        self._cv = threading.Condition()
        self._s = _State()

    # --- calls from the executor -------------------------------------------------

    def address(self) -> tuple[str, int]:
        """This node's IP and a free port, for rank 0 to be the gang's master."""
        with self._cv:
            if self._port is None:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("", 0))
                    self._port = int(s.getsockname()[1])
            return self._ip, self._port

    def launch(self, master: tuple[str, int]) -> RankStatus:
        """Start the job's process group (once); returns at once with its pid."""
        with self._cv:
            if self._s.pid is not None or self._s.ended_at is not None:
                return self._status()  # launched already, or stopped before it could start
        self._setup.job_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._files = ControlDir(self._setup.control)
            self._files.remove(self._setup.notice)  # a requeued job must not see the last run's notice
            self._files.remove(self._setup.warning)
            self._files.remove(logfile.ended_marker(self._rank))
            self._files.write(logfile.running_marker(self._rank), "")  # its directory is kept while it runs
        except OSError as e:  # the job then runs without notice files; its signals still come
            logger.error("job %s rank %d: no control directory: %s", self._job.job_id, self._rank, e)
        self._sweep_old_logs()
        with self._cv:
            self._s.checkpoint_mtime = _mtime(self._setup.checkpoint)  # only newer checkpoints count
        if not self._install_workdir():
            with self._cv:
                return self._status()
        env = rank_start.environment(self._setup, master)
        argv = procs.job_argv(self._job.command, self._job.entrypoint)
        spawned = threading.Event()
        args = (argv, env, master, spawned)
        threading.Thread(target=self._run, args=args, name="neocloud-job", daemon=True).start()
        spawned.wait()
        with self._cv:
            return self._status()

    def watch(self, version: int, timeout_s: float) -> RankStatus:
        """Long poll: the status as soon as its version exceeds `version`, or after `timeout_s`."""
        with self._cv:
            self._cv.wait_for(lambda: self._s.version > version, timeout=timeout_s)
            return self._status()

    def status(self) -> RankStatus:
        with self._cv:
            return self._status()

    def stop(self, reason: str, grace_s: float) -> RankStatus:
        """Notice file, SIGTERM to the group, SIGKILL after `grace_s` (by the watchdog).
        The first reason wins; a later, shorter grace shortens the deadline."""
        now = time.time()
        with self._cv:
            if self._s.ended_at is not None:
                return self._status()
            first = self._s.stop_reason is None
            if first:
                self._s.stop_reason = reason
            deadline = now + max(grace_s, 0.0)
            self._s.kill_at = deadline if self._s.kill_at is None else min(self._s.kill_at, deadline)
            pid = self._s.pid
            if pid is None:  # stopped before launch: the job never starts
                self._s.end_reason, self._s.ended_at = reason, now
            self._bump()
            if pid is None:
                return self._status()
            reason = self._s.stop_reason or reason
        if first:
            notice = {"job_id": self._job.job_id, "reason": reason, "grace_s": grace_s, "deadline": deadline}
            self._write_control(self._setup.notice, notice)
            # A --ray rank's notice goes to its driver alone: its private Ray serves it through the grace.
            self._note((procs.signal_leader if self._job.ray else procs.signal_all)(pid, procs.TERM))
        if grace_s <= 0:
            self._note(procs.signal_all(pid, procs.KILL))
        with self._cv:
            return self._status()

    def warn(self, reason: str) -> None:
        """An early reclaim warning: the job may soon get a preemption notice, so it can
        checkpoint now. Written to its warning file; no signal, nothing stops."""
        with self._cv:
            if self._s.pid is None or self._s.ended_at is not None:
                return
        warning = {"job_id": self._job.job_id, "reason": reason, "at": time.time()}
        self._write_control(self._setup.warning, warning)

    def reap(self, timeout_s: float) -> tuple[bool, tuple[int, ...]]:
        """SIGKILL whatever is left of the job's group and wait until none of it is alive.
        Returns (gone, every pid the job was seen to have)."""
        with self._cv:
            pid = self._s.pid
            if pid is None:  # never started; and now it never will
                if self._s.ended_at is None:
                    self._s.stop_reason = self._s.stop_reason or END_CANCELLED
                    self._s.end_reason, self._s.ended_at = self._s.stop_reason, time.time()
                    self._bump()
                return True, ()
            if self._s.ended_at is None and self._s.stop_reason is None:
                self._s.stop_reason = END_CANCELLED  # released while running: killed without notice
        deadline = time.monotonic() + timeout_s
        while not procs.group_gone(pid):
            self._note(procs.signal_all(pid, procs.KILL))
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        gone = procs.group_gone(pid)
        with self._cv:
            if not gone:
                logger.warning(
                    "job %s rank %d: processes %s survive SIGKILL", self._job.job_id, self._rank, procs.members(pid)
                )
            return gone, tuple(sorted(self._s.pids))

    def read_log(self, offset: int, max_bytes: int) -> tuple[bytes, bool]:
        with self._cv:
            ended = self._s.ended_at is not None
        try:
            data, at_end = read_chunk(self._setup.log, offset, min(max_bytes, MAX_READ))
        except FileNotFoundError:
            return b"", ended
        return data, ended and at_end

    # --- threads -----------------------------------------------------------------

    def _run(self, argv: list[str], env: dict[str, str], master: tuple[str, int], spawned: threading.Event) -> None:
        """Fork the job and wait for it; this thread lives exactly as long as the leader."""
        with self._cv:
            if self._s.pid is not None or self._s.ended_at is not None:  # launched twice, or a stop got in first
                spawned.set()
                return
            try:
                started = rank_start.spawn(self._setup, argv, env, master)
            except (OSError, sandbox.SandboxError) as e:
                logger.error("job %s rank %d: cannot start: %s", self._job.job_id, self._rank, e)
                with logfile.open_for_append(self._setup.log) as log:
                    log.write(f"neocloud: cannot start the job: {e}\n".encode())
                self._s.exit_code, self._s.end_reason, self._s.ended_at = 127, END_EXITED, time.time()
                self._bump()
                spawned.set()
                return
            proc, self._s.sandbox, self._disk = started.proc, started.sandbox, started.disk
            self._s.pid, self._s.started_at = proc.pid, time.time()
            self._s.pids.add(proc.pid)
            self._bump()
        spawned.set()
        threading.Thread(target=self._guarded_watchdog, args=(proc.pid,), name="neocloud-watchdog", daemon=True).start()
        if self._disk is not None:
            args = (proc.pid, self._disk)
            threading.Thread(target=self._disk_watch, args=args, name="neocloud-disk", daemon=True).start()
        code = proc.wait()
        # The leader is gone; the rest of its group gets the stop deadline (or a short one) to follow.
        with self._cv:
            if self._s.kill_at is None:
                self._s.kill_at = time.time() + min(self._job.grace_s, STRAGGLER_GRACE_S)
        if not procs.group_gone(proc.pid):
            self._note(procs.signal_all(proc.pid, procs.TERM))
            while not procs.group_gone(proc.pid):
                with self._cv:
                    kill = self._s.kill_at is not None and time.time() >= self._s.kill_at
                if kill:
                    self._note(procs.signal_all(proc.pid, procs.KILL))
                time.sleep(0.05)
        self._check_checkpoint()
        with self._cv:
            self._s.exit_code, self._s.ended_at = code, time.time()
            self._s.end_reason = self._s.stop_reason or END_EXITED
            self._bump()

    def _guarded_watchdog(self, pgid: int) -> None:
        """The watchdog, failing safe: a rank nobody watches (no kill deadline, no max runtime)
        must not run on, so whatever breaks the watchdog stops the rank and is reported."""
        try:
            self._watchdog(pgid)
        except Exception as e:  # any failure, by design
            logger.exception("job %s rank %d: the watchdog failed: stopping the rank", self._job.job_id, self._rank)
            with self._cv:
                self._s.watchdog_failure = f"{type(e).__name__}: {e}"[:500]
                self._s.stop_reason = self._s.stop_reason or END_WATCHDOG_FAILED
                grace = min(self._job.grace_s, FAILSAFE_GRACE_S)
                kill_at = time.time() + grace
                self._s.kill_at = kill_at if self._s.kill_at is None else min(self._s.kill_at, kill_at)
                self._bump()
            self._note(procs.signal_all(pgid, procs.TERM))
            while not procs.group_gone(pgid):
                with self._cv:
                    kill = self._s.kill_at is not None and time.time() >= self._s.kill_at
                if kill:
                    self._note(procs.signal_all(pgid, procs.KILL))
                time.sleep(0.05)

    def _watchdog(self, pgid: int) -> None:
        next_scan = 0.0
        runtime_end = None
        with self._cv:
            if self._job.max_runtime_s is not None and self._s.started_at is not None:
                runtime_end = self._s.started_at + self._job.max_runtime_s
        while True:
            now = time.time()
            if now >= next_scan:
                self._note(procs.members(pgid))
                procs.reap_orphans(pgid, pgid)
                next_scan = now + SCAN_S
            with self._cv:
                if self._s.ended_at is not None:
                    return
                kill_at = self._s.kill_at
                stopping = self._s.stop_reason is not None
                wake = [TICK_S]
                if kill_at is not None:
                    wake.append(kill_at - time.time())
                if runtime_end is not None and not stopping:
                    wake.append(runtime_end - time.time())
                self._cv.wait(timeout=max(min(wake), 0.0))
            now = time.time()
            self._check_checkpoint()
            if runtime_end is not None and not stopping and now >= runtime_end:
                logger.info("job %s rank %d: max runtime reached", self._job.job_id, self._rank)
                self.stop(END_MAX_RUNTIME, self._job.grace_s)
            if kill_at is not None and now >= kill_at and not procs.group_gone(pgid):
                self._note(procs.signal_all(pgid, procs.KILL))

    # --- helpers -----------------------------------------------------------------

    def _install_workdir(self) -> bool:
        """Unpack the job's workdir (after the control directory exists: an archive cannot pre-empt it);
        False if it cannot be, and the rank has then ended as a job that could not start."""
        if not self._job.workdir_digest:
            return True
        try:
            workdirs.install(self._setup.job_dir, self._job.workdir_digest, lambda: bytes(ray.get(self._workdir[0])))
            return True
        except (OSError, NeocloudError, ray.exceptions.RayError) as e:
            logger.error("job %s rank %d: cannot unpack its workdir: %s", self._job.job_id, self._rank, e)
            with logfile.open_for_append(self._setup.log) as log:
                log.write(f"neocloud: cannot unpack the job's workdir: {e}\n".encode())
            with self._cv:
                self._s.exit_code, self._s.end_reason, self._s.ended_at = 127, END_EXITED, time.time()
                self._bump()
            return False

    def _write_control(self, name: str, content: dict[str, Any]) -> None:
        """A notice or warning for the job; a failure is logged and never stops what follows (the signal)."""
        try:
            if self._files is None:
                raise FileNotFoundError(f"no control directory {self._setup.control}")
            self._files.write(name, json.dumps(content) + "\n")
        except OSError as e:
            logger.error("job %s rank %d: cannot write %s: %s", self._job.job_id, self._rank, name, e)

    def _disk_watch(self, pgid: int, quota: disk.DiskQuota) -> None:
        """Its own thread: a long walk must never hold up the watchdog's kill at a deadline. Whatever
        breaks a check stops the rank, as a directory that cannot be measured could hide anything."""
        while True:
            with self._cv:
                if self._cv.wait_for(lambda: self._s.ended_at is not None, timeout=disk.CHECK_S):
                    return
            try:
                why = self._disk_over(pgid, quota)
            except Exception as e:  # any failure, by design
                logger.exception("job %s rank %d: the disk check failed", self._job.job_id, self._rank)
                why = f"its job directory could not be checked ({type(e).__name__})"
            if why is not None:
                self._stop_for_disk(why)
                return

    def _disk_over(self, pgid: int, quota: disk.DiskQuota) -> str | None:
        try:
            held = disk.held_deleted(procs.members(pgid), os.stat(self._setup.job_dir).st_dev)
            return disk.over(quota, *disk.measure(self._setup.job_dir, quota, held))
        except disk.Unmeasurable as e:
            return str(e)

    def _stop_for_disk(self, why: str) -> None:
        """Stop the rank (with a short grace): its job directory passed its quota."""
        with self._cv:
            if self._s.stop_reason is not None:
                return
        logger.warning("job %s rank %d: %s; stopping the rank", self._job.job_id, self._rank, why)
        try:
            with logfile.open_for_append(self._setup.log) as log:
                log.write(f"neocloud: {why}; stopping the rank\n".encode())
        except OSError as e:  # a full disk, most likely: the job's end reason still says why
            logger.error("job %s rank %d: cannot write its log: %s", self._job.job_id, self._rank, e)
        self.stop(END_DISK_QUOTA, min(self._job.grace_s, FAILSAFE_GRACE_S))

    def _check_checkpoint(self) -> None:
        mtime = _mtime(self._setup.checkpoint)
        with self._cv:
            if mtime is not None and mtime != self._s.checkpoint_mtime:
                self._s.checkpoint_mtime = mtime
                self._s.last_checkpoint_at = mtime
                self._bump()

    def _note(self, pids: Sequence[int]) -> None:
        with self._cv:
            self._s.pids.update(pids)

    def _bump(self) -> None:
        """Caller holds the lock."""
        self._s.version += 1
        if self._s.ended_at is not None and not self._marked_ended:
            self._mark_ended()
        self._cv.notify_all()

    def _mark_ended(self) -> None:
        """Whichever way the rank ended: its directory's retention starts now. Caller holds the lock."""
        self._marked_ended = True
        if self._files is None:
            return
        try:
            self._files.write(logfile.ended_marker(self._rank), f"{self._s.ended_at}\n")
            self._files.remove(logfile.running_marker(self._rank))
        except OSError as e:
            logger.error("job %s rank %d: cannot mark its end: %s", self._job.job_id, self._rank, e)

    def _sweep_old_logs(self) -> None:
        """Delete this node's job directories that ended longer than the retention ago."""
        try:
            logfile.sweep_expired(self._setup.job_dir.parent, logfile.retention_s(), time.time(), keep=self._job.job_id)
        except (OSError, ValueError) as e:
            logger.error("job %s rank %d: no sweep of old logs: %s", self._job.job_id, self._rank, e)

    def _status(self) -> RankStatus:
        """Caller holds the lock."""
        s = self._s
        return RankStatus(
            job=public_spec(self._job),
            rank=self._rank,
            world_size=self._world,
            node_id=self._node_id,
            ray_node_id=self._ray_node_id,
            node_ip=self._ip,
            version=s.version,
            log_path=str(self._setup.log),
            gpu_indices=self._indices,
            gpu_uuids=self._uuids,
            pid=s.pid,
            pids=tuple(sorted(s.pids)),
            pid_namespace=self._pid_namespace,
            started_at=s.started_at,
            exit_code=s.exit_code,
            end_reason=s.end_reason,
            ended_at=s.ended_at,
            last_checkpoint_at=s.last_checkpoint_at,
            stopping=s.stop_reason,
            sandbox=s.sandbox,
            watchdog_failure=s.watchdog_failure,
        )


def _mtime(path: Path) -> float | None:
    """The checkpoint file's own mtime: a link the job planted there is not followed."""
    try:
        return path.lstat().st_mtime
    except OSError:
        return None


# Threaded so the executor's long-poll watch() never blocks stop(), reap() or read_log().
_remote: Any = ray.remote  # ray's overloads do not list actor options
RunnerActor: Any = _remote(max_concurrency=32)(Runner)
