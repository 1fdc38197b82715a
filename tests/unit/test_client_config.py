"""Client settings: arguments > NEOCLOUD_* environment > config file (XDG_CONFIG_HOME
honoured, --config / NEOCLOUD_CONFIG), errors naming the file and key; the CLI and
`Client.from_config()` take the same; idempotent calls are retried on UNAVAILABLE over a
real socket, Submit is not."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from neocloud.cli import main
from neocloud.client import Client
from neocloud.clientconfig import ClientConfigError, ClientSettings, resolve
from neocloud.v1 import jobs_pb2
from tests.api_server import ApiServer


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_arguments_beat_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    text = 'server = "file:1"\nca = "ca.pem"\ntoken = "t-file"\n'
    config = write(tmp_path / "xdg" / "neocloud" / "config.toml", text)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert resolve({}, env) == ClientSettings(server="file:1", token="t-file", ca=str(config.parent / "ca.pem"))
    env |= {"NEOCLOUD_SERVER": "env:2", "NEOCLOUD_TOKEN_FILE": str(write(tmp_path / "tok", "t-env\n"))}
    assert resolve({}, env) == ClientSettings(server="env:2", token="t-env", ca=str(config.parent / "ca.pem"))
    given = {"server": "arg:3", "token": "t-arg", "ca": None, "insecure": False}
    assert resolve(given, env) == ClientSettings(server="arg:3", token="t-arg", ca=str(config.parent / "ca.pem"))
    # An explicit file replaces the default one; the environment may name it too.
    other = write(tmp_path / "other.toml", 'insecure = true\ntoken_file = "~/nowhere"\n')
    assert resolve({"token": "x"}, {"NEOCLOUD_CONFIG": str(other)}).insecure is True
    assert resolve({"token": "x"}, env, config_file=other) == ClientSettings(server="env:2", token="x", insecure=True)
    assert resolve({}, {"HOME": str(tmp_path)}) == ClientSettings()  # no file at the default path: nothing set


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('sever = "x:1"\n', "unknown key 'sever'"),
        ("server = 7443\n", "key 'server' must be a string"),
        ('insecure = "yes"\n', "key 'insecure' must be a boolean"),
        ('server = "x:1\n', "not valid TOML: .*line 1"),
        ('token = "a"\ntoken_file = "b"\n', "set the token or the token file, not both"),
        ('token_file = "missing"\n', "token_file .*missing: No such file"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, error: str) -> None:
    path = write(tmp_path / "config.toml", text)
    with pytest.raises(ClientConfigError, match=f"^{path}: {error}"):
        resolve({}, {}, config_file=path)


def test_a_named_config_file_must_exist_and_a_token_file_hold_one_token(tmp_path: Path) -> None:
    with pytest.raises(ClientConfigError, match=r"nope\.toml: no such config file"):
        resolve({}, {"NEOCLOUD_CONFIG": str(tmp_path / "nope.toml")})
    with pytest.raises(ClientConfigError, match=r"^environment: token_file .* does not hold one token"):
        resolve({}, {"NEOCLOUD_TOKEN_FILE": str(write(tmp_path / "t", "two tokens\n"))})
    with pytest.raises(ClientConfigError, match=r"NEOCLOUD_INSECURE: 'maybe' is not true or false"):
        resolve({}, {"NEOCLOUD_INSECURE": "maybe"})


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    server = ApiServer(tmp_path / "scheduler.db")
    yield server
    server.stop()


def test_the_cli_and_from_config_read_the_config_file(
    api: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "neocloud" / "token", api.tokens["acme"] + "\n")
    write(tmp_path / "neocloud" / "config.toml", f'server = "{api.address}"\ninsecure = true\ntoken_file = "token"\n')
    for var in ("NEOCLOUD_SERVER", "NEOCLOUD_TOKEN", "NEOCLOUD_CONFIG", "NEOCLOUD_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with Client.from_config() as client:
        assert client.jobs.List(jobs_pb2.ListJobsRequest(), metadata=client.metadata, timeout=10).jobs == []
    with pytest.raises(SystemExit) as done:
        main(["jobs", "--json"])
    assert (done.value.code, capsys.readouterr().out.strip()) == (0, "[]")
    # A flag beats the file: another token is refused by the server, naming no file.
    with pytest.raises(SystemExit) as done:
        main(["jobs", "--token", "nct_wrong"])
    assert done.value.code == 1 and "UNAUTHENTICATED" in capsys.readouterr().err
    # An error in the file is a usage error naming the file and key.
    write(tmp_path / "neocloud" / "config.toml", "server = 1\n")
    with pytest.raises(SystemExit) as done:
        main(["jobs"])
    assert done.value.code == 2 and "config.toml: key 'server' must be a string" in capsys.readouterr().err


class Flaky(grpc.GenericRpcHandler):
    """JobService whose Get and Submit answer UNAVAILABLE `failures` times, then a job."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = str(details.method).rsplit("/", 1)[-1]

        def answer(request: Any, context: grpc.ServicerContext) -> jobs_pb2.Job:
            with self._lock:
                self.calls[method] = self.calls.get(method, 0) + 1
                n = self.calls[method]
            if n <= self.failures:
                context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
            return jobs_pb2.Job(job_id="j-1")

        return grpc.unary_unary_rpc_method_handler(
            answer, request_deserializer=lambda b: b, response_serializer=jobs_pb2.Job.SerializeToString
        )


@pytest.fixture
def flaky() -> Iterator[Callable[[int], tuple[Flaky, str]]]:
    servers: list[grpc.Server] = []

    def start(failures: int) -> tuple[Flaky, str]:
        handler = Flaky(failures)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return handler, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)


def test_idempotent_calls_are_retried_on_unavailable_and_submit_is_not(
    flaky: Callable[[int], tuple[Flaky, str]],
) -> None:
    handler, address = flaky(2)
    with Client(server=address, token="t", insecure=True) as client:
        assert client.jobs.Get(jobs_pb2.GetJobRequest(job_id="j-1"), metadata=client.metadata, timeout=10).job_id
        with pytest.raises(grpc.RpcError) as refused:
            client.jobs.Submit(jobs_pb2.SubmitJobRequest(), metadata=client.metadata, timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert handler.calls == {"Get": 3, "Submit": 1}
