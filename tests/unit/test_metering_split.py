from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neocloud.cli import main
from neocloud.scheduler.metering.audit import AllocationRow, read_allocations, replay
from neocloud.scheduler.metering.split import IDLE, CounterReading, Interval, MeteringError, split_gpu
from tests.helpers import H200_TRACE

UUID = "GPU-a4db0f73-ae90-89b5-3b40-3b9ce54272a0"
T0 = 1795731867.2391164  # first record of the H200 trace


def test_constant_power_splits_by_duration() -> None:
    readings = [CounterReading(0, 1000), CounterReading(10, 2000)]
    power = [(t, 100.0) for t in range(11)]
    usage = split_gpu([Interval("a", 2, 5), Interval("b", 5, 6)], readings, power)
    assert usage.energy_j == pytest.approx({"a": 300, "b": 100, IDLE: 600})
    assert usage.gpu_seconds == pytest.approx({"a": 3, "b": 1, IDLE: 6})
    assert usage.counter_delta_j == 1000


def test_energy_follows_power_not_time() -> None:
    readings = [CounterReading(0, 0), CounterReading(2, 800)]
    power = [(0.0, 100.0), (0.999, 100.0), (1.001, 700.0), (2.0, 700.0)]
    usage = split_gpu([Interval("busy", 1, 2)], readings, power)
    assert usage.energy_j["busy"] == pytest.approx(700, rel=1e-2)
    assert usage.energy_j[IDLE] == pytest.approx(100, rel=1e-2)


def test_a_counter_reset_is_bridged() -> None:
    readings = [CounterReading(0, 5_000_000), CounterReading(10, 200, reset=True), CounterReading(20, 5200)]
    power = [(float(t), 500.0) for t in range(21)]
    usage = split_gpu([Interval("a", 0, 20)], readings, power)
    assert usage.counter_delta_j == pytest.approx(5000 + 5000)  # power x span for the reset span, then 5 kJ
    assert usage.energy_j["a"] == pytest.approx(usage.counter_delta_j)


def test_bad_books_are_refused() -> None:
    readings = [CounterReading(0, 0), CounterReading(10, 10)]
    with pytest.raises(MeteringError, match="overlap"):
        split_gpu([Interval("a", 0, 5), Interval("b", 4, 6)], readings, [])
    with pytest.raises(MeteringError, match="two energy-counter readings"):
        split_gpu([], readings[:1], [])


def test_real_h200_trace_split_among_allocations_conserves_energy(tmp_path: Path) -> None:
    rows = [
        AllocationRow("a", "acme", "spot", UUID, T0 + 5.5, T0 + 10.5),
        AllocationRow("b", "beta", "reserved", UUID, T0 + 10.5, T0 + 25.0),
        AllocationRow("c", "beta", "reserved", UUID, T0 + 31.5, T0 + 34.0),
    ]
    result = replay([H200_TRACE], rows)
    delta = result["counter_delta_joules"][UUID]
    assert delta == pytest.approx(14_886.338)  # the meta file's energy_counter_delta_j
    parts = [a["energy_joules"] for a in result["allocations"]] + [result["idle"][0]["energy_joules"]]
    assert sum(parts) == pytest.approx(delta, rel=1e-3)
    # a holds the flat-out matmul (~690 W), c the idle tail with a context (~120 W).
    a, _, c = result["allocations"]
    assert 640 < a["energy_joules"] / a["gpu_seconds"] < 710
    assert 100 < c["energy_joules"] / c["gpu_seconds"] < 140
    seconds = sum(x["gpu_seconds"] for x in result["allocations"]) + result["idle"][0]["gpu_seconds"]
    window = result["window"][UUID]
    assert seconds == pytest.approx(window[1] - window[0])


def test_cli_prints_json_and_refuses_bad_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "allocs.csv"
    good.write_text(f"job,tenant,class,gpu_uuid,start,end\nj1,acme,spot,{UUID},{T0 + 1},{T0 + 5}\n")
    with pytest.raises(SystemExit) as done:
        main(["meter", "replay", "--trace", str(H200_TRACE), "--allocations", str(good)])
    assert done.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["allocations"][0]["job"] == "j1" and out["allocations"][0]["gpu_seconds"] == pytest.approx(4)
    bad = tmp_path / "bad.csv"
    for body, words in [
        ("job,tenant\n", "header must be"),
        (f"job,tenant,class,gpu_uuid,start,end\nj1,acme,spot,{UUID},5,4\n", ":2: end 4.0 is not after start"),
        ("job,tenant,class,gpu_uuid,start,end\nj1,acme,spot,GPU-nope,1,2\n", "not in the trace"),
        (f"job,tenant,class,gpu_uuid,start,end\nj1,acme,spot,{UUID},x,2\n", ":2: start and end must be"),
    ]:
        bad.write_text(body)
        with pytest.raises(SystemExit) as done:
            main(["meter", "replay", "--trace", str(H200_TRACE), "--allocations", str(bad)])
        assert done.value.code == 2
        assert words in capsys.readouterr().err
    assert read_allocations(good)[0].tenant == "acme"


