"""A released job's GPUs wait for NVML's word, fail closed, end to end: an agent
reading the fake pynvml (its /proc a fixture tree) streams over real gRPC to a
scheduler whose controller runs jobs on the in-memory executor."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

from neocloud.agent.gpu.nvml import NvmlBackend
from neocloud.agent.main import Agent
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.server import BackgroundScheduler
from neocloud.scheduler.store.records import JobSpec, JobState
from tests.fakes import fake_pynvml as fp
from tests.fakes.executor import FakeExecutor
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml
from tests.fakes.procfs import CONTAINER_NS, add_process, host_proc
from tests.helpers import wait_until

QUERY = "nvmlDeviceGetComputeRunningProcesses"


def test_released_gpus_stay_held_while_nvml_cannot_list_processes_or_lists_the_jobs(
    scheduler_factory: Callable[..., BackgroundScheduler], agent_factory: Callable[..., Agent], tmp_path: Path
) -> None:
    executor = FakeExecutor(["node-1"])
    sched = scheduler_factory(executor=executor, controller_interval_s=0.05)
    store, controller = sched.scheduler.jobs, sched.scheduler.controller
    assert controller is not None
    nvml = FakeNvml([FakeGpu(f"GPU-{i}0000000-1111-2222-3333-444444444444") for i in range(8)])
    proc = host_proc(tmp_path / "proc")
    agent = agent_factory(
        sched.port, backend=NvmlBackend(nvml, proc_root=proc), metrics_port=0, metrics_host="127.0.0.1"
    )
    gpus = sched.scheduler.telemetry.fleet.nodes
    wait_until(lambda: "node-1" in gpus, what="the agent's hello")
    store.create_tenant("acme")
    store.set_setting("min_runtime_s", "0")
    job_id = store.submit(JobSpec("acme", "r1", JobClass.SPOT, 8, 8, command=("true",))).job_id
    wait_until(lambda: store.get(job_id).state is JobState.RUNNING, what="the job to start")
    (pid,) = executor.jobs[job_id].pids  # as its runner saw it, inside its pod
    add_process(proc, 4242, CONTAINER_NS, (4242, pid))  # NVML's host pid 4242 is that process
    nvml.gpus[0].processes = [(4242, 8 << 30)]

    def held_after_fresh_samples() -> bool:
        """Whether the job's GPUs are still held once every GPU has sampled after
        the release and the controller has stepped on those samples."""
        cleanup = controller.cleanups.get(job_id)
        if cleanup is None:
            return False
        released_us = cleanup.released_us
        assert released_us is not None
        node = gpus["node-1"]
        wait_until(lambda: all(g.last_sample_us > released_us for g in node.gpus.values()), what="fresh samples")
        steps = controller.stats.steps
        wait_until(lambda: controller.stats.steps >= steps + 2, what="two controller steps")
        return job_id in controller.cleanups

    executor.exit(job_id, 0)
    wait_until(lambda: controller.cleanups.get(job_id, None) is not None and bool(executor.released), what="release")
    wait_until(lambda: controller.cleanups[job_id].released_us is not None, what="the Released event")
    # Its process is still on GPU 0, under another pid than the runner saw: matched through its NSpid.
    assert held_after_fresh_samples()
    # It ends, but NVML cannot list GPU 1's processes: unknown is not gone.
    nvml.gpus[1].errors[QUERY] = fp.NVML_ERROR_UNKNOWN
    nvml.gpus[0].processes = []
    assert held_after_fresh_samples()
    assert gpus["node-1"].gpus[nvml.gpus[1].uuid].last_series.processes_unavailable
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=10) as reply:
        unavailable = [line for line in reply.read().decode().splitlines() if "processes_unavailable{" in line]
    assert [line.endswith(" 1.0") for line in unavailable] == [i == 1 for i in range(8)], unavailable
    # NVML answers again and lists nothing of the job: its GPUs are free.
    del nvml.gpus[1].errors[QUERY]
    wait_until(lambda: job_id not in controller.cleanups, what="the GPUs to be freed")
