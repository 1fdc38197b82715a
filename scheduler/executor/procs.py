"""Starting a job as its own process group and making sure all of it is gone.

No Ray here: the runner actor (runner.py) uses these helpers on its node. A job
is started with `start_new_session=True`, so its leader's pid is both its
process-group id and its session id; members that move to another group with
setpgid() stay in the session and are still found and killed. Only a process
that calls setsid() itself escapes, which is why the pids seen are reported to
the caller for an NVML check.

A tenant's rank is started by `spawn_sandboxed` (sandbox.py): there its cgroup,
not its session, is the set of its processes, so setsid() escapes nothing; the
functions below that take the leader's pid look the cgroup up by it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from neocloud.scheduler.executor import logfile, sandbox, sweeper

logger = logging.getLogger(__name__)

# Runs between the runner and the job: asks the kernel to SIGKILL the job's leader
# if the runner's process dies (so a killed runner actor leaves no GPU process
# behind; PR_SET_PDEATHSIG survives execve), then becomes the job. argv[1] is the
# runner's pid (to close the race where it died before prctl), argv[2:] the job.
_SHIM = (
    "import ctypes,os,sys\n"
    "ctypes.CDLL(None).prctl(1,9)\n"  # PR_SET_PDEATHSIG, SIGKILL
    "if os.getppid()!=int(sys.argv[1]):os._exit(137)\n"
    "try:os.execvp(sys.argv[2],sys.argv[2:])\n"
    "except OSError as e:sys.stderr.write(f'neocloud: cannot run {sys.argv[2]!r}: {e}\\n');os._exit(127)\n"
)

# Calls "pkg.mod:func" with no arguments; an int result is the exit status.
_ENTRYPOINT = (
    "import importlib,sys\n"
    "m,_,f=sys.argv[1].partition(':')\n"
    "r=getattr(importlib.import_module(m),f)()\n"
    "sys.exit(r if isinstance(r,int) else 0)\n"
)

# Variables of the runner's own environment a job inherits; nothing else of it
# (in particular none of Ray's RAY_* settings) leaks into tenant processes.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL")


def job_argv(command: Sequence[str] | None, entrypoint: str | None, python: str = sys.executable) -> list[str]:
    """The argv that runs a job: its command, or `python -c` calling its entrypoint."""
    if command is not None:
        return list(command)
    assert entrypoint is not None
    return [python, "-c", _ENTRYPOINT, entrypoint]


def base_env(parent: Mapping[str, str] | None = None) -> dict[str, str]:
    parent = os.environ if parent is None else parent
    return {k: parent[k] for k in INHERITED_ENV if k in parent}


def spawn(
    argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` as a new session (and process group) with stdout and stderr
    appended to `log_path`; its pid is the group id."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    shim = [sys.executable, "-I", "-S", "-c", _SHIM, str(os.getpid()), *argv]
    with logfile.open_for_append(log_path) as log:
        proc = subprocess.Popen(
            shim,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    sweeper.guard(proc.pid)  # the rest of the session dies with the runner too, not only the leader
    return proc


# The cgroup of each sandboxed rank this process started, by its leader's pid.
_CGROUPS: dict[int, sandbox.RankCgroup] = {}


def spawn_sandboxed(
    argv: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    spec: sandbox.SandboxSpec,
    box: sandbox.Sandbox | None = None,
) -> tuple[subprocess.Popen[bytes], sandbox.Proof]:
    """`spawn` inside `box` (default: this node's sandbox); raises SandboxError where the
    node cannot enforce it."""
    box = box or sandbox.node_sandbox()
    prepared = box.command(list(argv), spec)
    try:
        proc = spawn(prepared.argv, env, log_path, cwd=spec.job_dir)
    except OSError:
        prepared.cgroup.remove()
        raise
    _CGROUPS[proc.pid] = prepared.cgroup
    return proc, prepared.proof


def own_pid_namespace(proc_root: Path = Path("/proc")) -> int:
    """The inode of this process's PID namespace, 0 if unreadable: the pids the
    runner reports are in it, and NVML's (the host's) are matched through it."""
    try:
        return (proc_root / "self" / "ns" / "pid").stat().st_ino
    except OSError:
        return 0


def _stat(proc_root: Path, pid: str) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, session) of one process, None if it is gone."""
    try:
        raw = (proc_root / pid / "stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3])
    except (IndexError, ValueError):
        return None


def _scan(pgid: int, proc_root: Path) -> list[tuple[int, str, int]]:
    """(pid, state, ppid) of every process in group `pgid` or in the session it leads."""
    found = []
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            st = _stat(proc_root, entry)
            if st is not None and (st[2] == pgid or st[3] == pgid):
                found.append((int(entry), st[0], st[1]))
    return found


def members(pgid: int, proc_root: Path = Path("/proc")) -> list[int]:
    """Live (non-zombie) processes in group `pgid` or in the session it leads
    (a sandboxed rank: in its cgroup)."""
    cgroup = _CGROUPS.get(pgid)
    if cgroup is not None:
        return cgroup.pids()
    return sorted(pid for pid, state, _ in _scan(pgid, proc_root) if state != "Z")


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux), so a job's
    background processes, once killed, are reaped here rather than left as
    zombies under an init that may never reap them."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap_orphans(pgid: int, leader: int | None, proc_root: Path = Path("/proc")) -> None:
    """Reap the job's zombies that were reparented to this process (never the
    leader: its Popen reaps it and needs its exit status)."""
    me = os.getpid()
    for pid, state, ppid in _scan(pgid, proc_root):
        if state == "Z" and ppid == me and pid != leader:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def group_gone(pgid: int, proc_root: Path = Path("/proc")) -> bool:
    """True once no live process of the job's group or session exists.

    `os.killpg(pgid, 0)` raising ProcessLookupError is the proof for the group.
    Zombies this process may reap (see become_subreaper) are reaped first; one
    whose parent is elsewhere holds no memory and no GPU context, so a group left
    with only those counts as gone too.
    """
    reap_orphans(pgid, pgid, proc_root)
    cgroup = _CGROUPS.get(pgid)
    if cgroup is not None:
        if not cgroup.empty():
            return False
        cgroup.remove()
        _CGROUPS.pop(pgid, None)
        return True
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return not members(pgid, proc_root)
    except PermissionError:
        return False
    return not members(pgid, proc_root)


