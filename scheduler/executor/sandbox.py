"""The sandbox around a tenant's rank: the one privileged module of the executor.

Reviewed like crypto code: argv lists only (no shell), one entry point
(`Sandbox.command`), and `RankCgroup.kill_all` to stop a rank whatever it did.

How a rank is fenced (the runner is root; nothing here is hand-rolled):
- bubblewrap, run as root *without* a user namespace, gives the rank its own
  PID, mount, IPC and UTS namespaces, a fresh /proc, a minimal /dev plus only
  the rank's GPU nodes, a private /tmp, read-only /usr, /etc minus secrets and
  the job's Python, and its own job directory read-write: nothing else of the
  host (no spool, database, CA, tokens, other jobs, Ray session dir);
- inside it, setpriv drops to the tenant's own uid/gid (from a configured range,
  never root nor the runner's uid), clears supplementary groups, empties the
  capability bounding set and sets no_new_privs. Root-bwrap + setpriv rather than
  bwrap --unshare-user: the job then holds no capability in any namespace (a user
  namespace would make it root there, able to mount and more);
- a cgroup per rank (v1: memory, pids, cpu, freezer, devices; v2: one dir) caps
  memory, processes and CPU, allows only its devices (v1), and is how the runner
  kills the whole rank: setsid, double fork or reparenting stay in the cgroup.
The network stays shared: ranks reach each other for NCCL.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu", "freezer", "devices")
UID_BASE = 200_000
UID_COUNT = 65_536
DEFAULT_PIDS_MAX = 4096
CPU_PERIOD_US = 100_000
MEMINFO = Path("/proc/meminfo")
# Left to the OS, the runner and Ray when ranks take their default share: max(2 GiB, 5 %) of the node.
SYSTEM_RESERVE_MIN_BYTES = 2 << 30
SYSTEM_RESERVE_FRACTION = 0.05
MIN_DEFAULT_MEMORY_BYTES = 256 << 20  # a node at or under its reserve still gives its ranks a limit, never "none"
# What CUDA opens besides /dev/nvidiaN, where the node has them.
NVIDIA_CONTROL = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
# /etc entries a job must never see: the site's secrets and the host's credentials.
ETC_HIDDEN = frozenset({"neocloud", "shadow", "shadow-", "gshadow", "gshadow-", "ssh", "sudoers", "sudoers.d", "ray"})
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# The devices bubblewrap's --dev puts in /dev (c major:minor), allowed in the devices cgroup.
BASE_DEVICES = (
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
)
# Joins the rank's cgroups, then becomes the sandbox: argv is files..., "--", command...
_JOIN = (
    "import os,sys\n"
    "i=sys.argv.index('--')\n"
    "for f in sys.argv[1:i]:\n"
    " with open(f,'w') as h:h.write(str(os.getpid()))\n"
    "os.execv(sys.argv[i+1],sys.argv[i+1:])\n"
)


class SandboxError(RuntimeError):
    """The sandbox cannot be set up for a rank: the rank must not start."""


@dataclass(frozen=True)
class Capabilities:
    """What this node can enforce, probed once per runner process."""

    bwrap: bool
    uid_switch: bool
    cgroup: str  # "v1", "v2" or "" (none usable)
    missing: tuple[str, ...]  # named primitives the full sandbox lacks here

    @property
    def full(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class SandboxSpec:
    job_id: str
    rank: int
    tenant: str
    job_dir: Path
    uid_offset: int | None = None  # the tenant's own uid in the range (None: a hash of its name)
    gpu_indices: tuple[int, ...] = ()
    cpus: int = 0  # 0: one core's worth
    memory_bytes: int = 0  # 0: the sandbox's default
    disk_bytes: int = 0  # its job directory's quota (disk.py; the runner enforces it), for the proof
    disk_files: int = 0
    dev_root: Path = Path("/dev")  # where the node's GPU nodes are (tests: stand-ins)


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    cpus: int


def gpu_share(rank_gpus: int, node_gpus: int) -> tuple[int, int]:
    """A rank's share of its node as (its GPUs, the node's), never more than all of it: (1, 1) where
    the GPUs are not known (no inventory, or none assigned to the rank)."""
    return (min(rank_gpus, node_gpus), node_gpus) if rank_gpus > 0 and node_gpus > 0 else (1, 1)


def default_limits(mem_total_bytes: int, cpu_count: int, rank_gpus: int, node_gpus: int) -> Limits:
    """The limits of a rank that asked for none: its share of the node by GPUs, of the memory the
    system reserve leaves and of the CPUs (at least one). The whole node (less the reserve) where
    the GPUs are not known (no inventory, or none assigned to the rank)."""
    reserve = max(SYSTEM_RESERVE_MIN_BYTES, int(mem_total_bytes * SYSTEM_RESERVE_FRACTION))
    usable = mem_total_bytes - reserve
    share, whole = gpu_share(rank_gpus, node_gpus)
    return Limits(
        memory_bytes=max(usable * share // whole, MIN_DEFAULT_MEMORY_BYTES),
        cpus=max(1, cpu_count * share // whole),
    )


def mem_total_bytes(meminfo: Path = MEMINFO) -> int:
    """The node's MemTotal, in bytes."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # in kB
    except (OSError, ValueError, IndexError) as e:
        raise SandboxError(f"{meminfo}: cannot read MemTotal: {e}") from e
    raise SandboxError(f"{meminfo}: no MemTotal")


