"""Tokens that expire and rotate (issue 12 item 10), over real gRPC on loopback with
the real services and a real SQLite store, driven through the `neocloud admin token`
commands an operator types."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from neocloud.cli.main import build_parser
from neocloud.v1 import admin_pb2 as pb
from neocloud.v1 import jobs_pb2
from tests.api_server import ApiServer

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    server = ApiServer(tmp_path / "scheduler.db")
    yield server
    server.stop()


@pytest.fixture
def run(api: ApiServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    monkeypatch.setenv("NEOCLOUD_SERVER", api.address)

    def run(token: str, *argv: str) -> tuple[int, str, str]:
        monkeypatch.setenv("NEOCLOUD_TOKEN", token)
        capsys.readouterr()
        args = build_parser().parse_args(list(argv))
        code = args.func(args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def list_jobs(api: ApiServer, token: str) -> grpc.StatusCode:
    try:
        api.jobs.List(jobs_pb2.ListJobsRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10)
    except grpc.RpcError as e:
        assert "expired at" in e.details() or e.code() is not grpc.StatusCode.UNAUTHENTICATED
        return e.code()
    return grpc.StatusCode.OK


def test_token_create_with_expiry_list_and_rotate(api: ApiServer, run: Run) -> None:
    ops = api.tokens["operator"]
    code, out, err = run(ops, "admin", "token", "create", "--insecure", "--role", "tenant", "--tenant", "acme",
                         "--name", "acme-deploy", "--expires-in", "30d")  # fmt: skip
    old = out.strip()
    assert code == 0 and old.startswith("nct_") and "expires: 20" in err
    code, out, _ = run(ops, "admin", "token", "list", "--insecure", "--json")
    listed = {t["name"]: t for t in json.loads(out)}
    expires = dt.datetime.fromisoformat(listed["acme-deploy"]["expires_at"]).timestamp()
    assert abs(expires - (time.time() + 30 * 86400)) < 60
    assert listed["ops"]["expires_at"] is None  # operator tokens made by the store never expire
    assert list_jobs(api, old) is grpc.StatusCode.OK

    code, out, err = run(ops, "admin", "token", "rotate", "--insecure", "acme-deploy", "--grace", "0")
    new = out.strip()
    assert code == 0 and new.startswith("nct_") and new != old and "not shown again" in err
    assert list_jobs(api, new) is grpc.StatusCode.OK
    assert list_jobs(api, old) is grpc.StatusCode.UNAUTHENTICATED  # its grace was 0: expired at once
    code, out, _ = run(ops, "admin", "audit", "--insecure", "--subject", "acme-deploy", "--json")
    assert [e["action"] for e in json.loads(out)] == ["rotate-token"]

    # The tenant default is 90 days; an expiry too far or in the past is refused with the limit.
    reply = api.admin.CreateToken(
        pb.CreateTokenRequest(name="acme-two", role=pb.ROLE_TENANT, tenant="acme"), metadata=api.auth("operator")
    )
    assert abs(reply.info.expires_at - (time.time() + 90 * 86400)) < 60 and reply.info.token_id
    code, _, err = run(ops, "admin", "token", "create", "--insecure", "--role", "internal", "--name", "lab2",
                       "--expires-in", "400d")  # fmt: skip
    assert code != 0 and "INVALID_ARGUMENT" in err and "366 days" in err
    code, _, err = run(ops, "admin", "token", "rotate", "--insecure", "no-such-token")
    assert code != 0 and "NOT_FOUND" in err


def test_an_expired_token_is_refused_with_its_time_over_the_wire(api: ApiServer) -> None:
    reply = api.admin.CreateToken(
        pb.CreateTokenRequest(name="short", role=pb.ROLE_TENANT, tenant="acme", expires_at=time.time() + 1.0),
        metadata=api.auth("operator"),
    )
    assert list_jobs(api, reply.token) is grpc.StatusCode.OK  # now remembered by the server's cache
    time.sleep(max(0.0, reply.info.expires_at - time.time()) + 0.05)  # nothing to await: only time passes
    with pytest.raises(grpc.RpcError) as refused:
        api.jobs.List(jobs_pb2.ListJobsRequest(), metadata=[("authorization", f"Bearer {reply.token}")])
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details().startswith("token short expired at 20")


@pytest.mark.parametrize("expires_at", [1e308, -1e308, 1e12, float("nan"), float("inf"), -1.0])
def test_absurd_expiries_are_invalid_argument_never_a_crash(api: ApiServer, expires_at: float) -> None:
    for call, request in (
        (api.admin.CreateToken, pb.CreateTokenRequest(name="x", role=pb.ROLE_INTERNAL, expires_at=expires_at)),
        (api.admin.RotateToken, pb.RotateTokenRequest(name="research", expires_at=expires_at)),
        (api.admin.RotateToken, pb.RotateTokenRequest(name="research", grace_s=expires_at)),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call(request, metadata=api.auth("operator"), timeout=10)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