def signal_all(pgid: int, sig: int, proc_root: Path = Path("/proc")) -> list[int]:
    """Send `sig` to the job's group and to every other live member of its
    session; returns the pids signalled. A sandboxed rank gets SIGKILL through its
    cgroup (nothing can fork away meanwhile) and other signals in every process but
    its leader (bwrap, which would die of them and take the rank down unwarned)."""
    cgroup = _CGROUPS.get(pgid)
    if cgroup is not None:
        return cgroup.kill_all() if sig == signal.SIGKILL else cgroup.signal(sig, skip=pgid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    pids = members(pgid, proc_root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return pids


def signal_leader(pgid: int, sig: int, proc_root: Path = Path("/proc")) -> list[int]:
    """Send `sig` to the job's first process only: a `--ray` rank's boot (ray_boot.py), which passes
    a notice to the driver and not to the private Ray serving it. In a sandbox that is the first child
    of bubblewrap's init (the orphans init adopts later, Ray's daemons among them, started after it);
    unsandboxed, the leader itself. Sent through a pidfd, once the process is known to be still the
    one chosen (a member of the rank's cgroup; unsandboxed, this process's unreaped child): its pid,
    freed meanwhile and reused by someone else's process, is never signalled."""
    cgroup = _CGROUPS.get(pgid)
    if cgroup is None:
        return _signal_if(pgid, sig, _is_unreaped_child)
    target = _first_inside(pgid, cgroup.pids(), proc_root)
    if target is None:  # the sandbox is still being set up: no boot yet, and the whole rank is the notice's
        return signal_all(pgid, sig, proc_root)
    return _signal_if(target, sig, lambda _pidfd: target in cgroup.pids())


def _signal_if(pid: int, sig: int, still_ours: Callable[[int], bool]) -> list[int]:
    """Signal `pid` if `still_ours(its pidfd)`: the pidfd pins the process, so nothing can take its pid
    between the check and the signal."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:  # gone already
        return []
    except OSError:  # no pidfds (Linux < 5.3): only unsandboxed ranks run there (the probe), the runner's child
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        return [pid]
    try:
        if not still_ours(pidfd):
            return []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            signal.pidfd_send_signal(pidfd, sig)
        return [pid]
    finally:
        os.close(pidfd)


def _is_unreaped_child(pidfd: int) -> bool:
    try:
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except OSError:  # no waitid on a pidfd (Linux 5.3): the pidfd still pins the process
        pass
    return True


def _first_inside(outer: int, pids: Sequence[int], proc_root: Path) -> int | None:
    """The earliest-started grandchild of `outer` (bwrap) among `pids`, through its init."""
    started: dict[int, tuple[int, int]] = {}  # pid -> (ppid, start time in ticks)
    for pid in pids:
        try:
            raw = (proc_root / str(pid) / "stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        with contextlib.suppress(IndexError, ValueError):
            started[pid] = (int(fields[1]), int(fields[19]))
    inits = {pid for pid, (ppid, _) in started.items() if ppid == outer}
    inside = [(start, pid) for pid, (ppid, start) in started.items() if ppid in inits]
    return min(inside)[1] if inside else None


def write_atomic(path: Path, text: str) -> None:
    """Write `text` so that a reader sees the whole file or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


KILL = signal.SIGKILL
TERM = signal.SIGTERM