@dataclass(frozen=True)
class Proof:
    """What a rank was given, for its job record."""

    uid: int
    gid: int
    devices: tuple[str, ...]
    memory_bytes: int  # 0: unlimited
    pids_max: int
    cpus: int
    cgroup: str
    namespaces: tuple[str, ...] = ("pid", "mount", "ipc", "uts")
    disk_bytes: int = 0  # the job directory's quota (0: none)
    disk_files: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _dry_run(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def cgroup_version(root: Path = CGROUP_ROOT) -> str:
    return "v2" if (root / "cgroup.controllers").exists() else "v1"


def probe(root: Path = CGROUP_ROOT) -> Capabilities:
    """Try each primitive for real (a bwrap dry run, a setpriv to a range uid, a cgroup mkdir)."""
    missing: list[str] = []
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    ok_bwrap = bool(bwrap) and _dry_run([str(bwrap), *_namespaces(), *_system_binds(), "--", "/bin/true"])
    if not ok_bwrap:
        missing.append("bubblewrap (bwrap) namespaces")
    ok_uid = os.geteuid() == 0 and bool(setpriv) and _dry_run([str(setpriv), *_drop(UID_BASE), "--", "/bin/true"])
    if not ok_uid:
        missing.append("uid switch (root and setpriv)")
    version = cgroup_version(root)
    wanted = ("",) if version == "v2" else V1_CONTROLLERS
    for ctrl in wanted:
        test = root / ctrl / "neocloud" / f"probe-{os.getpid()}"
        try:
            test.mkdir(parents=True, exist_ok=True)
            test.rmdir()
        except OSError:
            missing.append(f"cgroup {version} {ctrl or 'root'} (not writable)")
    if version == "v2" and not missing and not (root / "cgroup.kill").exists() and not _has_kill(root):
        missing.append("cgroup v2 cgroup.kill (kernel >= 5.14)")
    if not _has_pidfd():
        missing.append("pidfd (kernel >= 5.4): a notice could reach a pid reused by another process")
    cg = version if not any(m.startswith("cgroup") for m in missing) else ""
    return Capabilities(bwrap=ok_bwrap, uid_switch=ok_uid, cgroup=cg, missing=tuple(missing))


def _has_pidfd() -> bool:
    """Whether a process can be pinned by a pidfd (procs.signal_leader signals through one)."""
    try:
        os.close(os.pidfd_open(os.getpid()))
        return True
    except (AttributeError, OSError):
        return False


def _has_kill(root: Path) -> bool:
    return any((p / "cgroup.kill").exists() for p in root.iterdir() if p.is_dir())


def tenant_uid(tenant: str, base: int = UID_BASE, count: int = UID_COUNT) -> int:
    """A stable uid for `tenant` in [base, base + count): the same on every node."""
    index = int.from_bytes(hashlib.sha256(tenant.encode()).digest()[:8], "big") % count
    return base + index


def _namespaces() -> list[str]:
    return ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session"]


def _system_binds() -> list[str]:
    """Read-only system: /usr and its merged-/usr links, /etc minus secrets, the job's Python."""
    args: list[str] = []
    for name in SYSTEM_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    with contextlib.suppress(OSError):
        for entry in sorted(os.listdir("/etc")):
            if entry not in ETC_HIDDEN:
                args += ["--ro-bind-try", f"/etc/{entry}", f"/etc/{entry}"]
    # The private /tmp first: a Python under /tmp (a virtualenv in a CI checkout there) is bound on top of it.
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    for prefix in sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}):
        if not any(prefix == f"/{d}" or prefix.startswith(f"/{d}/") for d in SYSTEM_DIRS):
            args += [*_searchable_parents(Path(prefix)), "--ro-bind", prefix, prefix]
    return args


