"""A tiny HTTP server on 127.0.0.1 whose every answer a test scripts, down to the byte.

The emulator follows the Noxus API; this server does exactly what a test tells it, including what
no real server should do: trickle bytes, cut a body short, redirect elsewhere, set cookies. It
speaks HTTP/1.1 over raw sockets, one thread per connection, records every request it reads, and
is stopped (listening socket and open connections closed, threads joined) on every exit path::

    def handler(request: Request, conn: Conn) -> None:
        conn.reply(200, {"id": "run-1", "status": "completed"})

    with HostileServer(handler) as server:
        ...  # server.url, server.requests
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: Longest a test server waits for a request's bytes before giving the connection up.
READ_TIMEOUT_S = 10.0
#: Longest ``stop`` waits for a connection thread to end.
JOIN_TIMEOUT_S = 5.0


@dataclass
class Request:
    """One request as the server read it.

    :param method: ``GET``, ``POST``...
    :param target: the request target as sent: a path with its query, or an absolute URL (proxies).
    :param headers: header names in lower case.
    :param body: the body (read by ``Content-Length``).
    """

    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Conn:
    """The connection a handler answers on. After the handler returns, the server reads the next
    request on it, unless it was closed."""

    sock: socket.socket
    stopping: threading.Event
    closed: bool = field(default=False)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def head(self, status: int, headers: Mapping[str, str] | None = None, body: bytes = b"") -> None:
        """Status line and headers, with no ``Content-Length`` added; then ``body``, in one send."""
        lines = [f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def reply(self, status: int, body: Any = b"", headers: Mapping[str, str] | None = None) -> None:
        """A whole answer; a body that is not bytes is sent as JSON."""
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.head(status, {"Content-Length": str(len(body)), **(headers or {})}, body)

    def trickle(self, data: bytes, every: float) -> None:
        """Send ``data`` one byte every ``every`` seconds, until it is sent or the server stops."""
        for index in range(len(data)):
            if self.stopping.wait(every):
                return
            try:
                self.send(data[index : index + 1])
            except OSError:
                return

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds``, less if the server stops; True if it stops."""
        return self.stopping.wait(seconds)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


Handler = Callable[[Request, Conn], None]


class HostileServer:
    """A scripted HTTP/1.1 server on a free port of ``host``.

    :param handler: called with each request and its connection; it answers (or misbehaves).
    :param host: the loopback address to listen on.
    :param tls: a server-side TLS context, for an ``https://`` server.
    """

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
        self.handler = handler
        self.host = host
        self.tls = tls
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def __enter__(self) -> HostileServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Close the listener and every open connection; join the threads."""
        self._stopping.set()
        if self._acceptor.is_alive():
            self._acceptor.join(JOIN_TIMEOUT_S)
        self._listener.close()
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
        stuck = [thread.name for thread in threads if thread.is_alive()]
        assert not stuck, f"hostile server threads did not end: {stuck}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), name="hostile-conn", daemon=True)
            with self._lock:
                self._socks.append(sock)
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self.tls is not None:
                sock.settimeout(READ_TIMEOUT_S)
                sock = self.tls.wrap_socket(sock, server_side=True)
                with self._lock:
                    self._socks.append(sock)
            sock.settimeout(READ_TIMEOUT_S)
            conn = Conn(sock, self._stopping)
            reader = sock.makefile("rb")
            while not conn.closed and not self._stopping.is_set():
                request = _read_request(reader)
                if request is None:
                    return
                with self._lock:
                    self.requests.append(request)
                self.handler(request, conn)
        except (OSError, ssl.SSLError, ValueError):
            return  # the client went away, or the test stopped the server
        except BaseException as error:  # a broken handler: reported by the test's assertions
            self.errors.append(error)
        finally:
            with contextlib.suppress(OSError):
                sock.close()


def _read_request(reader: Any) -> Request | None:
    line = reader.readline(65537)
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        header = reader.readline(65537).decode("latin-1")
        if header in ("\r\n", "\n", ""):
            break
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = reader.read(length) if length else b""
    return Request(method, target, headers, body)


@dataclass
class ServerCertificate:
    """A self-signed certificate for 127.0.0.1 (no CA trusts it): clients need ``verify_ssl`` off."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def self_signed_certificate(directory: Path) -> ServerCertificate:
    """Write a self-signed certificate and key for 127.0.0.1 into ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    loopback = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(loopback, critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ServerCertificate(cert_file, key_file)