def test_several_traces_keep_their_own_times_and_each_gpu_is_recorded_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GPU b: the H200 recording again, 10 s later, under another UUID.
    later = tmp_path / "b.jsonl"
    later.write_text(
        "".join(
            json.dumps({**r, "t": r["t"] + 10}) + "\n" for r in map(json.loads, H200_TRACE.read_text().splitlines())
        )
    )
    meta = json.loads(H200_TRACE.with_name("h200-two-procs.meta.json").read_text())
    meta["device"]["uuid"] = "GPU-b"
    (tmp_path / "b.meta.json").write_text(json.dumps(meta))
    # The same 5 s of the recording on each GPU, each at its own recorded time.
    rows = [
        AllocationRow("ja", "acme", "spot", UUID, T0 + 5.5, T0 + 10.5),
        AllocationRow("jb", "acme", "spot", "GPU-b", T0 + 15.5, T0 + 20.5),
    ]
    a, b = replay([H200_TRACE, later], rows)["allocations"]
    assert a["gpu_seconds"] == pytest.approx(5) and b["gpu_seconds"] == pytest.approx(5)
    assert b["energy_joules"] == pytest.approx(a["energy_joules"], rel=1e-3)
    allocations = tmp_path / "allocs.csv"
    allocations.write_text(f"job,tenant,class,gpu_uuid,start,end\nj1,acme,spot,{UUID},{T0 + 1},{T0 + 5}\n")
    with pytest.raises(SystemExit) as done:
        main(
            [
                "meter",
                "replay",
                "--trace",
                str(H200_TRACE),
                "--trace",
                str(H200_TRACE),
                "--allocations",
                str(allocations),
            ]
        )
    assert done.value.code == 2
    assert "same GPU UUID" in capsys.readouterr().err


@st.composite
def books(draw: st.DrawFn) -> tuple[list[Interval], list[CounterReading], list[tuple[float, float]]]:
    n_reads = draw(st.integers(2, 8))
    times = sorted(draw(st.lists(st.floats(0, 1000), min_size=n_reads, max_size=n_reads, unique=True)))
    energy = 0.0
    readings = []
    for t in times:
        if readings and draw(st.booleans()) and draw(st.integers(0, 9)) == 0:
            energy = draw(st.floats(0, 1000))  # driver reload
            readings.append(CounterReading(t, energy, reset=True))
        else:
            energy += draw(st.floats(0, 50_000))
            readings.append(CounterReading(t, energy))
    cuts = sorted(draw(st.lists(st.floats(-100, 1100), max_size=8, unique=True)))
    intervals = [Interval(f"j{i}", a, b) for i, (a, b) in enumerate(zip(cuts[::2], cuts[1::2], strict=False))]
    power = draw(st.lists(st.tuples(st.floats(0, 1000), st.floats(0, 800)), max_size=40))
    return intervals, readings, power


@settings(max_examples=150, deadline=None)
@given(books(), st.randoms(use_true_random=False))
def test_conservation_and_idempotence_under_loss_duplication_reordering(book, rnd: random.Random) -> None:  # type: ignore[no-untyped-def]
    intervals, readings, power = book
    usage = split_gpu(intervals, readings, power)
    assert sum(usage.energy_j.values()) == pytest.approx(usage.counter_delta_j, rel=1e-9, abs=1e-6)
    assert all(v >= -1e-6 for v in usage.energy_j.values())
    lo, hi = usage.window
    assert sum(usage.gpu_seconds.values()) == pytest.approx(hi - lo, abs=1e-6)
    # Same input, same answer (re-processing a window never counts twice) ...
    assert split_gpu(intervals, readings, power) == usage
    # ... and power samples lost, duplicated or reordered still conserve the counter.
    mangled = [p for p in power if rnd.random() > 0.3] + power[: rnd.randint(0, len(power))]
    rnd.shuffle(mangled)
    again = split_gpu(list(reversed(intervals)), readings, mangled)
    assert sum(again.energy_j.values()) == pytest.approx(again.counter_delta_j, rel=1e-9, abs=1e-6)
    assert again.gpu_seconds == pytest.approx(usage.gpu_seconds)
    if not any(r.reset or r.energy_j < p.energy_j for p, r in itertools.pairwise(readings)):
        # Only a bridged reset leans on power; otherwise the counter alone decides the total.
        assert again.counter_delta_j == pytest.approx(usage.counter_delta_j)
