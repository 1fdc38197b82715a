"""NvmlBackend against the scripted fake pynvml, and the fake against real pynvml."""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest

from neocloud.agent.convert import build_batch, strip_raw_samples
from neocloud.agent.gpu.nvml import NvmlBackend
from neocloud.agent.gpu.types import BackendError
from neocloud.domain.gpu import GpuProcess, HealthKind
from tests.fakes import fake_pynvml as fp
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml
from tests.fakes.procfs import CONTAINER_NS, add_process, host_proc

UUIDS = ["GPU-00000000-1111-2222-3333-444444444444", "GPU-55555555-6666-7777-8888-999999999999"]


def counting_clock(step_us: int = 1000) -> Callable[[], int]:
    ticks = iter(range(1, 10**9))
    return lambda: 1_700_000_000_000_000 + next(ticks) * step_us


def two_gpus(**first: Any) -> list[FakeGpu]:
    return [FakeGpu(UUIDS[0], **first), FakeGpu(UUIDS[1], power_mw=650_000, gpu_util_percent=99)]


@pytest.fixture
def fake() -> FakeNvml:
    return FakeNvml(two_gpus())


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """The agent's /proc: a fixture tree, so no real pid of this machine answers."""
    return host_proc(tmp_path / "proc")


@pytest.fixture
def backend(fake: FakeNvml, proc: Path) -> Iterator[NvmlBackend]:
    b = NvmlBackend(fake, clock_us=counting_clock(), proc_root=proc)
    yield b
    b.close()


def test_inventory_lists_every_gpu_in_index_order(backend: NvmlBackend) -> None:
    inv = backend.inventory()
    assert [(g.index, g.uuid, g.model) for g in inv] == [(0, UUIDS[0], "NVIDIA H200"), (1, UUIDS[1], "NVIDIA H200")]
    assert inv[0].memory_total_bytes == 150_754_820_096
    assert inv[0].power_limit_mw == 700_000
    assert backend.name == "nvml"


def test_inventory_decodes_bytes_and_falls_back_for_the_power_limit() -> None:
    gpus = two_gpus(unsupported={"nvmlDeviceGetEnforcedPowerLimit"}, power_limit_mw=600_000)
    gpus[1].unsupported |= {"nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPowerManagementLimit"}
    b = NvmlBackend(FakeNvml(gpus, bytes_strings=True))
    inv = b.inventory()
    assert inv[0].uuid == UUIDS[0] and inv[0].model == "NVIDIA H200"
    assert [g.power_limit_mw for g in inv] == [600_000, 0]
    b.close()


def test_a_read_reports_the_cheap_fields_of_every_gpu(fake: FakeNvml, backend: NvmlBackend) -> None:
    fake.gpus[0].processes = [(4242, 8 << 30), (4343, None)]
    r = backend.read(read_energy=False)
    first, second = r.samples
    assert first.uuid == UUIDS[0] and second.uuid == UUIDS[1]
    assert first.power_mw == 77_000 and second.power_mw == 650_000
    assert (first.gpu_util_percent, first.memory_util_percent, second.gpu_util_percent) == (0, 0, 99)
    assert first.memory_used_bytes == 644_939_776
    assert (first.temperature_c, first.sm_clock_mhz, first.throttle_reasons) == (31, 345, 1)
    # A process whose memory the driver cannot tell counts as 0 bytes.
    assert first.processes == (GpuProcess(4242, 8 << 30), GpuProcess(4343, 0))
    assert (first.ecc_corrected_total, first.ecc_uncorrected_total) == (0, 0)
    # One clock reading per GPU read, in order.
    assert first.timestamp_us < second.timestamp_us
    assert r.energy == [] and r.events == [] and r.power_samples == []


def test_the_energy_counter_is_read_only_when_asked(fake: FakeNvml, backend: NvmlBackend) -> None:
    backend.read(read_energy=False)
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 0
    r = backend.read(read_energy=True)
    assert [(e.uuid, e.energy_mj, e.counter_reset) for e in r.energy] == [
        (UUIDS[0], 3_482_120, False),
        (UUIDS[1], 3_482_120, False),
    ]
    assert r.energy[0].timestamp_us == r.samples[0].timestamp_us
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 2
    fake.advance_energy(0, 77_000)
    fake.reset_energy(1)
    r = backend.read(read_energy=True)
    # Resets are left to the sampler to flag.
    assert [(e.energy_mj, e.counter_reset) for e in r.energy] == [(3_559_120, False), (0, False)]


