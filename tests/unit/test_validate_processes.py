"""Ingest refuses process identities /proc could not have given."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.ingest.validate import validate_batch
from neocloud.v1 import telemetry_pb2 as pb
from tests.fakes.procfs import CONTAINER_NS

T0 = 1_800_000_000_000_000


def batch_and_check() -> tuple[pb.Batch, Callable[[pb.Batch], str | None]]:
    backend = SimBackend("n1", 2, clock_us=lambda: T0)  # idle: no process listed
    node = Fleet().register(hello("n1", 7, backend.inventory(), "sim").hello, T0)
    batch = build_batch("n1", backend.inventory(), [backend.read(True)], T0 + 10**9)
    return batch, lambda b: validate_batch(b, node)


def add(batch: pb.Batch, pid: int, namespace: int, *chain: int) -> None:
    batch.gpus[0].processes.add(pid=pid, used_memory_bytes=1, pid_namespace=namespace, namespace_pids=chain)


@pytest.mark.parametrize(
    "identity",
    [(0,), (0, 4242, 7), (CONTAINER_NS, 4242), (CONTAINER_NS, 4242, 7), (CONTAINER_NS, 4242, *range(1, 33))],
)
def test_identities_the_agent_sends_pass(identity: tuple[int, ...]) -> None:
    batch, check = batch_and_check()
    add(batch, 4242, *identity)
    assert check(batch) is None


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: add(b, 4242, CONTAINER_NS), "without its NSpid"),
        (lambda b: add(b, 4242, CONTAINER_NS, 17, 7), "impossible"),  # the chain starts from the host's pid
        (lambda b: add(b, 4242, CONTAINER_NS, 4242, *range(1, 34)), "impossible"),  # deeper than the kernel nests
        (lambda b: add(b, 4242, CONTAINER_NS, 4242, 0), "impossible"),  # a pid is never 0
        (lambda b: add(b, 4242, 2**63, 4242), "absurd"),
    ],
)
def test_contradictory_process_lists_are_refused(mutate: Callable[[pb.Batch], object], reason: str) -> None:
    batch, check = batch_and_check()
    mutate(batch)
    problem = check(batch)
    assert problem is not None and reason in problem, problem


def test_unavailable_lists_pass_empty_or_as_far_as_seen() -> None:
    batch, check = batch_and_check()
    batch.gpus[1].processes_unavailable = True  # NVML failed
    batch.gpus[0].processes_unavailable = True  # an agent outside the host's PID namespace
    add(batch, 4242, 0)
    assert check(batch) is None
