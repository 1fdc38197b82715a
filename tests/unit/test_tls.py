from __future__ import annotations

import argparse
import ipaddress
import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from neocloud.cli import certs as certs_cli
from neocloud.wire import tls

HOSTS = ["localhost", "127.0.0.1"]


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def assert_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    cert.verify_directly_issued_by(ca)  # issuer name and signature
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return tls.make_ca()


@pytest.fixture
def certs_dir(tmp_path: Path) -> Path:
    tls.write_ca(tmp_path)
    tls.write_server(tmp_path, HOSTS)
    tls.write_node(tmp_path, "node-a")
    return tmp_path


def test_ca_is_a_self_signed_ecdsa_ca(ca: tuple[bytes, bytes]) -> None:
    cert = load(ca[0])
    assert common_name(cert) == "neocloud CA"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha256"
    assert_signed_by(cert, cert)


def test_server_cert_chains_to_ca_and_names_every_host(ca: tuple[bytes, bytes]) -> None:
    cert_pem, _ = tls.issue_server_cert(*ca, ["sched.example.com", "localhost", "10.0.0.7", "::1"])
    cert = load(cert_pem)
    assert_signed_by(cert, load(ca[0]))
    assert common_name(cert) == "sched.example.com"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["sched.example.com", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7"), ipaddress.ip_address("::1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_node_cert_chains_to_ca_and_names_the_node(ca: tuple[bytes, bytes]) -> None:
    cert = load(tls.issue_node_cert(*ca, "gpu-01.rack_3")[0])
    assert_signed_by(cert, load(ca[0]))
    assert common_name(cert) == "gpu-01.rack_3"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gpu-01.rack_3"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_a_key_from_another_ca_is_refused(ca: tuple[bytes, bytes]) -> None:
    _, other_key = tls.make_ca()
    with pytest.raises(ValueError, match="does not belong"):
        tls.issue_node_cert(ca[0], other_key, "node-a")


@pytest.mark.parametrize("node_id", ["", "x" * 129, "a/b", "..", ".hidden", "-rf", "a b", "nodé"])
def test_bad_node_ids_are_rejected(ca: tuple[bytes, bytes], node_id: str) -> None:
    with pytest.raises(ValueError, match="node id"):
        tls.validate_node_id(node_id)
    with pytest.raises(ValueError, match="node id"):
        tls.issue_node_cert(*ca, node_id)


@pytest.mark.parametrize("node_id", ["a", "x" * 128, "gpu-01", "n1.rack2", "_n", "A.b-c_d"])
def test_good_node_ids_are_accepted(node_id: str) -> None:
    assert tls.validate_node_id(node_id) == node_id


def test_bad_hosts_are_rejected(ca: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="at least one host"):
        tls.issue_server_cert(*ca, [])
    with pytest.raises(ValueError, match="bad host"):
        tls.issue_server_cert(*ca, ["a b"])


def test_files_are_written_with_private_keys_0600(certs_dir: Path) -> None:
    names = {p.name for p in certs_dir.iterdir()}
    assert names == {
        "ca.pem",
        "ca-key.pem",
        "scheduler.pem",
        "scheduler-key.pem",
        "node-node-a.pem",
        "node-node-a-key.pem",
    }
    for name in names:
        mode = stat.S_IMODE((certs_dir / name).stat().st_mode)
        assert mode == (0o600 if name.endswith("-key.pem") else 0o644), name
    ca_cert = load((certs_dir / "ca.pem").read_bytes())
    assert_signed_by(load((certs_dir / "node-node-a.pem").read_bytes()), ca_cert)
    assert_signed_by(load((certs_dir / "scheduler.pem").read_bytes()), ca_cert)


def test_overwrite_is_refused_unless_forced(certs_dir: Path) -> None:
    before = (certs_dir / "node-node-a.pem").read_bytes()
    with pytest.raises(FileExistsError, match=r"node-node-a\.pem"):
        tls.write_node(certs_dir, "node-a")
    with pytest.raises(FileExistsError, match=r"ca\.pem"):
        tls.write_ca(certs_dir)
    assert (certs_dir / "node-node-a.pem").read_bytes() == before
    (certs_dir / "node-node-a-key.pem").chmod(0o644)
    assert tls.write_node(certs_dir, "node-a", force=True) == [
        certs_dir / "node-node-a.pem",
        certs_dir / "node-node-a-key.pem",
    ]
    assert (certs_dir / "node-node-a.pem").read_bytes() != before
    assert stat.S_IMODE((certs_dir / "node-node-a-key.pem").stat().st_mode) == 0o600
    assert not [p for p in certs_dir.iterdir() if p.name.startswith(".")]


def test_issuing_without_a_ca_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(tls.TlsConfigError, match=r"ca\.pem.*neocloud certs ca"):
        tls.write_node(tmp_path, "node-a")
    assert list(tmp_path.iterdir()) == []


def test_credential_load_errors_name_the_file(certs_dir: Path) -> None:
    missing = certs_dir / "nope.pem"
    with pytest.raises(tls.TlsConfigError, match=r"nope\.pem.*neocloud certs"):
        tls.channel_credentials(missing, certs_dir / "node-node-a.pem", certs_dir / "node-node-a-key.pem")
    garbage = certs_dir / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(tls.TlsConfigError, match=r"garbage\.pem: not a PEM certificate"):
        tls.server_credentials(garbage, certs_dir / "scheduler-key.pem", certs_dir / "ca.pem")
    with pytest.raises(tls.TlsConfigError, match=r"garbage\.pem: not an unencrypted PEM private key"):
        tls.server_credentials(certs_dir / "scheduler.pem", garbage, certs_dir / "ca.pem")
    with pytest.raises(tls.TlsConfigError, match="does not belong"):
        tls.server_credentials(certs_dir / "scheduler.pem", certs_dir / "node-node-a-key.pem", certs_dir / "ca.pem")


# --- a real mTLS handshake over loopback -----------------------------------------------------------


def _whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
    return (tls.peer_node_id(context) or "<none>").encode()


@pytest.fixture
def server(certs_dir: Path) -> Iterator[tuple[int, int]]:
    """A generic gRPC server: (mTLS port, insecure port), both on 127.0.0.1."""
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler("test.Who", {"Am": grpc.unary_unary_rpc_method_handler(_whoami)})
    srv.add_generic_rpc_handlers([handler])
    creds = tls.server_credentials(certs_dir / "scheduler.pem", certs_dir / "scheduler-key.pem", certs_dir / "ca.pem")
    port = srv.add_secure_port("127.0.0.1:0", creds)
    insecure_port = srv.add_insecure_port("127.0.0.1:0")
    assert port and insecure_port
    srv.start()
    yield port, insecure_port
    srv.stop(None)


def _call(target: str, creds: grpc.ChannelCredentials | None) -> str:
    with grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target) as channel:
        reply: bytes = channel.unary_unary("/test.Who/Am")(b"", timeout=10)
    return reply.decode()