def test_a_field_one_gpu_does_not_support_is_none_and_never_asked_again(
    fake: FakeNvml, backend: NvmlBackend, caplog: pytest.LogCaptureFixture
) -> None:
    fake.gpus[0].unsupported |= {"nvmlDeviceGetTemperature", "nvmlDeviceGetTotalEccErrors"}
    fake.gpus[0].errors["nvmlDeviceGetClockInfo"] = fp.NVML_ERROR_FUNCTION_NOT_FOUND
    with caplog.at_level(logging.INFO, logger="neocloud.agent.gpu.nvml"):
        for _ in range(3):
            first, second = backend.read(read_energy=False).samples
            assert first.temperature_c is None and first.sm_clock_mhz is None
            assert first.ecc_corrected_total is None and first.ecc_uncorrected_total is None
            assert first.power_mw == 77_000
            assert (second.temperature_c, second.sm_clock_mhz, second.ecc_uncorrected_total) == (31, 345, 0)
    assert fake.calls_by_gpu["nvmlDeviceGetTemperature", 0] == 1
    assert fake.calls_by_gpu["nvmlDeviceGetClockInfo", 0] == 1
    assert fake.calls_by_gpu["nvmlDeviceGetTotalEccErrors", 0] == 2  # corrected and uncorrected, once each
    assert fake.calls_by_gpu["nvmlDeviceGetTemperature", 1] == 3
    notes = [r for r in caplog.records if "not asking again" in r.getMessage()]
    assert len(notes) == 4 and all(r.levelno == logging.INFO for r in notes)


