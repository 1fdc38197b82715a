"""Threat (f), a node inflating its energy: the counter-reset flag, a power limit
of 0 and huge jumps never credit more than the GPU model's rated power x time."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neocloud.domain.fleet import NodeState
from neocloud.scheduler.ingest import rated
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.ingest.validate import HARD_POWER_CAP_MW, validate_batch, validate_hello
from neocloud.v1 import telemetry_pb2 as pb

T0 = 1_800_000_000_000_000
H200 = "NVIDIA H200"
UUIDS = ("GPU-00000000-0000-0000-0000-000000000001", "GPU-00000000-0000-0000-0000-000000000002")


def make_hello(limits: tuple[int, ...] = (700_000, 700_000), models: tuple[str, ...] = (H200, H200)) -> pb.Hello:
    return pb.Hello(
        node_id="n1",
        agent_version="1.0",
        backend="nvml",
        stream_epoch=1,
        gpus=[
            pb.GpuInfo(index=i, uuid=UUIDS[i], model=m, memory_total_bytes=1 << 37, power_limit_mw=limit)
            for i, (limit, m) in enumerate(zip(limits, models, strict=True))
        ],
    )


@dataclass
class Reading:
    uuid: str
    t_us: int
    energy_mj: int
    reset: bool = False
    power_mw: int = 0


def send(fleet: Fleet, node: NodeState, seq: int, readings: list[Reading]) -> bool:
    """One batch through validation and, if it passes, into the fleet (as the service does)."""
    batch = pb.Batch(node_id="n1", stream_epoch=1, seq=seq, agent_time_us=max(r.t_us for r in readings))
    for r in readings:
        series = batch.gpus.add(uuid=r.uuid)
        series.timestamp_us.append(r.t_us)
        series.power_mw.append(r.power_mw)
        series.energy.add(timestamp_us=r.t_us, energy_mj=r.energy_mj, counter_reset=r.reset)
    if validate_batch(batch, node) is not None:
        return False
    fleet.apply_batch(node, batch, r.t_us)
    return True


def test_a_reset_flag_cannot_credit_a_terajoule() -> None:
    fleet = Fleet()
    node = fleet.register(make_hello(), T0)
    assert send(fleet, node, 1, [Reading(UUIDS[0], T0, 1_000_000)])
    # 10 s later the node claims a reset and a counter of 10^12 J.
    send(fleet, node, 2, [Reading(UUIDS[0], T0 + 10_000_000, 10**15, reset=True, power_mw=700_000)])
    credited = node.gpus[UUIDS[0]].energy.total_mj
    assert credited <= rated.bound_mw(H200) * rated.SLACK * 10  # mW x s = mJ
    assert fleet.counters.energy_capped == 1


def test_an_honest_reset_is_still_bridged() -> None:
    fleet = Fleet()
    node = fleet.register(make_hello(), T0)
    assert send(fleet, node, 1, [Reading(UUIDS[0], T0, 9_000_000_000, power_mw=500_000)])
    assert send(fleet, node, 2, [Reading(UUIDS[0], T0 + 10_000_000, 1_000_000, reset=True, power_mw=500_000)])
    assert node.gpus[UUIDS[0]].energy.total_mj == 5_000_000  # power x span, as before
    assert fleet.counters.energy_capped == 0


def test_resets_are_rate_limited() -> None:
    fleet = Fleet()
    node = fleet.register(make_hello(), T0)
    t, seq = T0, 1
    assert send(fleet, node, seq, [Reading(UUIDS[0], t, 0)])
    credits = []
    for _ in range(rated.MAX_BRIDGED_RESETS_PER_HOUR + 3):
        seq, t = seq + 1, t + 60_000_000
        before = node.gpus[UUIDS[0]].energy.total_mj
        assert send(fleet, node, seq, [Reading(UUIDS[0], t, 1000, reset=True, power_mw=500_000)])
        credits.append(node.gpus[UUIDS[0]].energy.total_mj - before)
    assert all(c > 0 for c in credits[: rated.MAX_BRIDGED_RESETS_PER_HOUR])
    assert credits[rated.MAX_BRIDGED_RESETS_PER_HOUR :] == [0, 0, 0]
    assert node.gpus[UUIDS[0]].energy.resets == rated.MAX_BRIDGED_RESETS_PER_HOUR + 3  # every one counted
    assert fleet.counters.energy_capped == 3


def test_a_power_limit_of_zero_or_absurd_is_refused_naming_the_field() -> None:
    for limit in (0, HARD_POWER_CAP_MW + 1):
        reason = validate_hello(make_hello((limit, 700_000)))
        assert reason is not None and "power_limit_mw" in reason


def test_the_rate_check_uses_the_rated_power_not_the_nodes_claim() -> None:
    fleet = Fleet()
    node = fleet.register(make_hello((HARD_POWER_CAP_MW, HARD_POWER_CAP_MW)), T0)
    assert send(fleet, node, 1, [Reading(UUIDS[0], T0, 0)])
    # 4 kW for a second on a 700 W H200: beyond twice its rated power, refused whatever it claims.
    assert not send(fleet, node, 2, [Reading(UUIDS[0], T0 + 1_000_000, 4_000_000)])
    assert node.gpus[UUIDS[0]].energy.total_mj == 0


def test_the_rated_table() -> None:
    assert rated.bound_mw("NVIDIA H200") == 700_000
    assert rated.bound_mw("NVIDIA H100 80GB HBM3") == 700_000
    assert rated.bound_mw("NVIDIA B200") == 1_000_000
    assert rated.bound_mw("NVIDIA GB200") == 1_200_000
    assert rated.bound_mw("something new") == rated.UNKNOWN_MODEL_MW


step = st.tuples(
    st.sampled_from(UUIDS),
    st.integers(0, 3_600_000_000),  # µs since the GPU's last reading
    st.one_of(
        st.integers(0, 10**6),  # a plausible rise
        st.integers(-(10**9), -1),  # backwards
        st.integers(10**9, 10**15),  # a huge jump
    ),
    st.booleans(),  # the reset flag
    st.integers(0, HARD_POWER_CAP_MW),  # the power claimed with it
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.tuples(st.integers(0, HARD_POWER_CAP_MW + 1), st.integers(0, HARD_POWER_CAP_MW + 1)),
    st.tuples(st.sampled_from((H200, "NVIDIA B200", "Mystery GPU")), st.sampled_from((H200, "Mystery GPU"))),
    st.lists(st.lists(step, min_size=1, max_size=4), min_size=1, max_size=25),
)
def test_no_sequence_credits_more_than_rated_power_times_time(
    limits: tuple[int, int], models: tuple[str, str], batches: list[list[tuple[str, int, int, bool, int]]]
) -> None:
    hello = make_hello(limits, models)
    if validate_hello(hello) is not None:
        return
    fleet = Fleet()
    node = fleet.register(hello, T0)
    clock = dict.fromkeys(UUIDS, T0)
    counter = dict.fromkeys(UUIDS, 10**9)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for seq, steps in enumerate(batches, 1):
        readings = []
        for uuid, dt, rise, reset, power in steps:
            if any(r.uuid == uuid for r in readings):
                continue
            t, value = clock[uuid] + dt, max(0, counter[uuid] + rise)
            readings.append(Reading(uuid, t, value, reset, power))
        if send(fleet, node, seq, readings):
            for r in readings:
                clock[r.uuid], counter[r.uuid] = r.t_us, r.energy_mj
                first.setdefault(r.uuid, r.t_us)
                last[r.uuid] = r.t_us
    for uuid, gpu in node.gpus.items():
        elapsed_s = (last.get(uuid, T0) - first.get(uuid, T0)) / 1e6
        # The only tolerance is the documented headroom over the rated power (rated.SLACK).
        assert gpu.energy.total_mj <= rated.bound_mw(gpu.model) * rated.SLACK * elapsed_s + 1


def test_renaming_a_gpu_to_a_larger_model_does_not_raise_its_cap() -> None:
    fleet = Fleet()
    node = fleet.register(make_hello(models=("NVIDIA L4", "NVIDIA L4")), T0)
    node = fleet.register(make_hello(models=("NVIDIA GB300", "NVIDIA GB300")), T0 + 1)  # the same GPUs, renamed
    assert node.gpus[UUIDS[0]].model == "NVIDIA L4"
    assert send(fleet, node, 1, [Reading(UUIDS[0], T0, 0)])
    send(fleet, node, 2, [Reading(UUIDS[0], T0 + 10_000_000, 10**10, reset=True, power_mw=70_000)])
    assert node.gpus[UUIDS[0]].energy.total_mj <= rated.bound_mw("NVIDIA L4") * rated.SLACK * 10