def test_mtls_client_is_identified_by_its_certificate(certs_dir: Path, server: tuple[int, int]) -> None:
    creds = tls.channel_credentials(
        certs_dir / "ca.pem", certs_dir / "node-node-a.pem", certs_dir / "node-node-a-key.pem"
    )
    assert _call(f"localhost:{server[0]}", creds) == "node-a"


def test_plaintext_peer_has_no_node_id(server: tuple[int, int]) -> None:
    assert _call(f"127.0.0.1:{server[1]}", None) == "<none>"


def test_client_without_a_certificate_is_refused(certs_dir: Path, server: tuple[int, int]) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=(certs_dir / "ca.pem").read_bytes())
    with pytest.raises(grpc.RpcError) as err:
        _call(f"localhost:{server[0]}", creds)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_with_a_certificate_from_another_ca_is_refused(
    certs_dir: Path, server: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = tmp_path_factory.mktemp("other-ca")
    tls.write_ca(other)
    tls.write_node(other, "node-a")
    # The client trusts the real CA, so only the server's check of the client certificate can fail.
    creds = tls.channel_credentials(certs_dir / "ca.pem", other / "node-node-a.pem", other / "node-node-a-key.pem")
    with pytest.raises(grpc.RpcError) as err:
        _call(f"localhost:{server[0]}", creds)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_server_certificate_cannot_act_as_a_node(certs_dir: Path, server: tuple[int, int]) -> None:
    creds = tls.channel_credentials(certs_dir / "ca.pem", certs_dir / "scheduler.pem", certs_dir / "scheduler-key.pem")
    with pytest.raises(grpc.RpcError) as err:
        _call(f"localhost:{server[0]}", creds)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


# --- `neocloud certs` ------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="neocloud")
    certs_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def test_cli_writes_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("certs", "ca", "--dir", str(tmp_path)) == 0
    assert run_cli("certs", "scheduler", "--dir", str(tmp_path), "--host", "sched.internal", "--host", "10.1.2.3") == 0
    assert run_cli("certs", "node", "--dir", str(tmp_path), "gpu-01", "gpu-02") == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 8 and all(Path(p).is_file() for p in printed)
    san = load((tmp_path / "scheduler.pem").read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["sched.internal"]
    assert stat.S_IMODE((tmp_path / "node-gpu-02-key.pem").stat().st_mode) == 0o600


def test_cli_scheduler_defaults_to_loopback(tmp_path: Path) -> None:
    tls.write_ca(tmp_path)
    assert run_cli("certs", "scheduler", "--dir", str(tmp_path)) == 0
    san = load((tmp_path / "scheduler.pem").read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_cli_bad_node_id_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tls.write_ca(tmp_path)
    before = sorted(tmp_path.iterdir())
    assert run_cli("certs", "node", "--dir", str(tmp_path), "good-1", "../evil") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'../evil'" in err
    assert sorted(tmp_path.iterdir()) == before


def test_cli_refuses_missing_ca_and_existing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("certs", "node", "--dir", str(tmp_path), "n1") == 2
    assert "neocloud certs ca" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    tls.write_ca(tmp_path)
    tls.write_node(tmp_path, "n2")
    before = sorted(tmp_path.iterdir())
    assert run_cli("certs", "node", "--dir", str(tmp_path), "n1", "n2") == 2
    assert "node-n2.pem already exists" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == before
    assert run_cli("certs", "node", "--dir", str(tmp_path), "--force", "n1", "n2") == 0
