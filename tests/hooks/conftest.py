"""Fixtures of the hook tests: hooks on the emulator whose waits are recorded, not slept."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.hostile_server import self_signed_certificate
from support.noxus_calls import ApiCaller, HookFactory, SleepRecorder, api_for, call_mode  # noqa: F401 (fixtures)

from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.protocol import RetryPolicy

#: Small backoffs so that bounds are easy to assert; the waits are recorded, never slept.
TEST_POLICY = RetryPolicy(max_attempts=4, backoff_initial=0.5, backoff_max=5.0, total_budget=60.0)


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
    factory = HookFactory(monkeypatch, sleeps, "noxus_test")

    def make(
        *,
        api_key: str | None = None,
        host: str | None = None,
        policy: RetryPolicy = TEST_POLICY,
        **extra: Any,
    ) -> NoxusHook:
        return factory.make(
            noxus_emulator.url if host is None else host,
            noxus_emulator.api_key if api_key is None else api_key,
            policy,
            extra,
        )

    yield make
    factory.close()


@pytest.fixture
def hook(make_hook: Callable[..., NoxusHook]) -> NoxusHook:
    return make_hook()


@pytest.fixture
def api(api_for: Callable[[NoxusHook], ApiCaller], hook: NoxusHook) -> ApiCaller:  # noqa: F811
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
    yield from _serve(self_signed_certificate(tmp_path).server_context())
