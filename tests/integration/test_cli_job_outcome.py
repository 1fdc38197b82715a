"""`neocloud job --watch` and `logs -f` exit as the job ended (0 succeeded, 1 failed,
3 cancelled, 4 preempted and not requeued), and `--json` prints enum words and RFC 3339
times, `job --watch --json` one object a line: the real CLI against the real JobService
over gRPC on loopback, the job's end written by the store as the controller writes it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from neocloud.cli import main
from neocloud.scheduler.control.settle import REQUEUE, settle
from neocloud.scheduler.store.intents import StopIntent
from neocloud.scheduler.store.records import JobState
from neocloud.v1 import jobs_pb2 as pb
from tests.api_server import ApiServer

Cli = Callable[..., tuple[int, str, str]]
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    server = ApiServer(tmp_path / "scheduler.db")
    yield server
    server.stop()


@pytest.fixture
def cli(api: ApiServer, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run `neocloud WORDS` as acme; -> (exit status, stdout, stderr)."""

    def run(*words: str) -> tuple[int, str, str]:
        capsys.readouterr()
        conn = ["--server", api.address, "--insecure", "--token", api.tokens["acme"]]
        with pytest.raises(SystemExit) as done:
            main([*words, *conn])
        out, err = capsys.readouterr()
        return int(done.value.code or 0), out, err

    return run


def running_job(api: ApiServer, gpu: str, requeue: bool = True) -> str:
    spec = pb.JobSpec(job_class=pb.JOB_CLASS_SPOT, gpus=1, command=["python", "train.py"], requeue_on_preempt=requeue)
    job = api.jobs.Submit(pb.SubmitJobRequest(spec=spec), metadata=api.auth("acme"), timeout=10)
    api.store.start(job.job_id, [("n1", [gpu])])
    return job.job_id


def test_watch_and_follow_exit_as_the_job_ended(api: ApiServer, cli: Cli) -> None:
    ok = running_job(api, "GPU-0")
    api.store.finish(ok, JobState.SUCCEEDED, 0)
    failed = running_job(api, "GPU-1")
    api.store.finish(failed, JobState.FAILED, 1, "exit codes [1]")
    cancelled = running_job(api, "GPU-2")
    api.store.request_cancel(cancelled)
    settle(api.store, StopIntent(cancelled, api.store.get(cancelled).submitted_at + 1, "cancelled", "cancelled"))
    preempted = running_job(api, "GPU-3", requeue=False)
    api.store.notify_preemption(preempted, reason="internal demand")
    at = api.store.get(preempted).submitted_at + 1
    settle(api.store, StopIntent(preempted, at, REQUEUE, "preempted", "preempted"))  # as the controller does
    running = running_job(api, "GPU-4")
    for job_id in (ok, failed, cancelled, preempted):
        api.logs.append(job_id, b"step 1\n")
        api.logs.close(job_id)

    expected = {ok: 0, failed: 1, cancelled: 3, preempted: 4}  # the table in `neocloud job --help`
    for job_id, status in expected.items():
        code, out, err = cli("job", job_id, "--watch")
        assert (code, err) == (status, ""), job_id
        assert out.splitlines()[-1].split()[2] in {"succeeded", "failed", "cancelled"}  # the last event
        code, out, err = cli("logs", job_id, "-f")
        assert (code, out, err) == (status, "step 1\n", ""), job_id
    # Without --watch/--follow the command reports, it does not judge.
    assert cli("job", failed)[0] == 0
    assert cli("logs", failed)[0] == 0
    assert cli("job", running)[0] == 0
    assert "3  cancelled" in cli("job", "--help")[1]


def test_watch_json_is_one_object_a_line_with_words_and_rfc3339_times(api: ApiServer, cli: Cli) -> None:
    job_id = running_job(api, "GPU-0")
    api.store.finish(job_id, JobState.FAILED, 2, "exit codes [2]")
    code, out, _ = cli("job", job_id, "--watch", "--json")
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]  # each line is a whole object
    job, events = lines[0], lines[1:]
    assert job["job_id"] == job_id and job["state"] == "failed" and job["spec"]["job_class"] == "spot"
    assert RFC3339.fullmatch(job["submitted_at"]) and RFC3339.fullmatch(job["ended_at"])
    assert job["exit_code"] == 2 and job["preemption_notice_at"] is None and job["spec"]["max_runtime_s"] is None
    assert [e["kind"] for e in events] == ["submitted", "started", "failed"]
    assert [e["state"] for e in events] == ["queued", "running", "failed"]
    assert all(RFC3339.fullmatch(e["at"]) and isinstance(e["event_id"], int) for e in events)

    # The same style in every --json: a list of jobs, one job.
    code, out, _ = cli("jobs", "--json")
    listed = json.loads(out)
    assert code == 0 and listed[0]["state"] == "failed" and RFC3339.fullmatch(listed[0]["submitted_at"])
    code, out, _ = cli("job", job_id, "--json")
    assert json.loads(out) == job
