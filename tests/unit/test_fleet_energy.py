from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from neocloud.domain.fleet import EnergyAccumulator


def test_first_reading_is_the_baseline() -> None:
    acc = EnergyAccumulator()
    acc.add(1_000_000, 5_000_000, False, 100_000, 100_000)
    assert acc.total_mj == 0
    acc.add(2_000_000, 5_400_000, False, 100_000, 100_000)
    assert acc.total_mj == 400_000


def test_reset_is_bridged_not_billed_negative_or_huge() -> None:
    acc = EnergyAccumulator()
    acc.add(0, 9_000_000_000, False, 500_000, 500_000)
    # Driver reload: the counter restarts near zero 10 s later at ~500 W.
    acc.add(10_000_000, 1_000_000, True, 500_000, 500_000)
    assert acc.total_mj == 5_000_000  # power x span beats the 1 kJ the new counter saw
    assert acc.resets == 1
    acc.add(11_000_000, 1_500_000, False, 500_000, 500_000)
    assert acc.total_mj == 5_500_000


def test_unflagged_decrease_is_treated_as_reset() -> None:
    acc = EnergyAccumulator()
    acc.add(0, 10_000, False, 0, 0)
    acc.add(1_000_000, 4_000, False, 0, 0)
    assert (acc.total_mj, acc.resets) == (4_000, 1)


@given(st.lists(st.integers(0, 700_000), min_size=2, max_size=50), st.integers(0, 10**12))
def test_sum_of_deltas_is_the_counter_delta(increments: list[int], start: int) -> None:
    acc = EnergyAccumulator()
    value = start
    for i, inc in enumerate(increments):
        value += inc
        acc.add(i * 1_000_000, value, False, 0, 0)
    assert acc.total_mj == value - (start + increments[0])
