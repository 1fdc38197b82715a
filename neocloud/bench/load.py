"""Load generator for `neocloud bench ingest`: one process, many node streams,
each sending 8-GPU batches as fast as the scheduler acknowledges them."""

from __future__ import annotations

import asyncio
import sys
import time

import grpc

from neocloud.agent.gpu.sim import SimBackend
from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu.types import Reading
from neocloud.v1 import telemetry_pb2 as pb
from neocloud.v1 import telemetry_pb2_grpc as pb_grpc

WINDOW = 64
TICK_US = 1_000_000


async def _stream(stub: pb_grpc.TelemetryStub, node_id: str, ticks: int, deadline: float) -> int:
    backend = SimBackend(node_id, 8, load=0.7, clock_us=lambda: 0)
    inventory = backend.inventory()
    start_us = time.time_ns() // 1000 - 10**9 * TICK_US // 10**6
    readings = []
    for t in range(ticks):
        read = backend.read(read_energy=True)
        readings.append(Reading(samples=list(read.samples), energy=list(read.energy)))
    template = build_batch(node_id, inventory, readings, 0)
    acked = 0
    sent = 0
    credit = asyncio.Event()
    call = stub.Connect()
    await call.write(hello(node_id, 1, inventory, "sim"))

    async def read_acks() -> None:
        nonlocal acked
        async for message in call:
            acked = max(acked, message.ack.acked_seq)
            credit.set()

    reader = asyncio.create_task(read_acks())
    energy_mj = 3_482_120
    while time.monotonic() < deadline:
        if sent - acked >= WINDOW:
            credit.clear()
            await credit.wait()
            continue
        sent += 1
        base = start_us + sent * ticks * TICK_US
        batch = pb.Batch()
        batch.CopyFrom(template)
        batch.stream_epoch, batch.seq, batch.agent_time_us = 1, sent, base + ticks * TICK_US
        energy_mj += 600_000 * ticks
        for series in batch.gpus:
            series.timestamp_us[:] = [base + k * TICK_US for k in range(ticks)]
            for k, reading in enumerate(series.energy):
                reading.timestamp_us = base + k * TICK_US
                reading.energy_mj = energy_mj
        await call.write(pb.AgentMessage(batch=batch))
    await call.done_writing()
    reader.cancel()
    return sent


async def _main(port: int, first_node: int, streams: int, ticks: int, seconds: float) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.TelemetryStub(channel)
        deadline = time.monotonic() + seconds
        sent = await asyncio.gather(
            *(_stream(stub, f"bench-{first_node + i}", ticks, deadline) for i in range(streams))
        )
    print(sum(sent), flush=True)


if __name__ == "__main__":
    port, first, streams, ticks = (int(a) for a in sys.argv[1:5])
    asyncio.run(_main(port, first, streams, ticks, float(sys.argv[5])))
