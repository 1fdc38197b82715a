"""Hostile tenants against the rank sandbox (scheduler/executor/sandbox.py), with real
processes through procs.spawn_sandboxed: each attack must fail, and an ordinary job
on the same node must still run and exit with its own code."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.scheduler.executor import procs, sandbox

CAPS = sandbox.probe()
pytestmark = pytest.mark.skipif(not CAPS.full, reason=f"sandbox primitives missing: {', '.join(CAPS.missing)}")
SECRET = "s3cr3t-victim-token"


class Site:
    """A temp dir laid out like /var/lib/neocloud, with a runner's job dirs under it."""

    def __init__(self, root: Path, box: sandbox.Sandbox) -> None:
        self.root = root
        self.box = box
        self.jobs = root / "jobs"
        for name, text in {
            "scheduler.db": "token table",
            "ca/ca.key": "CA PRIVATE KEY",
            "operator.token": "operator-token",
            "spool/node-1.db": "spool",
            "ray/session_latest/sockets": "raylet",
        }.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, job: str, tenant: str, code: str, **spec: object) -> tuple[subprocess.Popen[bytes], Path]:
        job_dir = self.jobs / job
        job_dir.mkdir(parents=True, exist_ok=True)
        log = job_dir / "rank-0.log"
        env = {**procs.base_env(), "VICTIM_SECRET": SECRET, "SITE": str(self.root)}
        argv = [sys.executable, "-c", textwrap.dedent(code)]
        s = sandbox.SandboxSpec(job_id=job, rank=0, tenant=tenant, job_dir=job_dir, **spec)  # type: ignore[arg-type]
        proc, _ = procs.spawn_sandboxed(argv, env, log, s, self.box)
        self.procs.append(proc)
        return proc, log

    def run(self, job: str, tenant: str, code: str, timeout_s: float = 20.0, **spec: object) -> tuple[int, str]:
        proc, log = self.start(job, tenant, code, **spec)
        rc = proc.wait(timeout=timeout_s)
        stop(proc.pid)
        return rc, log.read_text()


def stop(pid: int) -> None:
    procs.signal_all(pid, procs.KILL)
    deadline = time.monotonic() + 10
    while not procs.group_gone(pid):
        assert time.monotonic() < deadline, f"rank {pid} survives"
        time.sleep(0.02)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path / "site", sandbox.Sandbox(CAPS, pids_max=64))
    yield s
    for p in s.procs:
        if p.poll() is None:
            stop(p.pid)
            p.wait()


def ordinary_job_runs(site: Site) -> None:
    rc, out = site.run("ordinary", "tenant-c", "import os; print('uid', os.getuid()); raise SystemExit(7)")
    assert rc == 7, out
    assert f"uid {sandbox.tenant_uid('tenant-c')}" in out


def test_another_jobs_directory_log_and_the_site_secrets_are_invisible(site: Site) -> None:
    victim, _ = site.start("victim", "tenant-a", "import time; open('data','w').write('v'); time.sleep(30)")
    rc, out = site.run(
        "attacker",
        "tenant-b",
        """
        import os
        site = os.environ['SITE']
        targets = [site + '/jobs/victim/rank-0.log', site + '/jobs/victim/data', site + '/scheduler.db',
                   site + '/ca/ca.key', site + '/operator.token', site + '/spool/node-1.db',
                   site + '/ray/session_latest/sockets', '/etc/shadow', '/root/.ssh', '/var/lib/neocloud']
        for t in targets:
            try:
                open(t).read(); print('READ', t)
            except OSError as e:
                print('denied', t, type(e).__name__)
        print('visible', sorted(os.listdir('/')))
        print('site', sorted(os.listdir(site)), sorted(os.listdir(site + '/jobs')))  # only the way to its own dir
        """,
    )
    assert rc == 0, out
    assert "READ" not in out, out
    assert out.count("denied") == 10, out
    assert "'var'" not in out and "site ['jobs'] ['attacker']" in out, out
    assert victim.poll() is None  # the victim is untouched
    ordinary_job_runs(site)


def test_victims_environ_is_out_of_reach(site: Site) -> None:
    victim, _ = site.start("victim", "tenant-a", "import time; time.sleep(30)")
    rc, out = site.run(
        "attacker",
        "tenant-b",
        f"""
        import os
        found = []
        for pid in [p for p in os.listdir('/proc') if p.isdigit()] + ['{victim.pid}']:
            try:
                if b'{SECRET}' in open(f'/proc/{{pid}}/environ', 'rb').read() and pid != str(os.getpid()):
                    found.append(pid)
            except OSError:
                pass
        print('pids', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), 'found', found)
        """,
    )
    assert rc == 0, out
    assert "found []" in out, out
    assert victim.poll() is None
    ordinary_job_runs(site)


def test_gpu_device_not_given_cannot_be_opened(site: Site, tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    for name, minor in (("nvidia0", 0), ("nvidia1", 1), ("nvidiactl", 255)):
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(195, minor))  # NVIDIA's major, no driver here
        os.chmod(dev / name, 0o666)
    rc, out = site.run(
        "attacker",
        "tenant-b",
        """
        import os
        print('dev', sorted(os.listdir('/dev')))
        for path in ('/dev/nvidia0', '/dev/nvidiactl', '/dev/nvidia1'):
            try:
                os.close(os.open(path, os.O_RDWR)); print('opened', path)
            except OSError as e:
                print(path, e.errno)
        try:
            os.mknod('gpu1', 0o666 | 0o020000, os.makedev(195, 1)); print('MKNOD')
        except OSError as e:
            print('mknod', e.errno)
        """,
        gpu_indices=(0,),
        dev_root=dev,
    )
    assert rc == 0, out
    # Given: the kernel reached the (absent) driver, ENXIO; not given: not there at all, and not creatable.
    assert "/dev/nvidia0 6" in out and "/dev/nvidiactl 6" in out, out
    assert "/dev/nvidia1 2" in out and "mknod 1" in out and "MKNOD" not in out, out
    assert "'nvidia1'" not in out
    ordinary_job_runs(site)