@pytest.mark.parametrize("code", [fp.NVML_ERROR_UNKNOWN, fp.NVML_ERROR_NO_PERMISSION])
def test_a_process_list_nvml_cannot_give_is_unavailable_not_empty(
    fake: FakeNvml, backend: NvmlBackend, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    fake.gpus[0].processes = [(4242, 8 << 30)]
    fake.gpus[0].errors["nvmlDeviceGetComputeRunningProcesses"] = code
    with caplog.at_level(logging.WARNING, logger="neocloud.agent.gpu.nvml"):
        for _ in range(3):
            first, second = backend.read(read_energy=False).samples
            # Before, a failed query read as "no processes", and the scheduler freed the GPU.
            assert first.processes == () and first.processes_unavailable
            assert second.processes == () and not second.processes_unavailable
    assert len(caplog.records) == 1 and "nvmlDeviceGetComputeRunningProcesses" in caplog.records[0].getMessage()
    del fake.gpus[0].errors["nvmlDeviceGetComputeRunningProcesses"]
    first, _ = backend.read(read_energy=False).samples
    assert first.processes == (GpuProcess(4242, 8 << 30),) and not first.processes_unavailable


def test_a_gpu_that_cannot_list_processes_says_so_in_every_sample_and_warns_once(
    fake: FakeNvml, backend: NvmlBackend, caplog: pytest.LogCaptureFixture
) -> None:
    fake.gpus[1].unsupported.add("nvmlDeviceGetComputeRunningProcesses")
    with caplog.at_level(logging.INFO, logger="neocloud.agent.gpu.nvml"):
        samples = [backend.read(read_energy=False).samples[1] for _ in range(3)]
    assert all(s.processes == () and s.processes_unavailable for s in samples)
    assert fake.calls_by_gpu["nvmlDeviceGetComputeRunningProcesses", 1] == 1  # NotSupported is for good
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "does not report processes" in warning.getMessage() and UUIDS[1] in warning.getMessage()


def test_processes_carry_their_pid_namespace_from_the_agents_proc(
    fake: FakeNvml, backend: NvmlBackend, proc: Path
) -> None:
    add_process(proc, 4242, CONTAINER_NS, (4242, 7))  # a job in a pod, pid 7 there
    fake.gpus[0].processes = [(4242, 8 << 30), (4343, None)]  # 4343: gone from /proc already
    first, _ = backend.read(read_energy=False).samples
    assert first.processes == (GpuProcess(4242, 8 << 30, CONTAINER_NS, (4242, 7)), GpuProcess(4343, 0))
    batch = build_batch("n1", backend.inventory(), [backend.read(read_energy=False)], 0)
    (container, unknown) = batch.gpus[0].processes
    assert (container.pid, container.pid_namespace, list(container.namespace_pids)) == (4242, CONTAINER_NS, [4242, 7])
    assert (unknown.pid, unknown.pid_namespace, list(unknown.namespace_pids)) == (4343, 0, [])


def test_an_agent_outside_the_host_pid_namespace_sends_incomplete_lists_without_identity(
    tmp_path: Path, fake: FakeNvml
) -> None:
    proc = host_proc(tmp_path / "pod-proc", agent_ns=CONTAINER_NS)  # deployed without hostPID
    add_process(proc, 4242, CONTAINER_NS, (4242,))  # a process of the pod's that merely shares the number
    fake.gpus[0].processes = [(4242, 1 << 30)]
    b = NvmlBackend(fake, clock_us=counting_clock(), proc_root=proc)
    first, second = b.read(read_energy=False).samples
    # NVML shows such an agent only its own namespace's processes: an empty list there proves nothing.
    assert first.processes == (GpuProcess(4242, 1 << 30),) and first.processes_unavailable
    assert second.processes == () and second.processes_unavailable
    b.close()


def test_unavailable_processes_reach_the_wire_and_leave_with_the_raw_samples(
    fake: FakeNvml, backend: NvmlBackend
) -> None:
    fake.gpus[0].errors["nvmlDeviceGetComputeRunningProcesses"] = fp.NVML_ERROR_UNKNOWN
    batch = build_batch("n1", backend.inventory(), [backend.read(read_energy=False)], 0)
    assert [s.processes_unavailable for s in batch.gpus] == [True, False]
    strip_raw_samples(batch)  # a spool under pressure: no sample, so nothing said about the last one
    assert [s.processes_unavailable for s in batch.gpus] == [False, False]


def test_throttle_reasons_fall_back_to_the_old_name_when_pynvml_lacks_the_new() -> None:
    fake = FakeNvml(
        two_gpus(throttle_reasons=fp.nvmlClocksEventReasonSwPowerCap), hidden={"nvmlDeviceGetCurrentClocksEventReasons"}
    )
    b = NvmlBackend(fake)
    assert b.read(read_energy=False).samples[0].throttle_reasons == fp.nvmlClocksEventReasonSwPowerCap
    assert fake.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 2
    assert fake.calls["nvmlDeviceGetCurrentClocksEventReasons"] == 0
    b.close()


def test_other_errors_give_none_for_that_read_only_and_warn_once(
    fake: FakeNvml, backend: NvmlBackend, caplog: pytest.LogCaptureFixture
) -> None:
    fake.gpus[1].errors["nvmlDeviceGetPowerUsage"] = fp.NVML_ERROR_UNKNOWN
    with caplog.at_level(logging.WARNING, logger="neocloud.agent.gpu.nvml"):
        for _ in range(3):
            first, second = backend.read(read_energy=False).samples
            assert second.power_mw is None and second.gpu_util_percent == 99 and first.power_mw == 77_000
        fake.gpus[1].errors["nvmlDeviceGetPowerUsage"] = fp.NVML_ERROR_NO_PERMISSION
        backend.read(read_energy=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "Unknown Error" in warnings[0] and "Insufficient Permissions" in warnings[1]
    del fake.gpus[1].errors["nvmlDeviceGetPowerUsage"]
    assert backend.read(read_energy=False).samples[1].power_mw == 650_000


def test_a_lost_gpu_gives_one_event_and_the_others_keep_reading(fake: FakeNvml, backend: NvmlBackend) -> None:
    backend.read(read_energy=True)
    fake.gpus[0].lost = True
    r = backend.read(read_energy=True)
    assert [s.uuid for s in r.samples] == [UUIDS[1]]
    assert [e.uuid for e in r.energy] == [UUIDS[1]]
    assert [(e.uuid, e.kind) for e in r.events] == [(UUIDS[0], HealthKind.GPU_LOST)]
    r = backend.read(read_energy=True)
    assert [s.uuid for s in r.samples] == [UUIDS[1]] and r.events == []


def test_a_lost_gpu_is_not_asked_again(fake: FakeNvml, backend: NvmlBackend) -> None:
    fake.gpus[1].lost = True
    backend.read(read_energy=False)
    before = sum(v for (_, i), v in fake.calls_by_gpu.items() if i == 1)
    backend.read(read_energy=True)
    assert sum(v for (_, i), v in fake.calls_by_gpu.items() if i == 1) == before


def test_xid_events_name_the_gpu_they_came_from(fake: FakeNvml, backend: NvmlBackend) -> None:
    fake.push_xid(1, 79)
    fake.push_xid(0, 48)
    r = backend.read(read_energy=False)
    assert sorted((e.uuid, e.kind, e.xid) for e in r.events) == [
        (UUIDS[0], HealthKind.XID, 48),
        (UUIDS[1], HealthKind.XID, 79),
    ]
    assert backend.read(read_energy=False).events == []
    # Matched by handle address, not by asking NVML for the UUID again.
    assert fake.calls["nvmlDeviceGetUUID"] == 2


def test_xids_skip_gpus_that_cannot_register_and_run_without_event_sets() -> None:
    gpus = two_gpus(unsupported={"nvmlDeviceRegisterEvents"})
    fake = FakeNvml(gpus)
    b = NvmlBackend(fake)
    fake.push_xid(0, 13)
    fake.push_xid(1, 31)
    assert [(e.uuid, e.xid) for e in b.read(read_energy=False).events] == [(UUIDS[1], 31)]
    b.close()
    assert fake.open_event_sets == 0

    fake = FakeNvml(two_gpus(), unsupported={"nvmlEventSetCreate"})
    b = NvmlBackend(fake)
    fake.push_xid(0, 13)
    assert b.read(read_energy=False).events == []
    assert fake.calls["nvmlEventSetWait_v2"] == 0
    b.close()


def test_a_rise_in_uncorrected_ecc_errors_is_a_health_event(fake: FakeNvml, backend: NvmlBackend) -> None:
    backend.read(read_energy=False)
    fake.gpus[1].ecc_uncorrected = 2
    fake.gpus[0].ecc_corrected = 5  # corrected errors are counted, not alarmed
    r = backend.read(read_energy=False)
    assert [(e.uuid, e.kind) for e in r.events] == [(UUIDS[1], HealthKind.ECC_UNCORRECTED)]
    assert "0 to 2" in r.events[0].detail
    assert r.samples[0].ecc_corrected_total == 5
    assert backend.read(read_energy=False).events == []


def test_the_power_buffer_gives_only_new_samples(
    fake: FakeNvml, backend: NvmlBackend, caplog: pytest.LogCaptureFixture
) -> None:
    fake.push_power_samples(0, [(1_000_000, 77_100), (1_020_000, 77_300)])
    r = backend.read(read_energy=False)
    assert [(p.uuid, p.timestamp_us, p.power_mw) for p in r.power_samples] == [
        (UUIDS[0], 1_000_000, 77_100),
        (UUIDS[0], 1_020_000, 77_300),
    ]
    fake.push_power_samples(0, [(1_040_000, 77_500)])
    assert [p.timestamp_us for p in backend.read(read_energy=False).power_samples] == [1_040_000]
    with caplog.at_level(logging.INFO, logger="neocloud.agent.gpu.nvml"):
        assert backend.read(read_energy=False).power_samples == []  # NotFound: nothing new
    assert caplog.records == []
    assert fake.calls_by_gpu["nvmlDeviceGetSamples", 0] == 3


@pytest.mark.parametrize("value_type", [fp.NVML_VALUE_TYPE_DOUBLE, fp.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG])
def test_power_buffer_values_follow_the_value_type(value_type: int) -> None:
    fake = FakeNvml(two_gpus(), power_value_type=value_type)
    b = NvmlBackend(fake)
    fake.push_power_samples(1, [(5, 640_123)])
    assert [(p.uuid, p.power_mw) for p in b.read(read_energy=False).power_samples] == [(UUIDS[1], 640_123)]
    b.close()


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (fp.NVML_ERROR_LIBRARY_NOT_FOUND, "is the NVIDIA driver installed?"),
        (OSError("libnvidia-ml.so.1: cannot open shared object file"), "is the NVIDIA driver installed?"),
        (fp.NVML_ERROR_DRIVER_NOT_LOADED, "load the nvidia kernel module"),
        (fp.NVML_ERROR_NO_PERMISSION, "/dev/nvidia"),
        (fp.NVML_ERROR_UNKNOWN, "nvidia-smi"),
    ],
)
def test_init_failure_says_what_to_do(error: int | Exception, hint: str) -> None:
    fake = FakeNvml(two_gpus())
    fake.fail_init(error)
    with pytest.raises(BackendError, match="NVML") as raised:
        NvmlBackend(fake)
    assert hint in str(raised.value)
    assert "--backend sim" in str(raised.value)


