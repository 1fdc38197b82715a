"""Logs per rank over real gRPC: `Logs(rank=N)` reads one rank's output, a rank the job does not
have is INVALID_ARGUMENT, and `neocloud logs` interleaves every rank's lines with `[rank N] `
(one rank's as it is with --rank; a one-rank job prints as before)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from neocloud.v1 import jobs_pb2 as pb
from tests.api_server import ApiServer
from tests.unit.test_client_cli import Run, api, run  # api and run: fixtures

__all__ = ["api", "run"]


@pytest.fixture
def gang(run: Run, api: ApiServer) -> Iterator[str]:
    """A two-rank job (16 GPUs, 8 per node) whose ranks wrote and finished."""
    job_id = run("acme", "submit", "--insecure", "--gpus", "16", "--gpus-per-node", "8", "--", "true")[1].split()[0]
    api.logs.append(job_id, b"r0 step 1\nr0 step 2\n", rank=0)
    api.logs.append(job_id, b"r1 step 1\nr1 no newline", rank=1)
    api.logs.close(job_id, rank=0)
    api.logs.close(job_id, rank=1)
    yield job_id


def read(api: ApiServer, job_id: str, **fields: int) -> bytes:
    chunks = api.jobs.Logs(pb.JobLogsRequest(job_id=job_id, **fields), metadata=api.auth("acme"), timeout=20)
    return b"".join(c.data for c in chunks)


def test_logs_of_one_rank_and_ranks_the_job_does_not_have(api: ApiServer, gang: str) -> None:
    assert read(api, gang) == b"r0 step 1\nr0 step 2\n"  # no rank: rank 0, as before
    assert read(api, gang, rank=1) == b"r1 step 1\nr1 no newline"
    assert read(api, gang, rank=1, offset=10) == b"r1 no newline"
    for bad in (2, -1, 2**31 - 1):
        with pytest.raises(grpc.RpcError) as e:
            read(api, gang, rank=bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"rank must be 0..1 (job {gang} has 2), not {bad}" in str(e.value.details())


def test_the_cli_interleaves_ranks_with_a_prefix_or_prints_one(run: Run, gang: str) -> None:
    code, out, _ = run("acme", "logs", "--insecure", gang)
    assert code == 0
    lines = out.splitlines()
    assert sorted(lines) == ["[rank 0] r0 step 1", "[rank 0] r0 step 2", "[rank 1] r1 no newline", "[rank 1] r1 step 1"]
    assert lines.index("[rank 0] r0 step 1") < lines.index("[rank 0] r0 step 2")  # each rank's order kept
    code, out, _ = run("acme", "logs", "--insecure", "--rank", "1", gang)
    assert (code, out) == (0, "r1 step 1\nr1 no newline")
    code, _, err = run("acme", "logs", "--insecure", "--offset", "3", gang)
    assert code == 2 and "give --rank" in err, err
    code, _, err = run("acme", "logs", "--insecure", "--rank", "5", gang)
    assert code == 1 and err.startswith("neocloud: INVALID_ARGUMENT: rank must be 0..1"), err


def test_a_job_of_one_rank_prints_as_it_is(run: Run, api: ApiServer, tmp_path: Path) -> None:
    job_id = run("acme", "submit", "--insecure", "--", "true")[1].split()[0]
    api.logs.append(job_id, b"epoch 1\n")
    api.logs.close(job_id)
    assert run("acme", "logs", "--insecure", job_id) == (0, "epoch 1\n", "")
