from __future__ import annotations

from pathlib import Path

import pytest

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu.nvml import NvmlBackend
from neocloud.agent.gpu.pidns import INIT_PID_NAMESPACE
from neocloud.agent.gpu.sim import SimBackend
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.ingest.validate import validate_batch
from neocloud.scheduler.inventory import may_be_ours, node_views, processes_gone
from neocloud.scheduler.liveness import AGENT_LOST_AFTER_S, Liveness
from neocloud.v1 import telemetry_pb2 as pb
from tests.fakes import fake_pynvml as fp
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml
from tests.fakes.procfs import CONTAINER_NS, NESTED_NS, add_process, host_proc

T0_US = 1_800_000_000_000_000


def fleet_with(*nodes: str) -> tuple[Fleet, dict[str, SimBackend]]:
    fleet = Fleet()
    backends = {}
    for node_id in nodes:
        backend = SimBackend(node_id, 4, load=0.5, clock_us=lambda: T0_US)
        node = fleet.register(hello(node_id, 1, backend.inventory(), "sim").hello, T0_US)
        node.connected = True
        batch = build_batch(node_id, backend.inventory(), [backend.read(True)], T0_US)
        batch.seq = 1
        fleet.apply_batch(node, batch, T0_US)
        backends[node_id] = backend
    return fleet, backends


def test_views_exclude_unhealthy_awaiting_clean_and_dead_ray_nodes() -> None:
    fleet, backends = fleet_with("n1", "n2", "n3")
    uuids = [g.uuid for g in backends["n1"].inventory()]
    fleet.nodes["n1"].gpus[uuids[0]].unhealthy_reason = "XID 79"
    views = {v.node_id: v for v in node_views(fleet, T0_US / 1e6, {"n1", "n2"}, {"n2"}, {uuids[1]})}
    assert views["n1"].placeable == frozenset(uuids[2:])
    assert views["n1"].gpus == tuple(uuids) and views["n1"].gpu_model == "NVIDIA H200"
    assert 4 * 300 < views["n1"].power_draw_w < 4 * 450
    assert views["n2"].cordoned and len(views["n2"].placeable) == 4
    assert views["n3"].placeable == frozenset()  # no Ray worker on it


def test_a_lost_agent_makes_its_node_unplaceable_but_a_short_restart_does_not() -> None:
    fleet, _ = fleet_with("n1")
    fleet.nodes["n1"].connected = False
    now = T0_US / 1e6
    assert len(node_views(fleet, now + 5, None, (), ())[0].placeable) == 4
    assert node_views(fleet, now + AGENT_LOST_AFTER_S + 1, None, (), ())[0].placeable == frozenset()


def test_a_node_within_a_restart_grace_keeps_its_work_but_takes_nothing_new() -> None:
    fleet, _ = fleet_with("n1")
    fleet.nodes["n1"].connected = False
    restart = T0_US / 1e6 + 600
    liveness = Liveness.after_restart(T0_US / 1e6, restart)
    (view,) = node_views(fleet, restart + AGENT_LOST_AFTER_S + 1, None, (), (), liveness)
    assert len(view.placeable) == 4 and view.cordoned  # held GPUs stay placeable: no preemption
    (view,) = node_views(fleet, restart + liveness.grace_s + 1, None, (), (), liveness)
    assert view.placeable == frozenset() and not view.cordoned


def test_processes_gone_needs_a_fresh_sample_without_the_pids() -> None:
    fleet, backends = fleet_with("n1")
    backend = backends["n1"]
    uuids = [g.uuid for g in backend.inventory()]
    sim_pid = 10_000  # the sim's process on GPU 0
    assert not processes_gone(fleet, uuids[:1], {sim_pid}, T0_US - 1)
    assert not processes_gone(fleet, uuids[:1], {123}, T0_US)  # no sample after the release yet
    assert processes_gone(fleet, uuids[:1], {123}, T0_US - 1)


# --- process checks across PID namespaces, failing closed ------------------------------------------------

POD_NS, OTHER_NS = CONTAINER_NS, CONTAINER_NS + 1


def proc(pid: int, namespace: int = 0, *chain: int) -> pb.GpuProcess:
    return pb.GpuProcess(pid=pid, used_memory_bytes=1 << 30, pid_namespace=namespace, namespace_pids=chain)