def test_no_gpu_is_an_error_and_shuts_nvml_down() -> None:
    fake = FakeNvml([])
    with pytest.raises(BackendError, match="no usable GPU"):
        NvmlBackend(fake)
    assert fake.init_count == 0


def test_without_a_module_it_imports_pynvml(monkeypatch: pytest.MonkeyPatch, fake: FakeNvml) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    b = NvmlBackend()
    assert len(b.inventory()) == 2
    b.close()


def test_close_is_idempotent_and_frees_everything(fake: FakeNvml, backend: NvmlBackend) -> None:
    assert fake.open_event_sets == 1
    backend.close()
    backend.close()
    assert fake.open_event_sets == 0 and fake.init_count == 0
    assert fake.calls["nvmlShutdown"] == 1 and fake.calls["nvmlEventSetFree"] == 1
    with pytest.raises(BackendError, match="closed"):
        backend.read(read_energy=False)


# -- the fake against the real pynvml ------------------------------------------


def _fake_functions() -> list[str]:
    return [n for n, v in vars(FakeNvml).items() if n.startswith("nvml") and callable(v)]


def _parameters(fn: Any) -> list[tuple[str, Any]]:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", _fake_functions())
def test_each_fake_function_has_the_real_signature(name: str) -> None:
    fake = FakeNvml([])
    assert hasattr(pynvml, name), f"real pynvml has no {name}"
    assert _parameters(getattr(fake, name)) == _parameters(getattr(pynvml, name))


