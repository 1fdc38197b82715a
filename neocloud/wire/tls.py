"""Mutual TLS between node agents and the scheduler: certificates, their files on disk, gRPC credentials.

One private CA signs a server certificate for the scheduler (serverAuth) and one client certificate per
node (clientAuth) whose common name is the node id; the scheduler reads that name back from the
handshake (`peer_node_id`) so that a node may report only for itself (docs/DESIGN.md section 6).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

NODE_ID_MAX_LEN = 128
_NODE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_HOST = re.compile(r"[A-Za-z0-9*_.-]+")
_CLOCK_SKEW = dt.timedelta(minutes=5)  # certificates are valid from a little before "now"
_EXPIRY_WARNING = dt.timedelta(days=30)

CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
SERVER_CERT, SERVER_KEY = "scheduler.pem", "scheduler-key.pem"
_UNUSED_KEY_USAGES = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "encipher_only")

PathArg = str | os.PathLike[str]


class TlsConfigError(ValueError):
    """A certificate or key file is missing or unusable; the message names the file and the fix."""


def validate_node_id(node_id: str) -> str:
    """Return `node_id` if it is 1-128 characters of [A-Za-z0-9._-] not starting with '.' or '-'."""
    if not isinstance(node_id, str) or not node_id:
        raise ValueError("node id must be a non-empty string")
    if len(node_id) > NODE_ID_MAX_LEN:
        raise ValueError(f"node id is {len(node_id)} characters long; the limit is {NODE_ID_MAX_LEN}")
    if not _NODE_ID.fullmatch(node_id):
        raise ValueError(
            f"bad node id {node_id!r}: use letters, digits, '.', '_' and '-' only, not starting with '.' or '-'"
        )
    return node_id


# --- certificate authoring -------------------------------------------------------------------------


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "neocloud")
    return x509.Name([org, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any, days: int) -> x509.CertificateBuilder:
    if days < 1:
        raise ValueError(f"certificate lifetime must be at least 1 day, not {days}")
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(ca: bool) -> x509.KeyUsage:
    unused = dict.fromkeys(_UNUSED_KEY_USAGES, False)
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, decipher_only=False, **unused)


def make_ca(common_name: str = "neocloud CA", days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed CA that may sign leaf certificates only; returns (cert PEM, key PEM)."""
    key = _new_key()
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _load_ca(ca_cert_pem: bytes, ca_key_pem: bytes) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(ca_cert_pem)
        key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"cannot read the CA certificate or key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an ECDSA key")
    if key.public_key() != cert.public_key():
        raise ValueError("the CA key does not belong to the CA certificate")
    return cert, key


