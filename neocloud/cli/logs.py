"""`neocloud logs`: one rank's output as it is, or every rank's interleaved line by line,
each line prefixed `[rank N] ` (a job of one rank prints as it is)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import BinaryIO

import grpc

from neocloud.cli.common import UsageError
from neocloud.client import CALL_TIMEOUT_S, Client
from neocloud.v1 import jobs_pb2 as pb

_DONE = object()  # a rank's stream ended


def ranks_of(job: pb.Job) -> int:
    """A gang runs one rank per node: gpus / gpus_per_node (0 there means min(gpus, 8))."""
    per_node = job.spec.gpus_per_node or min(job.spec.gpus, 8)
    return max(job.spec.gpus // max(per_node, 1), 1)


def print_logs(client: Client, job: pb.Job, rank: int | None, offset: int, follow: bool, out: BinaryIO) -> None:
    if offset < 0:
        raise UsageError("--offset must not be negative")
    ranks = ranks_of(job)
    if rank is not None or ranks == 1:
        for chunk in _stream(client, job.job_id, rank, offset, follow):
            out.write(chunk.data)
            out.flush()
        return
    if offset:
        raise UsageError(f"--offset counts the bytes of one rank's output: give --rank (job has {ranks} ranks)")
    _interleave(client, job.job_id, ranks, follow, out)


def _stream(client: Client, job_id: str, rank: int | None, offset: int, follow: bool) -> Iterator[pb.LogChunk]:
    request = pb.JobLogsRequest(job_id=job_id, offset=offset, follow=follow, rank=rank)
    yield from client.jobs.Logs(request, metadata=client.metadata, timeout=None if follow else CALL_TIMEOUT_S)


def _interleave(client: Client, job_id: str, ranks: int, follow: bool, out: BinaryIO) -> None:
    """One reader thread per rank; whole lines are written as they come, each with its prefix."""
    lines: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=1024)

    def read(rank: int) -> None:
        pending = b""
        try:
            for chunk in _stream(client, job_id, rank, 0, follow):
                pending += chunk.data
                *whole, pending = pending.split(b"\n")
                for line in whole:
                    lines.put((rank, line + b"\n"))
            if pending:
                lines.put((rank, pending + b"\n"))
        except grpc.RpcError as e:
            lines.put((rank, e))
            return
        lines.put((rank, _DONE))

    for rank in range(ranks):
        threading.Thread(target=read, args=(rank,), name=f"logs-rank-{rank}", daemon=True).start()
    open_ranks = ranks
    while open_ranks:
        rank, item = lines.get()
        if item is _DONE:
            open_ranks -= 1
        elif isinstance(item, grpc.RpcError):
            raise item  # the CLI's handler words it, as for any call
        else:
            assert isinstance(item, bytes)
            out.write(f"[rank {rank}] ".encode() + item)
            out.flush()