def test_every_function_the_backend_calls_is_faked_after_the_real_module() -> None:
    fake = FakeNvml(two_gpus(), hidden={"nvmlDeviceGetCurrentClocksEventReasons"})
    b = NvmlBackend(fake)
    fake.push_xid(0, 79)
    fake.push_power_samples(0, [(1, 100_000)])
    b.read(read_energy=True)
    b.close()
    assert fake.missing == fake.hidden
    fake = FakeNvml(two_gpus())
    b = NvmlBackend(fake)
    b.read(read_energy=True)
    b.close()
    assert fake.missing == set()  # nothing misspelt or missing from the fake
    called = set(fake.calls) | {"nvmlDeviceGetCurrentClocksThrottleReasons", "nvmlDeviceGetPowerManagementLimit"}
    assert called <= set(_fake_functions())
    assert all(callable(getattr(pynvml, n, None)) for n in called)


def test_constants_errors_and_structures_match_the_real_module() -> None:
    for name, value in fp.CONSTANTS.items():
        assert getattr(pynvml, name) == value, name
    fake = FakeNvml([])
    codes = {k: v for k, v in fp.CONSTANTS.items() if k.startswith("NVML_ERROR_")}
    assert codes.keys() == {k for k in vars(pynvml) if k.startswith("NVML_ERROR_")}
    for code in codes.values():
        cls = type(fp.NVMLError(code))
        assert cls is not fp.NVMLError and cls.__name__ == type(pynvml.NVMLError(code)).__name__
        assert getattr(fake, cls.__name__) is cls and cls().value == code
    assert str(fp.NVMLError(fp.NVML_ERROR_NOT_SUPPORTED)) == str(pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED))
    structures: list[tuple[Any, Any]] = [
        (fp.c_nvmlMemory_t, pynvml.c_nvmlMemory_t),
        (fp.c_nvmlUtilization_t, pynvml.c_nvmlUtilization_t),
        (fp.c_nvmlValue_t, pynvml.c_nvmlValue_t),
        (fp.c_nvmlSample_t, pynvml.c_nvmlSample_t),
        (fp.c_nvmlEventData_t, pynvml.c_nvmlEventData_t),
    ]
    for fake_struct, real_struct in structures:
        assert [f[0] for f in fake_struct._fields_] == [f[0] for f in real_struct._fields_]
    process_fields = [f[0] for f in pynvml.c_nvmlProcessInfo_t._fields_]
    assert list(vars(fp.ProcessInfo(1, None))) == process_fields
