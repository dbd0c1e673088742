"""Fixtures of the hook tests: hooks on the emulator whose waits are recorded, not slept."""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.protocol import RetryPolicy

#: Small backoffs so that bounds are easy to assert; the waits are recorded, never slept.
TEST_POLICY = RetryPolicy(max_attempts=4, backoff_initial=0.5, backoff_max=5.0, total_budget=60.0)


class SleepRecorder:
    """Stands in for ``time.sleep`` and ``asyncio.sleep``: records each wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_hook(
    noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch, sleeps: SleepRecorder
) -> Iterator[Callable[..., NoxusHook]]:
    """``make_hook(**extras)``: a hook on a connection to the emulator with those extras.

    Keyword ``api_key`` replaces the key, ``host`` the base URL, ``policy`` the retry policy.
    """
    hooks: list[NoxusHook] = []

    def make(
        *,
        api_key: str | None = None,
        host: str | None = None,
        policy: RetryPolicy = TEST_POLICY,
        **extra: Any,
    ) -> NoxusHook:
        conn_id = f"noxus_test_{len(hooks)}"
        connection = {
            "conn_type": "noxus",
            "host": noxus_emulator.url if host is None else host,
            "password": noxus_emulator.api_key if api_key is None else api_key,
            "extra": extra,
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        hook = NoxusHook(conn_id, retry_policy=policy, sleep=sleeps, async_sleep=sleeps.asleep)
        hooks.append(hook)
        return hook

    yield make
    for hook in hooks:
        hook.close()


@pytest.fixture
def hook(make_hook: Callable[..., NoxusHook]) -> NoxusHook:
    return make_hook()


class ApiCaller:
    """Calls a hook method the sync way (``hook.name``) or the async way (``client.a_name``).

    Lets one test cover both paths where the behaviour must be the same.
    """

    def __init__(self, mode: str, hook: NoxusHook) -> None:
        self.mode = mode
        self.hook = hook

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync":
            return getattr(self.hook, name)(*args, **kwargs)

        async def call() -> Any:
            async with self.hook.async_client() as client:
                return await getattr(client, f"a_{name}")(*args, **kwargs)

        return asyncio.run(call())


@pytest.fixture(params=["sync", "async"])
def call_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def api_for(call_mode: str) -> Callable[[NoxusHook], ApiCaller]:
    """``api_for(hook)``: a caller of that hook's methods, sync or async (the test runs twice)."""
    return lambda hook: ApiCaller(call_mode, hook)


@pytest.fixture
def api(api_for: Callable[[NoxusHook], ApiCaller], hook: NoxusHook) -> ApiCaller:
    return api_for(hook)


@pytest.fixture
def answered(noxus_emulator: Any) -> Callable[[str], dict[str, int]]:
    """``answered("get_run")`` -> ``{"200": n, "429": m}``: the emulator's answers on an endpoint."""

    def counts(endpoint: str) -> dict[str, int]:
        by_status: dict[str, int] = noxus_emulator.control.counters()["requests"].get(endpoint, {})
        return by_status

    return counts


# ---- small stand-in servers, for what the emulator cannot do ------------------------------------


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers ``GET /v1/admin/me`` with a key record that echoes the key, anything else with a 500
    whose body echoes the request headers (as a misconfigured proxy might).
    """

    def _answer(self) -> None:
        if self.path == "/v1/admin/me":
            status, body = 200, {"id": "key-1", "name": "fake", "value": self.headers.get("X-API-Key")}
        else:
            status, body = 500, {"detail": f"upstream failed; request headers were {dict(self.headers)}"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def _serve(context: ssl.SSLContext | None) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="noxus-echo-server", daemon=True)
    thread.start()
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def echo_server() -> Iterator[str]:
    """Base URL of a plain-HTTP server that echoes request headers in its 500 bodies."""
    yield from _serve(None)


@pytest.fixture
def self_signed_server(tmp_path: Any) -> Iterator[str]:
    """Base URL of the echo server behind TLS with a self-signed certificate (no trusted CA)."""
    import datetime

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
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    yield from _serve(context)