def _searchable_parents(path: Path) -> list[str]:
    """Make `path`'s parents in the sandbox searchable by the job's uid: bubblewrap creates the
    directories above a bind 0700, which hid a virtualenv's Python (and its `ray`) from the job."""
    args: list[str] = []
    for parent in reversed(path.parents[:-1]):
        args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _drop(uid: int) -> list[str]:
    return [
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--no-new-privs",
        "--bounding-set=-all",
        "--inh-caps=-all",
    ]


def _devices(spec: SandboxSpec) -> list[Path]:
    """The rank's GPU nodes and CUDA's control nodes, those that exist."""
    names = [f"nvidia{i}" for i in spec.gpu_indices] + list(NVIDIA_CONTROL)
    return [spec.dev_root / n for n in names if (spec.dev_root / n).exists()]


class RankCgroup:
    """One rank's cgroup(s): limits, membership, and the kill that nothing escapes."""

    def __init__(self, name: str, version: str, root: Path = CGROUP_ROOT) -> None:
        self.version = version
        ctrls = ("",) if version == "v2" else V1_CONTROLLERS
        self.dirs = {c: root / c / "neocloud" / name for c in ctrls}
        self._main = self.dirs["" if version == "v2" else "pids"]

    def create(self, memory_bytes: int, pids_max: int, cpus: int, devices: list[Path]) -> None:
        if any(d.exists() for d in self.dirs.values()):
            self.kill_all()  # a leftover of this rank's last run (requeue, crash)
            self.remove()
        for d in self.dirs.values():
            d.mkdir(parents=True)
        quota = max(cpus, 1) * CPU_PERIOD_US
        if self.version == "v2":
            self._enable_v2(self._main.parent.parent)
            self._write("", "memory.max", str(memory_bytes) if memory_bytes else "max")
            self._write("", "memory.swap.max", "0", optional=True)
            self._write("", "pids.max", str(pids_max))
            self._write("", "cpu.max", f"{quota} {CPU_PERIOD_US}")
            return
        if memory_bytes:
            self._write("memory", "memory.limit_in_bytes", str(memory_bytes))
            self._write("memory", "memory.memsw.limit_in_bytes", str(memory_bytes), optional=True)
        self._write("pids", "pids.max", str(pids_max))
        self._write("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US))
        self._write("cpu", "cpu.cfs_quota_us", str(quota))
        self._write("devices", "devices.deny", "a")
        for rule in BASE_DEVICES:
            self._write("devices", "devices.allow", rule)
        for dev in devices:
            rdev = dev.stat().st_rdev
            self._write("devices", "devices.allow", f"c {os.major(rdev)}:{os.minor(rdev)} rw")

    def _enable_v2(self, root: Path) -> None:
        """Delegate memory, pids and cpu from the root down to neocloud/."""
        for level in (root, self._main.parent):
            with contextlib.suppress(OSError):
                (level / "cgroup.subtree_control").write_text("+memory +pids +cpu")

    def _write(self, ctrl: str, name: str, value: str, optional: bool = False) -> None:
        try:
            (self.dirs[ctrl] / name).write_text(value)
        except OSError as e:
            if not optional:
                raise SandboxError(f"cgroup {self.dirs[ctrl] / name}: cannot write {value!r}: {e}") from e

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def pids(self) -> list[int]:
        try:
            text = (self._main / "cgroup.procs").read_text()
        except OSError:
            return []
        return sorted(int(p) for p in text.split())

    def empty(self) -> bool:
        return not self.pids()

    def signal(self, sig: int, skip: int | None = None) -> list[int]:
        """Send `sig` to every process of the rank (but `skip`, the sandbox's own leader)."""
        pids = self.pids()
        for pid in pids:
            if pid != skip:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        return pids

    def kill_all(self, timeout_s: float = 5.0) -> list[int]:
        """SIGKILL every process of the rank: cgroup.kill on v2; on v1 freeze first so
        none can fork between the read of cgroup.procs and the kills, then thaw."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while self.pids() and time.monotonic() < deadline:
            seen.update(self.pids())
            if self.version == "v2":
                self._write("", "cgroup.kill", "1", optional=True)
            else:
                self._write("freezer", "freezer.state", "FROZEN", optional=True)
                self._wait_frozen(deadline)
                self.signal(signal.SIGKILL)
                self._write("freezer", "freezer.state", "THAWED", optional=True)
            time.sleep(0.01)
        return sorted(seen)

    def _wait_frozen(self, deadline: float) -> None:
        state = self.dirs["freezer"] / "freezer.state"
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if state.read_text().strip() == "FROZEN":
                    return
            time.sleep(0.005)

    def remove(self, timeout_s: float = 0.5) -> None:
        """rmdir each directory; the kernel may refuse (EBUSY) for a moment after the last exit."""
        deadline = time.monotonic() + timeout_s
        for d in self.dirs.values():
            while d.exists():
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        logger.warning("cgroup %s left behind (reused by the rank's next run)", d)
                        break
                    time.sleep(0.01)


@dataclass(frozen=True)
class Prepared:
    argv: list[str]
    cgroup: RankCgroup
    proof: Proof


class Sandbox:
    """Builds the sandboxed argv of a rank on a node whose probe said `full`."""

    def __init__(
        self,
        caps: Capabilities,
        uid_base: int = UID_BASE,
        uid_count: int = UID_COUNT,
        pids_max: int = DEFAULT_PIDS_MAX,
        default_memory_bytes: int = 0,
        cgroup_root: Path = CGROUP_ROOT,
    ) -> None:
        if not caps.full:
            raise SandboxError(f"this node cannot enforce the sandbox: missing {', '.join(caps.missing)}")
        if uid_base <= 0 or os.getuid() in range(uid_base, uid_base + uid_count):
            raise SandboxError(f"tenant uid range {uid_base}+{uid_count} includes root or the runner's own uid")
        self._caps = caps
        self._uids = (uid_base, uid_count)
        self._pids_max = pids_max
        self._memory = default_memory_bytes
        self._root = cgroup_root

    def command(self, argv: list[str], spec: SandboxSpec) -> Prepared:
        """Create the rank's cgroup and return the argv that runs `argv` inside the sandbox."""
        base, count = self._uids
        if spec.uid_offset is None:
            uid = tenant_uid(spec.tenant, base, count)
        elif 0 <= spec.uid_offset < count:
            uid = base + spec.uid_offset
        else:
            raise SandboxError(f"uid offset {spec.uid_offset} is outside the range {base}+{count}")
        devices = _devices(spec)
        memory = spec.memory_bytes or self._memory
        cgroup = RankCgroup(f"{spec.job_id}-{spec.rank}", self._caps.cgroup, self._root)
        cgroup.create(memory, self._pids_max, spec.cpus, devices)
        # The job's group may create files in its directory (its checkpoint, its data); sticky, so it
        # cannot rename or remove what the runner put there (log, control files); others cannot enter.
        os.chown(spec.job_dir, -1, uid)
        os.chmod(spec.job_dir, 0o1770)
        job_dir = str(spec.job_dir)
        bwrap = [str(shutil.which("bwrap")), *_namespaces(), *_system_binds()]
        for dev in devices:
            bwrap += ["--dev-bind", str(dev), f"/dev/{dev.name}"]
        bwrap += _searchable_parents(spec.job_dir)  # whatever the runner's umask (Ray's: 077)
        bwrap += ["--bind", job_dir, job_dir, "--chdir", job_dir, "--setenv", "HOME", job_dir]
        bwrap += ["--setenv", "TMPDIR", "/tmp", "--"]
        setpriv = [str(shutil.which("setpriv")), *_drop(uid), "--"]
        join = [sys.executable, "-I", "-S", "-c", _JOIN, *cgroup.procs_files(), "--"]
        proof = Proof(
            uid=uid,
            gid=uid,
            devices=tuple(f"/dev/{d.name}" for d in devices),
            memory_bytes=memory,
            pids_max=self._pids_max,
            cpus=max(spec.cpus, 1),
            cgroup=self._caps.cgroup,
            disk_bytes=spec.disk_bytes,
            disk_files=spec.disk_files,
        )
        return Prepared(argv=[*join, *bwrap, *setpriv, *argv], cgroup=cgroup, proof=proof)


@functools.cache
def node_capabilities() -> Capabilities:
    """This node's probe, once per process (a runner's worker, the executor's probe task)."""
    caps = probe()
    if not caps.full:
        logger.warning("this node cannot sandbox tenant ranks: missing %s", ", ".join(caps.missing))
    return caps


@functools.cache
def node_sandbox() -> Sandbox:
    return Sandbox(node_capabilities())