def test_setsid_double_fork_does_not_outlive_cancel(site: Site) -> None:
    proc, log = site.start(
        "escaper",
        "tenant-b",
        """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                open('escaped.pid', 'w').write(str(os.getpid()))
                time.sleep(300)
            os._exit(0)
        time.sleep(300)
        """,
    )
    job_dir = log.parent
    deadline = time.monotonic() + 10
    while not (job_dir / "escaped.pid").exists():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    pids = procs.members(proc.pid)
    assert len(pids) >= 3  # bwrap, its init, the job and the escaped grandchild are all in the cgroup
    stop(proc.pid)  # the runner's cancel: SIGKILL through the cgroup
    proc.wait()
    assert not [p for p in pids if Path(f"/proc/{p}").exists() and procs._stat(Path("/proc"), str(p))[0] != "Z"]  # type: ignore[index]
    ordinary_job_runs(site)


def test_fork_bomb_hits_its_pids_limit_only(site: Site) -> None:
    rc, out = site.run(
        "bomb",
        "tenant-b",
        """
        import os, time
        n = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(30); os._exit(0)
                n += 1
        except OSError as e:
            print('limited after', n, e.errno)
        """,
    )
    assert rc == 0, out
    n = int(out.split("limited after")[1].split()[0])
    assert n < 64, out  # pids_max=64 for the whole rank
    ordinary_job_runs(site)


def test_memory_bomb_kills_only_its_rank(site: Site) -> None:
    rc, out = site.run(
        "hog",
        "tenant-b",
        """
        import sys
        chunks = []
        for i in range(64):
            chunks.append(bytearray(16 << 20)); print('MiB', (i + 1) * 16, flush=True)
        print('SURVIVED')
        """,
        memory_bytes=128 << 20,
    )
    assert "SURVIVED" not in out, out
    assert rc != 0, out
    ordinary_job_runs(site)


def test_proof_names_what_the_rank_was_given(tmp_path: Path) -> None:
    job_dir = tmp_path / "j"
    job_dir.mkdir()
    box = sandbox.Sandbox(CAPS, pids_max=100)
    spec = sandbox.SandboxSpec(job_id="j", rank=0, tenant="acme", job_dir=job_dir, cpus=2, memory_bytes=1 << 30)
    prepared = box.command(["true"], spec)
    prepared.cgroup.remove()
    proof = prepared.proof
    assert proof.uid == sandbox.tenant_uid("acme") >= sandbox.UID_BASE and proof.uid != os.getuid()
    assert (proof.memory_bytes, proof.pids_max, proof.cpus, proof.cgroup) == (1 << 30, 100, 2, CAPS.cgroup)
    assert "--unshare-net" not in prepared.argv and "--unshare-pid" in prepared.argv


def test_runner_files_in_the_job_dir_cannot_be_replaced(site: Site) -> None:
    job_dir = site.jobs / "tamper"
    (job_dir / "control").mkdir(parents=True)
    (job_dir / "control" / "rank-0.preempt").write_text("runner's")
    rc, out = site.run(
        "tamper",
        "tenant-b",
        """
        import os
        open('rank-0.checkpoint', 'w').write('mine')  # its own files it may create
        for op in (lambda: os.rename('control', 'gone'), lambda: os.unlink('rank-0.log'),
                   lambda: open('control/rank-0.preempt', 'w')):
            try:
                op(); print('TAMPERED')
            except OSError as e:
                print('refused', e.errno)
        """,
    )
    assert rc == 0 and "TAMPERED" not in out and out.count("refused") == 3, out
    assert (job_dir / "control" / "rank-0.preempt").read_text() == "runner's"
    assert (job_dir / "rank-0.checkpoint").read_text() == "mine"


def test_job_dir_is_reachable_by_its_absolute_path_under_a_strict_umask(site: Site) -> None:
    """Ray's workers run with umask 077: the directories bwrap makes above the job dir must
    still let the tenant through (else every absolute NEOCLOUD_* path is EACCES)."""
    old = os.umask(0o077)
    try:
        rc, out = site.run("strict", "tenant-b", "import os; open(os.getcwd() + '/made', 'w'); print('ok')")
    finally:
        os.umask(old)
    assert rc == 0 and "ok" in out, out


def test_sigterm_reaches_the_job_not_the_sandbox(site: Site) -> None:
    """A stop's SIGTERM goes to the rank's own processes, so it can checkpoint and exit with
    its code; sent to bwrap it would end the rank with a SIGKILL, unwarned."""
    proc, log = site.start(
        "graceful",
        "tenant-b",
        """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: (print('term', flush=True), sys.exit(3)))
        print('ready', flush=True)
        time.sleep(30)
        """,
    )
    deadline = time.monotonic() + 10
    while "ready" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)
    procs.signal_all(proc.pid, procs.TERM)
    assert proc.wait(timeout=10) == 3 and "term" in log.read_text()
    stop(proc.pid)