def _issue(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> tuple[bytes, bytes]:
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    key = _new_key()
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        _builder(_name(common_name), ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOST.fullmatch(host) or host.startswith((".", "-")) or len(host) > 253:
        raise ValueError(f"bad host {host!r}: give a DNS name or an IP address")
    return x509.DNSName(host)


def issue_server_cert(ca_cert_pem: bytes, ca_key_pem: bytes, hosts: list[str], days: int = 825) -> tuple[bytes, bytes]:
    """The scheduler's certificate: every host (DNS name or IP) in the SAN, CN = first host, serverAuth."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or IP address")
    sans = [_san(h) for h in hosts]
    return _issue(ca_cert_pem, ca_key_pem, hosts[0], sans, ExtendedKeyUsageOID.SERVER_AUTH, days)


def issue_node_cert(ca_cert_pem: bytes, ca_key_pem: bytes, node_id: str, days: int = 825) -> tuple[bytes, bytes]:
    """A node's client certificate: CN and SAN DNSName = node id, clientAuth."""
    validate_node_id(node_id)
    return _issue(ca_cert_pem, ca_key_pem, node_id, [x509.DNSName(node_id)], ExtendedKeyUsageOID.CLIENT_AUTH, days)


# --- files on disk ---------------------------------------------------------------------------------


def ca_paths(directory: PathArg) -> tuple[Path, Path]:
    return Path(directory) / CA_CERT, Path(directory) / CA_KEY


def server_paths(directory: PathArg) -> tuple[Path, Path]:
    return Path(directory) / SERVER_CERT, Path(directory) / SERVER_KEY


def node_paths(directory: PathArg, node_id: str) -> tuple[Path, Path]:
    validate_node_id(node_id)
    return Path(directory) / f"node-{node_id}.pem", Path(directory) / f"node-{node_id}-key.pem"


def check_writable(paths: list[Path], force: bool = False) -> None:
    """Raise FileExistsError naming the first path that exists, unless `force`."""
    for path in paths:
        if not force and os.path.lexists(path):
            raise FileExistsError(f"{path} already exists; pass --force (force=True) to replace it")


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Create `path` with exactly `mode`; with `force`, replace it atomically through a temporary file."""
    target = path.with_name(f".{path.name}.tmp{os.getpid()}") if force else path
    if force and os.path.lexists(target):
        os.unlink(target)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as e:
        raise FileExistsError(f"{path} already exists; pass --force (force=True) to replace it") from e
    try:
        try:
            os.fchmod(fd, mode)  # the umask must not narrow or widen it
            os.write(fd, data)
        finally:
            os.close(fd)
        if force:
            os.replace(target, path)
    except BaseException:
        os.unlink(target)
        raise


def _write_pair(cert_path: Path, key_path: Path, pair: tuple[bytes, bytes], force: bool) -> list[Path]:
    check_writable([cert_path, key_path], force)
    _write(key_path, pair[1], 0o600, force)
    _write(cert_path, pair[0], 0o644, force)
    logger.info("wrote %s and %s", cert_path, key_path)
    return [cert_path, key_path]


def read_ca(directory: PathArg) -> tuple[bytes, bytes]:
    """The CA's (cert PEM, key PEM) from `directory`, checked to belong together; TlsConfigError if not."""
    cert_path, key_path = ca_paths(directory)
    hint = f"run `neocloud certs ca --dir {directory}` first"
    cert, key = _read(cert_path, hint), _read(key_path, hint)
    try:
        _load_ca(cert, key)
    except ValueError as e:
        raise TlsConfigError(f"{cert_path}, {key_path}: {e}; {hint}") from e
    return cert, key


def write_ca(directory: PathArg, force: bool = False, days: int = 3650) -> list[Path]:
    """Write ca.pem and ca-key.pem (0600) into `directory`; returns the paths written."""
    cert_path, key_path = ca_paths(directory)
    check_writable([cert_path, key_path], force)
    Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
    return _write_pair(cert_path, key_path, make_ca(days=days), force)


def write_server(directory: PathArg, hosts: list[str], force: bool = False, days: int = 825) -> list[Path]:
    """Write scheduler.pem and scheduler-key.pem, signed by the CA in `directory`."""
    cert_path, key_path = server_paths(directory)
    ca_cert, ca_key = read_ca(directory)
    return _write_pair(cert_path, key_path, issue_server_cert(ca_cert, ca_key, hosts, days), force)


def write_node(directory: PathArg, node_id: str, force: bool = False, days: int = 825) -> list[Path]:
    """Write node-<id>.pem and node-<id>-key.pem, signed by the CA in `directory`."""
    cert_path, key_path = node_paths(directory, node_id)
    ca_cert, ca_key = read_ca(directory)
    return _write_pair(cert_path, key_path, issue_node_cert(ca_cert, ca_key, node_id, days), force)


# --- gRPC credentials ------------------------------------------------------------------------------

_HINTS = {
    "ca": "run `neocloud certs ca --dir DIR` and copy ca.pem to every host",
    "server": "run `neocloud certs scheduler --dir DIR --host HOST`",
    "node": "run `neocloud certs node --dir DIR NODE_ID` and copy the pair to that node",
}


def _read(path: PathArg, hint: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TlsConfigError(f"{path}: cannot read it ({e.strerror or e}); {hint}") from e


def _read_cert(path: PathArg, role: str) -> tuple[bytes, x509.Certificate]:
    data = _read(path, _HINTS[role])
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise TlsConfigError(f"{path}: not a PEM certificate ({e}); {_HINTS[role]}") from e
    not_after = certs[0].not_valid_after_utc
    now = dt.datetime.now(dt.UTC)
    if not_after < now:
        raise TlsConfigError(
            f"{path}: the certificate expired at {not_after:%Y-%m-%d %H:%M} UTC; renew it: {_HINTS[role]}"
        )
    if not_after - now < _EXPIRY_WARNING:
        logger.warning("%s expires at %s UTC; renew it soon", path, f"{not_after:%Y-%m-%d %H:%M}")
    return data, certs[0]


def _read_key_for(key_file: PathArg, cert_file: PathArg, cert: x509.Certificate, role: str) -> bytes:
    data = _read(key_file, _HINTS[role])
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise TlsConfigError(f"{key_file}: not an unencrypted PEM private key ({e}); {_HINTS[role]}") from e
    if key.public_key() != cert.public_key():
        raise TlsConfigError(f"{key_file}: this key does not belong to the certificate {cert_file}; {_HINTS[role]}")
    return data


def server_credentials(cert_file: PathArg, key_file: PathArg, ca_file: PathArg) -> grpc.ServerCredentials:
    """Scheduler-side credentials that refuse any client without a certificate signed by the CA."""
    ca, _ = _read_cert(ca_file, "ca")
    cert, parsed = _read_cert(cert_file, "server")
    key = _read_key_for(key_file, cert_file, parsed, "server")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def api_server_credentials(cert_file: PathArg, key_file: PathArg) -> grpc.ServerCredentials:
    """The API port's credentials: ordinary server TLS (a chain from any CA the clients trust,
    e.g. a public one), no client certificate asked for; callers prove who they are by token."""
    cert, parsed = _read_cert(cert_file, "server")
    key = _read_key_for(key_file, cert_file, parsed, "server")
    return grpc.ssl_server_credentials([(key, cert)], require_client_auth=False)


def channel_credentials(ca_file: PathArg, cert_file: PathArg, key_file: PathArg) -> grpc.ChannelCredentials:
    """Agent-side credentials: trust only the CA, present the node's certificate."""
    ca, _ = _read_cert(ca_file, "ca")
    cert, parsed = _read_cert(cert_file, "node")
    key = _read_key_for(key_file, cert_file, parsed, "node")
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def peer_node_id(context: grpc.ServicerContext | grpc.aio.ServicerContext) -> str | None:
    """The authenticated client's node id (its certificate's CN), or None on a non-TLS transport."""
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    names = auth.get("x509_common_name") or []
    if len(names) != 1:
        logger.warning("TLS peer %s presented %d common names; treating it as unidentified", context.peer(), len(names))
        return None
    return names[0].decode("utf-8", errors="replace")
