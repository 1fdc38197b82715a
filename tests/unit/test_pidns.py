"""Reading a process's PID namespace and NSpid chain from a fixture procfs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from neocloud.agent.gpu.pidns import INIT_PID_NAMESPACE, ProcPids, host_pids, namespace_of, nspid_chain
from neocloud.domain.gpu import GpuProcess
from tests.fakes.procfs import CONTAINER_NS, add_process, host_proc


def test_link_and_status_parsing() -> None:
    assert namespace_of("pid:[4026531836]") == INIT_PID_NAMESPACE
    assert namespace_of("net:[4026531840]") == 0 and namespace_of("pid:[]") == 0
    assert nspid_chain(b"Name:\tx\nNSpid:\t4242\t7\nPPid:\t1\n") == (4242, 7)
    assert nspid_chain(b"Name:\tx\nPid:\t4242\n") == ()  # kernels before 4.1 have no NSpid line
    assert nspid_chain(b"NSpid:\t4242\tx\n") == ()
    assert nspid_chain(b"NSpid:\t" + b"\t".join([b"9"] * 34) + b"\n") == ()  # deeper than the kernel nests


def test_identity_of_host_and_container_processes(tmp_path: Path) -> None:
    proc = host_proc(tmp_path / "proc")
    add_process(proc, 4242, CONTAINER_NS, (4242, 7))
    add_process(proc, 5000, INIT_PID_NAMESPACE, (5000,))
    add_process(proc, 6000, CONTAINER_NS, (17, 7))  # a procfs of another namespace than the pids given
    pids = ProcPids(proc)
    assert pids.own_namespace() == INIT_PID_NAMESPACE
    assert pids.identity(4242) == (CONTAINER_NS, (4242, 7))
    assert pids.identity(5000) == (INIT_PID_NAMESPACE, (5000,))
    assert pids.identity(6000) == (0, ())
    assert pids.identity(9999) == (0, ())  # exited since NVML listed it
    got = pids.annotate([GpuProcess(4242, 1), GpuProcess(9999, 2)])
    assert got == (GpuProcess(4242, 1, CONTAINER_NS, (4242, 7)), GpuProcess(9999, 2))


def test_an_unreadable_namespace_link_still_gives_the_chain(tmp_path: Path) -> None:
    proc = host_proc(tmp_path / "proc")
    add_process(proc, 4242, CONTAINER_NS, (4242, 7))
    (proc / "4242" / "ns" / "pid").unlink()  # what EACCES on another user's link amounts to (no ptrace access)
    assert ProcPids(proc).identity(4242) == (0, (4242, 7))
    (proc / "4242" / "status").write_text("Name:\tpython\n")  # a kernel without NSpid
    assert ProcPids(proc).identity(4242) == (0, ())


def test_nvml_pids_are_mapped_only_from_the_host_namespace(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert host_pids(host_proc(tmp_path / "host")) is not None
    with caplog.at_level(logging.WARNING, logger="neocloud.agent.gpu.pidns"):
        assert host_pids(host_proc(tmp_path / "pod", agent_ns=CONTAINER_NS)) is None
        assert host_pids(tmp_path / "nothing") is None
    assert sum("hostPID" in r.message for r in caplog.records) == 2
