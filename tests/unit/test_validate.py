from __future__ import annotations

import pytest

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.domain.fleet import NodeState
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.ingest.validate import validate_batch, validate_hello
from neocloud.v1 import telemetry_pb2 as pb

T0 = 1_800_000_000_000_000


@pytest.fixture
def backend() -> SimBackend:
    ticks = iter(range(1, 10**9))
    return SimBackend("n1", 2, load=0.5, clock_us=lambda: T0 + next(ticks) * 1_000_000)


def node_for(backend: SimBackend) -> NodeState:
    return Fleet().register(hello("n1", 7, backend.inventory(), "sim").hello, T0)


def good_batch(backend: SimBackend) -> pb.Batch:
    return build_batch("n1", backend.inventory(), [backend.read(True)], T0 + 10**9)


def test_a_good_hello_and_batch_pass(backend: SimBackend) -> None:
    assert validate_hello(hello("n1", 7, backend.inventory(), "sim").hello) is None
    assert validate_batch(good_batch(backend), node_for(backend)) is None


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: setattr(h, "node_id", "../etc"), "node id"),
        (lambda h: setattr(h, "node_id", ""), "node id"),
        (lambda h: setattr(h, "stream_epoch", 0), "stream_epoch"),
        (lambda h: setattr(h, "backend", "gpu-farm"), "backend"),
        (lambda h: h.ClearField("gpus"), "1-64 GPUs"),
        (lambda h: setattr(h.gpus[1], "uuid", h.gpus[0].uuid), "unique"),
        (lambda h: setattr(h.gpus[0], "uuid", "not-a-uuid"), "NVML UUID"),
        (lambda h: setattr(h.gpus[0], "power_limit_mw", 10**9), "absurd"),
        (lambda h: setattr(h, "agent_version", "x" * 100), "version"),
    ],
)
def test_bad_hellos_are_named(backend: SimBackend, mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    msg = hello("n1", 7, backend.inventory(), "sim").hello
    mutate(msg)
    problem = validate_hello(msg)
    assert problem is not None and reason in problem


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: setattr(b.gpus[0], "uuid", "GPU-other"), "not in this node's inventory"),
        (lambda b: b.gpus[0].power_mw.append(1), "column power_mw"),
        (lambda b: b.gpus[0].power_mw.__setitem__(0, 1_500_000), "beyond twice"),
        (lambda b: b.gpus[0].gpu_util_percent.__setitem__(0, 101), "utilisation above 100%"),
        (lambda b: b.gpus[0].memory_used_bytes.__setitem__(0, 10**15), "exceeds the GPU"),
        (lambda b: b.gpus[0].temperature_c.__setitem__(0, 400), "temperature"),
        (lambda b: b.gpus[0].timestamp_us.__setitem__(0, T0 + 10**10), "after the batch was sealed"),
        (lambda b: b.gpus[0].energy[0].__setattr__("energy_mj", 2**63), "absurd"),
        (lambda b: b.gpus[0].power_sample_us.append(1), "power buffer"),
        # Metering cuts energy by these times: a buffer from the future or going backwards is refused.
        (lambda b: (b.gpus[0].power_sample_us.extend([T0 + 10**10]), b.gpus[0].power_sample_mw.extend([1])), "after"),
        (
            lambda b: (b.gpus[0].power_sample_us.extend([T0, T0 - 1]), b.gpus[0].power_sample_mw.extend([1, 1])),
            "backwards",
        ),
        (lambda b: b.events.add(uuid="GPU-x", kind=1), "not in this node's inventory"),
        (lambda b: b.events.add(uuid=b.gpus[0].uuid, kind=99), "unknown kind"),
        (lambda b: b.gpus[0].processes.add(pid=0), "plausible"),
    ],
)
def test_absurd_batches_are_named(backend: SimBackend, mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    batch = good_batch(backend)
    mutate(batch)
    problem = validate_batch(batch, node_for(backend))
    assert problem is not None and reason in problem


def test_energy_may_not_rise_faster_than_power_allows(backend: SimBackend) -> None:
    node = node_for(backend)
    first = good_batch(backend)
    Fleet().apply_batch(node, first, T0)
    second = good_batch(backend)
    assert validate_batch(second, node) is None
    second.gpus[0].energy[0].energy_mj += 10**9  # a megajoule in a second
    problem = validate_batch(second, node)
    assert problem is not None and "more than twice the power limit" in problem


def test_time_may_not_go_back_across_batches(backend: SimBackend) -> None:
    node = node_for(backend)
    later = good_batch(backend)
    earlier = build_batch("n1", backend.inventory(), [backend.read(True)], T0 + 10**9)
    for s in earlier.gpus:
        s.timestamp_us[0] = 5
    Fleet().apply_batch(node, later, T0)
    problem = validate_batch(earlier, node)
    assert problem is not None and "before the previous batch" in problem
