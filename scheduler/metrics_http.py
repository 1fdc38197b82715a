"""The scheduler's /metrics over HTTP or HTTPS, optionally behind a bearer token: its
series name tenants and their bills, so a site that cannot firewall the port closes it.

prometheus_client's start_http_server takes a certificate but no token, so this serves its
WSGI app behind a small check of the Authorization header. The TLS handshake runs on the
request's own thread (not the accepting one), so a client that connects and says nothing
delays no one but itself, for at most REQUEST_TIMEOUT_S."""

from __future__ import annotations

import hmac
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from neocloud.scheduler.ingest.service import RateLimitedLog

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0
# A token file holds one line; anything longer is not a token file.
MAX_TOKEN_BYTES = 4096
_refusals = RateLimitedLog(log=logger)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def read_token(path: str) -> bytes:
    """The bearer token in `path` (its first line, at least 16 characters)."""
    data = Path(path).read_bytes()[: MAX_TOKEN_BYTES + 1]
    token = data.strip().split(b"\n", 1)[0].strip()
    if len(data) > MAX_TOKEN_BYTES or len(token) < 16:
        raise ValueError(f"{path}: a metrics token file holds one token of 16 to {MAX_TOKEN_BYTES} characters")
    return token


def require_bearer(app: WsgiApp, token: bytes) -> WsgiApp:
    """`app` for requests that carry `Authorization: Bearer TOKEN`; 401 for the rest."""
    expected = b"Bearer " + token

    def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        if hmac.compare_digest(given, expected):
            return app(environ, start_response)
        _refusals.warning("metrics: refused a scrape from %s without the token (401)", environ.get("REMOTE_ADDR"))
        start_response(
            "401 Unauthorized",
            [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="neocloud metrics"')],
        )
        return [b"a bearer token is required\n"]

    return guarded


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: Prometheus makes one every few seconds."""


class _Server(ThreadingWSGIServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed handshake, a reset or a timeout: one rate-limited line, never a traceback.
        _refusals.warning("metrics: a request from %s failed", client_address[0] if client_address else "?")


class MetricsServer:
    """/metrics on (host, port): HTTPS when given a certificate and key, and a bearer
    token check when given a token. `port` 0 picks a free one (see .port)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        cert_file: str | None = None,
        key_file: str | None = None,
        token_file: str | None = None,
    ) -> None:
        if bool(cert_file) != bool(key_file):
            raise ValueError("--metrics-cert and --metrics-key go together")
        app: WsgiApp = make_wsgi_app(registry)
        if token_file:
            app = require_bearer(app, read_token(token_file))
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]  # "::" listens on IPv6
        server_class = type("MetricsHTTPServer", (_Server,), {"address_family": family})
        self._httpd: WSGIServer = make_server(host, port, app, server_class, handler_class=_Handler)
        if cert_file and key_file:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(cert_file, key_file)
            except (OSError, ssl.SSLError) as e:
                raise ValueError(f"/metrics certificate {cert_file} or key {key_file}: {e}") from e
            self._httpd.socket = context.wrap_socket(  # type: ignore[assignment]  # an SSLSocket is a socket
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port: int = self._httpd.server_port
        self.tls = bool(cert_file)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="neocloud-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
