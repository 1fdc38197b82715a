"""Revoking node certificates: a CRL beside the CA, and the scheduler's live view of it.

gRPC Python's `ssl_server_credentials` cannot check a CRL during the handshake (the
C core's crl_directory / CrlProvider are not exposed to Python, grpc 1.85), so a
revoked node is refused at its first RPC instead: the scheduler reads the peer's
certificate from the handshake (`x509_pem_cert` in the auth context) and compares
its serial with the CRL. The handshake has already proved the certificate was
signed by our CA, and our CA gives every certificate a random 159-bit serial, so
the serial names one certificate.

`neocloud certs revoke` writes `crl.pem` (signed by the CA key, so a file someone
else wrote is not believed) next to `ca.pem`; `RevocationList.refresh` rereads it
when its mtime, size or inode change, so a revocation needs no restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from neocloud.wire import tls

logger = logging.getLogger(__name__)

CRL = "crl.pem"
_CRL_LIFETIME = dt.timedelta(days=3650)  # the scheduler rereads the file on change, not at nextUpdate
_SERIAL = re.compile(r"(0x)?[0-9a-fA-F:]{1,64}")


def crl_path(ca_file: tls.PathArg) -> Path:
    """Where the CRL of the CA in `ca_file` lives: beside it."""
    return Path(ca_file).parent / CRL


def fmt_serial(serial: int) -> str:
    return f"0x{serial:x}"


def parse_serial(text: str) -> int:
    """'0x1f2e...', '1F:2E:...' or plain hex -> the serial; ValueError otherwise."""
    if not _SERIAL.fullmatch(text):
        raise ValueError(f"{text!r} is neither a node id with a certificate in the directory nor a hex serial")
    return int(text.removeprefix("0x").replace(":", ""), 16)


def _load_crl(path: Path, ca: x509.Certificate) -> x509.CertificateRevocationList:
    """The CRL at `path`, checked to be signed by the CA; ValueError otherwise."""
    crl = x509.load_pem_x509_crl(path.read_bytes())
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise ValueError(f"{path} is not signed by the CA {ca.subject.rfc4514_string()}")
    return crl


def revoke(directory: tls.PathArg, target: str, now: dt.datetime | None = None) -> tuple[int, str]:
    """Add a node's certificate (node-TARGET.pem in `directory`) or a serial to the CA's CRL
    and rewrite it atomically; returns (serial, what was revoked). Revoking twice is a no-op."""
    directory = Path(directory)
    ca_pem, key_pem = tls.read_ca(directory)
    ca = x509.load_pem_x509_certificate(ca_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    try:
        cert_path: Path | None = tls.node_paths(directory, target)[0]
    except ValueError:  # not a node id: a serial, then
        cert_path = None
    if cert_path is not None and cert_path.exists():
        serial, what = x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number, f"node {target}"
    else:
        serial, what = parse_serial(target), f"serial {target}"
    path = directory / CRL
    revoked = list(_load_crl(path, ca)) if path.exists() else []
    if any(r.serial_number == serial for r in revoked):
        return serial, what
    at = now or dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder().issuer_name(ca.subject).last_update(at).next_update(at + _CRL_LIFETIME)
    )
    entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at).build()
    for r in [*revoked, entry]:
        builder = builder.add_revoked_certificate(r)
    crl = builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    tmp = path.with_name(f".{CRL}.tmp{os.getpid()}")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, path)  # a reader sees the old list or the new one, never half of one
    logger.warning("revoked certificate %s (%s) in %s", fmt_serial(serial), what, path)
    return serial, what


class RevocationList:
    """The serials revoked by the CRL beside `ca_file`, reread when the file changes. A missing
    CRL revokes nothing; an unreadable or forged one is logged and the last good list kept."""

    def __init__(self, ca_file: tls.PathArg) -> None:
        self._ca = x509.load_pem_x509_certificate(Path(ca_file).read_bytes())
        self.path = crl_path(ca_file)
        self._seen: tuple[int, int, int] | None = None
        self.serials: frozenset[int] = frozenset()
        self.refresh()

    def refresh(self) -> bool:
        """Reread the CRL if it changed; True if the list of serials changed."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            seen, serials = None, frozenset[int]()
        else:
            seen = (st.st_mtime_ns, st.st_size, st.st_ino)
            if seen == self._seen:
                return False
            try:
                serials = frozenset(r.serial_number for r in _load_crl(self.path, self._ca))
            except (OSError, ValueError) as e:
                logger.error(
                    "ignoring the certificate revocation list %s (keeping the last good one): %s", self.path, e
                )
                self._seen = seen
                return False
        self._seen = seen
        changed, self.serials = serials != self.serials, serials
        if changed:
            logger.warning("certificate revocation list %s: %d revoked", self.path, len(serials))
        return changed

    def refusal(self, serial: int | None, node_id: str) -> str | None:
        """Why a peer with this certificate serial is refused, or None."""
        if serial is None or serial not in self.serials:
            return None
        return f"certificate serial {fmt_serial(serial)} of node {node_id} is revoked"


def peer_serial(context: grpc.ServicerContext | grpc.aio.ServicerContext) -> int | None:
    """The serial of the certificate the TLS peer presented, or None (no TLS, no certificate)."""
    pems = context.auth_context().get("x509_pem_cert") or []
    if len(pems) != 1:
        return None
    return x509.load_pem_x509_certificate(pems[0]).serial_number
