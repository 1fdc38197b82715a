"""Load generator for `neocloud bench ingest`: one process, many node streams,
each sending 8-GPU batches as fast as the scheduler acknowledges them."""

from __future__ import annotations

import asyncio
import sys
import time

import grpc

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu import SimBackend
from neocloud.v1 import telemetry_pb2 as pb
from neocloud.v1 import telemetry_pb2_grpc as pb_grpc

WINDOW = 64
TICK_US = 1_000_000
JOULES_PER_TICK_MJ = 600_000  # 600 W


async def _stream(stub: pb_grpc.TelemetryStub, node_id: str, ticks: int, deadline: float) -> int:
    backend = SimBackend(node_id, 8, load=0.7, clock_us=lambda: 0)
    inventory = backend.inventory()
    start_us = time.time_ns() // 1000 - 10**9 * TICK_US // 10**6
    # The energy counter is read once per batch, as an agent reading it every
    # 10 s does with batches of up to 10 ticks.
    readings = [backend.read(read_energy=tick == 0) for tick in range(ticks)]
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
        for series in batch.gpus:
            series.timestamp_us[:] = [base + k * TICK_US for k in range(ticks)]
            for reading in series.energy:
                reading.timestamp_us = base
                reading.energy_mj = energy_mj
        energy_mj += ticks * JOULES_PER_TICK_MJ
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
