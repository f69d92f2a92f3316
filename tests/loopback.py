"""Real HTTP(S) servers on 127.0.0.1 for the tests, and a throwaway PKI to serve them.

These are fakes of GitLab's API, the registry, the Kubernetes API and the app: real sockets, real
TLS (certificates issued here, client certificates required where the real server requires them),
responses shaped like the upstream APIs the code under test reads. Each server answers from a
mutable route table, so a test sets the state it needs and reads back what was requested.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)


# --------------------------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Issued:
    cert_pem: str
    key_pem: str


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class TestCa:
    """A CA that issues server certificates for 127.0.0.1 and client certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, common_name: str, *, server: bool, days: float = 365, expired: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        if expired:
            not_before, not_after = NOW - datetime.timedelta(days=400), NOW - datetime.timedelta(days=1)
        else:
            not_before, not_after = NOW - datetime.timedelta(hours=1), NOW + datetime.timedelta(days=days)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------
Reply = tuple[int, dict[str, str], bytes]
Route = Callable[["Request"], Reply] | Reply


@dataclass
class Request:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # names in lower case
    body: bytes
    client_cert: dict[str, Any] | None


def json_reply(status: int, document: Any, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(document).encode()


def text_reply(status: int, text: str) -> Reply:
    return status, {"Content-Type": "text/html; charset=utf-8"}, text.encode()


@dataclass
class Server:
    """One server: ``routes`` maps "METHOD /path" (or "/path" for GET) to a reply or a callable."""

    httpd: ThreadingHTTPServer
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def base(self) -> str:
        scheme = "https" if isinstance(self.httpd.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.port}"


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
            headers = {key.lower(): value for key, value in self.headers.items()}
            request = Request(self.command, self.path, headers, body, peer or None)
            server.requests.append(request)
            path = self.path.split("?", 1)[0]
            route = server.routes.get(f"{self.command} {path}") or (
                server.routes.get(path) if self.command == "GET" else None
            )
            if route is None:
                status, headers, payload = json_reply(404, {"message": "404 Not Found"})
            elif callable(route):
                status, headers, payload = route(request)
            else:
                status, headers, payload = route
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

    return Handler


@contextmanager
def serve(tmp: Path, *, tls: Issued | None = None, client_ca_pem: str | None = None) -> Iterator[Server]:
    """Start a server on 127.0.0.1 (HTTPS with ``tls``; client certificates required with ``client_ca_pem``)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server = Server(httpd)
    httpd.RequestHandlerClass = _handler(server)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert_file, key_file = tmp / f"server-{id(server)}.crt", tmp / f"server-{id(server)}.key"
        cert_file.write_text(tls.cert_pem)
        key_file.write_text(tls.key_pem)
        context.load_cert_chain(cert_file, key_file)
        if client_ca_pem is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=client_ca_pem)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