@pytest.mark.parametrize(
    ("process", "pids", "namespaces", "ours"),
    [
        # Runner and job in the host's namespace: by host pid, as NVML reports it.
        (proc(4242, INIT_PID_NAMESPACE, 4242), {4242}, {INIT_PID_NAMESPACE}, True),
        (proc(4243, INIT_PID_NAMESPACE, 4243), {4242}, {INIT_PID_NAMESPACE}, False),
        # Runner in a pod: the pid it saw is the last of the chain (NSpid "4242 7").
        (proc(4242, POD_NS, 4242, 7), {7}, {POD_NS}, True),
        (proc(4242, POD_NS, 4242, 7), {4242}, {POD_NS}, False),  # the host pid means nothing in the pod
        (proc(4242, POD_NS, 4242, 8), {7}, {POD_NS}, False),
        # A namespace no runner was in (nested below the pod's, or a stranger's): any level counts.
        (proc(4242, NESTED_NS, 4242, 7, 1), {7}, {POD_NS}, True),
        (proc(4242, OTHER_NS, 4242, 9), {7}, {POD_NS}, False),
        (proc(4242, POD_NS, 4242, 7), {7}, set(), True),  # runners' namespaces unknown
        (proc(4242, 0, 4242, 7), {7}, {POD_NS}, True),  # its namespace unknown (an agent without ptrace access)
        (proc(4242, 0, 4242, 7), {9}, {POD_NS}, False),
        # The agent could not read who it is: it may be the job's.
        (proc(4242), {7}, {POD_NS}, True),
        (proc(4242), set(), set(), True),
    ],
)
def test_may_be_ours(process: pb.GpuProcess, pids: set[int], namespaces: set[int], ours: bool) -> None:
    assert may_be_ours(process, pids, namespaces) is ours


class NvmlNode:
    """One node whose agent reads the fake pynvml, with /proc a fixture tree, into a fleet."""

    def __init__(self, tmp_path: Path) -> None:
        self.proc = host_proc(tmp_path / "proc")
        self.nvml = FakeNvml([FakeGpu(f"GPU-{i}0000000-1111-2222-3333-444444444444") for i in range(2)])
        self.now_us = T0_US
        self.backend = NvmlBackend(self.nvml, clock_us=lambda: self.now_us, proc_root=self.proc)
        self.uuids = [g.uuid for g in self.backend.inventory()]
        self.fleet = Fleet()
        self.node = self.fleet.register(hello("n1", 1, self.backend.inventory(), "nvml").hello, T0_US)
        self.seq = 0

    def report(self) -> None:
        self.now_us += 1_000_000
        self.seq += 1
        batch = build_batch("n1", self.backend.inventory(), [self.backend.read(False)], self.now_us)
        batch.seq = self.seq
        assert validate_batch(batch, self.node) is None
        self.fleet.apply_batch(self.node, batch, self.now_us)


def test_a_job_in_a_pod_is_seen_on_its_gpu_until_it_is_gone(tmp_path: Path) -> None:
    n = NvmlNode(tmp_path)
    add_process(n.proc, 4242, POD_NS, (4242, 7))  # the runner saw it as pid 7 in its pod
    n.nvml.gpus[0].processes = [(4242, 8 << 30)]
    n.report()
    released_us = n.now_us
    n.report()
    # Before namespaces pid 7 was looked for among host pids, found nowhere, and the GPU freed.
    assert not processes_gone(n.fleet, n.uuids, {7}, released_us, {POD_NS})
    assert processes_gone(n.fleet, n.uuids, {8}, released_us, {POD_NS})
    n.nvml.gpus[0].processes = []
    n.report()
    assert processes_gone(n.fleet, n.uuids, {7}, released_us, {POD_NS})


@pytest.mark.parametrize("code", [fp.NVML_ERROR_UNKNOWN, fp.NVML_ERROR_NOT_SUPPORTED])
def test_a_gpu_whose_processes_nvml_cannot_list_is_never_proven_free(tmp_path: Path, code: int) -> None:
    n = NvmlNode(tmp_path)
    n.report()
    released_us = n.now_us
    n.nvml.gpus[1].errors["nvmlDeviceGetComputeRunningProcesses"] = code
    n.report()
    assert n.node.gpus[n.uuids[1]].last_series.processes_unavailable  # type: ignore[union-attr]
    assert not processes_gone(n.fleet, n.uuids, {7}, released_us)  # unknown is not gone
    assert processes_gone(n.fleet, n.uuids[:1], {7}, released_us)
    del n.nvml.gpus[1].errors["nvmlDeviceGetComputeRunningProcesses"]
    n.report()
    # An error passes; NotSupported is for good, so that GPU stays held (the agent says so once).
    assert processes_gone(n.fleet, n.uuids, {7}, released_us) is (code == fp.NVML_ERROR_UNKNOWN)


def test_a_process_the_agent_cannot_identify_keeps_the_gpu_held(tmp_path: Path) -> None:
    n = NvmlNode(tmp_path)
    n.nvml.gpus[0].processes = [(4242, 8 << 30)]  # no /proc entry: exited, or not the agent's to read
    n.report()
    released_us = n.now_us
    n.report()
    assert not processes_gone(n.fleet, n.uuids, {7}, released_us, {POD_NS})
