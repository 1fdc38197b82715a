"""neocloud.client.Client, the public Python client: what it refuses before anything is
sent, its environment defaults, and calls against a real JobService/AdminService on loopback."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import neocloud.client
from neocloud.client import CALL_TIMEOUT_S, DEFAULT_SERVER, Client, ClientConfigError
from neocloud.v1 import admin_pb2, jobs_pb2
from neocloud.wire import tls
from tests.api_server import ApiServer


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEOCLOUD_SERVER", raising=False)
    monkeypatch.delenv("NEOCLOUD_TOKEN", raising=False)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    server = ApiServer(tmp_path / "scheduler.db")
    yield server
    server.stop()


def test_config_errors_are_value_errors() -> None:
    assert issubclass(ClientConfigError, ValueError)


@pytest.mark.parametrize("server", ["scheduler.example.com:7443", "10.0.0.7:7443", "[2001:db8::1]:7443"])
def test_insecure_only_to_a_loopback_server(server: str) -> None:
    with pytest.raises(ClientConfigError, match=r"`insecure` is only allowed to a loopback scheduler, not '") as e:
        Client(server=server, token="nct_x", insecure=True)
    assert "use TLS (`ca`)" in str(e.value)


@pytest.mark.parametrize("server", ["localhost:7443", "127.0.0.1:7443", "[::1]:7443"])
def test_insecure_to_loopback_is_allowed(server: str) -> None:
    with Client(server=server, token="nct_x", insecure=True) as client:
        assert client.server == server


def test_a_missing_token_is_refused_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    message = "no API token: pass `token` or set NEOCLOUD_TOKEN (an operator makes one)"
    with pytest.raises(ClientConfigError) as e:
        Client(server="127.0.0.1:7443", insecure=True)
    assert str(e.value) == message
    monkeypatch.setenv("NEOCLOUD_TOKEN", "nct_from_env")
    with pytest.raises(ClientConfigError) as e:  # an explicit empty token is not replaced by the environment's
        Client(server="127.0.0.1:7443", token="", insecure=True)
    assert str(e.value) == message


@pytest.mark.parametrize(
    "files",
    [{"cert": "c.pem"}, {"key": "k.pem"}, {"cert": "c.pem", "key": "k.pem"}, {"ca": "ca.pem", "cert": "c.pem"}],
    ids=["cert", "key", "cert+key", "ca+cert"],
)
def test_a_client_certificate_needs_its_key_and_a_ca(files: dict[str, str]) -> None:
    with pytest.raises(ClientConfigError, match=r"^a client certificate needs `ca`, `cert` and `key` together$"):
        Client(server="scheduler.example.com:7443", token="nct_x", **files)  # type: ignore[arg-type]


def test_unusable_tls_files_are_config_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "ca.pem"
    with pytest.raises(ClientConfigError, match=rf"^cannot read the CA certificate {missing}: "):
        Client(server="scheduler.example.com:7443", token="nct_x", ca=missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ClientConfigError, match=r"garbage\.pem") as e:
        Client(server="scheduler.example.com:7443", token="nct_x", ca=garbage, cert=garbage, key=garbage)
    assert isinstance(e.value.__cause__, tls.TlsConfigError)


def test_a_malformed_server_is_refused() -> None:
    with pytest.raises(ClientConfigError, match=r"^`server`: 'scheduler' is not HOST:PORT$"):
        Client(server="scheduler", token="nct_x")


def test_environment_defaults_apply_only_where_the_argument_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    with Client(token="nct_x", insecure=True) as client:
        assert client.server == DEFAULT_SERVER
    monkeypatch.setenv("NEOCLOUD_SERVER", "127.0.0.1:9001")
    monkeypatch.setenv("NEOCLOUD_TOKEN", "nct_env")
    with Client(insecure=True) as client:
        assert client.server == "127.0.0.1:9001"
        assert client.metadata == (("authorization", "Bearer nct_env"),)
    with Client(server="localhost:9002", token="nct_arg", insecure=True) as client:
        assert client.server == "localhost:9002"
        assert client.metadata == (("authorization", "Bearer nct_arg"),)
    monkeypatch.setenv("NEOCLOUD_SERVER", "scheduler.example.com:7443")
    with pytest.raises(ClientConfigError, match="only allowed to a loopback"):  # the env's server is checked too
        Client(insecure=True)


def test_calls_reach_a_real_server_on_loopback(api: ApiServer) -> None:
    with Client(server=api.address, token=api.tokens["acme"], insecure=True) as client:
        spec = jobs_pb2.JobSpec(job_class=jobs_pb2.JOB_CLASS_SPOT, gpus=8, command=["python", "train.py"])
        job = client.jobs.Submit(
            jobs_pb2.SubmitJobRequest(spec=spec, client_request_id="r1"),
            metadata=client.metadata,
            timeout=CALL_TIMEOUT_S,
        )
        listed = client.jobs.List(jobs_pb2.ListJobsRequest(), metadata=client.metadata, timeout=CALL_TIMEOUT_S)
    assert job.tenant == "acme" and [j.job_id for j in listed.jobs] == [job.job_id]
    with pytest.raises(ValueError, match="closed channel"):  # closed on leaving the `with`
        client.jobs.List(jobs_pb2.ListJobsRequest(), metadata=client.metadata, timeout=CALL_TIMEOUT_S)

    with Client(server=api.address, token=api.tokens["operator"], insecure=True) as client:
        tenants = client.admin.ListTenants(
            admin_pb2.ListTenantsRequest(), metadata=client.metadata, timeout=CALL_TIMEOUT_S
        ).tenants
    assert [t.name for t in tenants] == ["acme", "globex"]

    with (
        Client(server=api.address, token="nct_not_a_token", insecure=True) as client,
        pytest.raises(grpc.RpcError) as e,
    ):
        client.jobs.List(jobs_pb2.ListJobsRequest(), metadata=client.metadata, timeout=CALL_TIMEOUT_S)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_tls_is_the_default_even_to_loopback(api: ApiServer) -> None:
    """Without `insecure` the client speaks TLS, which the plain-text test server cannot answer."""
    with Client(server=api.address, token=api.tokens["acme"]) as client, pytest.raises(grpc.RpcError) as e:
        client.jobs.List(jobs_pb2.ListJobsRequest(), metadata=client.metadata, timeout=5.0)
    assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert api.store.list_jobs() == []


def test_the_client_module_neither_parses_arguments_nor_prints() -> None:
    tree = ast.parse(Path(neocloud.client.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] == "argparse"}
    calls = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert "print" not in calls


def test_the_package_exports_the_client_lazily() -> None:
    code = (
        "import sys, neocloud\n"
        "assert 'grpc' not in sys.modules and 'neocloud.client' not in sys.modules\n"
        "from neocloud import Client\n"
        "import neocloud.client\n"
        "assert Client is neocloud.client.Client\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_retried_method_exists_and_only_reads() -> None:
    from google.protobuf import descriptor_pool

    from neocloud.v1 import nodes_pb2, usage_pb2  # noqa: F401 (registers the services)

    for service, methods in neocloud.client.IDEMPOTENT_METHODS.items():
        described = descriptor_pool.Default().FindServiceByName(service)
        for name in methods:
            assert described.FindMethodByName(name) is not None, f"{service}/{name}"
            assert name.startswith(("Get", "List", "Export")) or name == "Cancel", f"{name} may not be idempotent"


def test_the_readme_example_runs_against_a_real_server(
    api: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert "Client.from_config()" in example
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no config file: the environment says it all
    monkeypatch.setenv("NEOCLOUD_SERVER", api.address)
    monkeypatch.setenv("NEOCLOUD_TOKEN", api.tokens["acme"])
    monkeypatch.setenv("NEOCLOUD_INSECURE", "1")
    exec(compile(example, "README.md", "exec"), {})  # our own README, as a user would paste it
    (line,) = capsys.readouterr().out.splitlines()
    job_id, name, state = line.split()
    assert (name, state) == ("probe", "JOB_STATE_QUEUED") and api.store.get(job_id).spec.name == "probe"
