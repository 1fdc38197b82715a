"""The per-GPU samples metering keeps from each telemetry batch, packed.

One row per GPU per batch: the tick columns (time, power, utilisation, memory)
and the driver's power buffer, each packed column-wise as int64 arrays so that
packing costs a C loop per column, not Python per sample. A column the GPU
does not support is empty.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass


def _pack(columns: Sequence[Sequence[int]]) -> bytes:
    """A header with each column's length, then the columns as native int64 (little-endian on x86-64 and arm64)."""
    header = struct.pack(f"<{len(columns)}I", *(len(c) for c in columns))
    return header + b"".join(array("q", c).tobytes() for c in columns)


def _unpack(blob: bytes, count: int) -> list[array[int]]:
    fmt = struct.Struct(f"<{count}I")
    lengths = fmt.unpack_from(blob)
    values = array("q")
    values.frombytes(blob[fmt.size :])
    out, at = [], 0
    for n in lengths:
        out.append(values[at : at + n])
        at += n
    return out


@dataclass(frozen=True, slots=True)
class StoredSeries:
    """A stored row unpacked, with the column names of a telemetry GpuSeries."""

    timestamp_us: Sequence[int]
    power_mw: Sequence[int]  # empty when not supported
    gpu_util_percent: Sequence[int]
    memory_used_bytes: Sequence[int]
    power_sample_us: Sequence[int]
    power_sample_mw: Sequence[int]


def pack_ticks(t_us: Sequence[int], power_mw: Sequence[int], util: Sequence[int], memory: Sequence[int]) -> bytes:
    return _pack((t_us, power_mw, util, memory))


def pack_power_buffer(t_us: Sequence[int], power_mw: Sequence[int]) -> bytes:
    return _pack((t_us, power_mw))


def unpack(ticks: bytes, power_buffer: bytes) -> StoredSeries:
    t, p, u, m = _unpack(ticks, 4)
    bt, bp = _unpack(power_buffer, 2)
    return StoredSeries(t, p, u, m, bt, bp)
