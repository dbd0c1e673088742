"""The API key never shows in a log line or an exception's text, on any path, sync or async.

A distinctive key is used so that a leak anywhere in captured output is found; logging is at
DEBUG for every logger while the hook works.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_noxus.emulator.server import EmulatorServer
from airflow_provider_noxus.exceptions import (
    NoxusAuthError,
    NoxusServerError,
    NoxusTimeoutError,
    NoxusTLSError,
    NoxusTransportError,
)
from airflow_provider_noxus.hooks._transport import REDACTED
from airflow_provider_noxus.hooks.noxus import NoxusHook

SECRET = "nxk-LEAKCANARY-7f3c9a1e5b2d4c6f8a0b"
WRONG_SECRET = "nxk-WRONGCANARY-0e1d2c3b4a5f6e7d"


@pytest.fixture(scope="module")
def secret_emulator() -> Iterator[EmulatorServer]:
    """An emulator that knows only the distinctive key."""
    with EmulatorServer(port=0, api_keys=[SECRET]) as server:
        yield server


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch, sleeps: Any) -> Iterator[Callable[..., NoxusHook]]:
    """``connect(url, key, **extras)``: a hook on that server with that key."""
    hooks: list[NoxusHook] = []

    def make(url: str, key: str = SECRET, **extra: Any) -> NoxusHook:
        conn_id = f"noxus_leak_{len(hooks)}"
        connection = {"conn_type": "noxus", "host": url, "password": key, "extra": extra}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        hooks.append(NoxusHook(conn_id, sleep=sleeps, async_sleep=sleeps.asleep))
        return hooks[-1]

    yield make
    for hook in hooks:
        hook.close()


@pytest.fixture
def output(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """Everything logged or printed so far in the test, every logger at DEBUG."""
    caplog.set_level(logging.DEBUG)

    def read() -> str:
        captured = capfd.readouterr()
        return caplog.text + captured.out + captured.err

    return read


def _assert_clean(error: BaseException, text: str) -> None:
    for secret in (SECRET, WRONG_SECRET):
        assert secret not in str(error)
        assert secret not in repr(error)
        assert secret not in str(error.__dict__)
        assert secret not in text


def test_a_whole_run_logs_method_path_and_status_only(
    connect: Callable[..., NoxusHook], secret_emulator: EmulatorServer, output: Callable[[], str]
) -> None:
    hook = connect(secret_emulator.url)
    echo = secret_emulator.control.workflow_id("echo")
    run_id = hook.create_run(echo, {"text": "x"})["id"]
    hook.wait_for_run(echo, run_id, strategy="stream")
    assert SECRET not in json.dumps(hook.get_me())
    assert hook.test_connection()[0]
    text = output()
    assert f"POST /v1/workflows/{echo}/runs -> 200" in text, "debug request logging is missing"
    assert SECRET not in text
    assert SECRET not in repr(hook.settings)


def test_wrong_key(
    api_for: Any,
    connect: Callable[..., NoxusHook],
    secret_emulator: EmulatorServer,
    output: Callable[[], str],
) -> None:
    hook = connect(secret_emulator.url, WRONG_SECRET)
    with pytest.raises(NoxusAuthError) as caught:
        api_for(hook)("get_run_status", "some-run")
    ok, message = hook.test_connection()
    assert not ok
    assert WRONG_SECRET not in message
    _assert_clean(caught.value, output())


def test_connection_refused(
    api_for: Any, connect: Callable[..., NoxusHook], output: Callable[[], str]
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    hook = connect(f"http://127.0.0.1:{closed}")
    with pytest.raises(NoxusTransportError) as caught:
        api_for(hook)("get_me")
    _assert_clean(caught.value, output())


def test_read_timeout(
    api_for: Any,
    connect: Callable[..., NoxusHook],
    secret_emulator: EmulatorServer,
    output: Callable[[], str],
) -> None:
    hook = connect(secret_emulator.url, timeout=0.2)
    secret_emulator.control.add_fault("me", "latency", seconds=1.0, count=-1)
    try:
        with pytest.raises(NoxusTimeoutError) as caught:
            api_for(hook)("get_me")
    finally:
        secret_emulator.control.clear_faults()
    _assert_clean(caught.value, output())


def test_5xx_whose_body_echoes_the_key(
    api_for: Any, connect: Callable[..., NoxusHook], echo_server: str, output: Callable[[], str]
) -> None:
    hook = connect(echo_server)
    with pytest.raises(NoxusServerError) as caught:
        api_for(hook)("get_run_status", "r1")
    assert "X-Api-Key" in str(caught.value) or "X-API-Key" in str(caught.value), "the echo was not exercised"
    assert REDACTED in str(caught.value)
    _assert_clean(caught.value, output())


def test_key_record_echoing_the_key(
    api_for: Any, connect: Callable[..., NoxusHook], echo_server: str
) -> None:
    record = api_for(connect(echo_server))("get_me")
    assert record["value"] == REDACTED


def test_tls_failure(
    api_for: Any, connect: Callable[..., NoxusHook], self_signed_server: str, output: Callable[[], str]
) -> None:
    hook = connect(self_signed_server)
    with pytest.raises(NoxusTLSError) as caught:
        api_for(hook)("get_me")
    assert "certificate" in str(caught.value)
    _assert_clean(caught.value, output())


def _masker() -> Any:
    try:
        from airflow.sdk.log import _secrets_masker
    except ImportError:  # Airflow 2.11
        from airflow.utils.log.secrets_masker import _secrets_masker
    return _secrets_masker()


def test_sync_read_registers_the_key_with_the_secrets_masker(
    connect: Callable[..., NoxusHook], secret_emulator: EmulatorServer
) -> None:
    key = "nxk-SYNCMASK-5a4b3c2d1e"
    assert key in _masker().redact(f"x {key} y")
    assert connect(secret_emulator.url, key).settings.api_key == key
    assert key not in _masker().redact(f"x {key} y")


async def test_async_read_registers_the_key_with_the_secrets_masker(
    connect: Callable[..., NoxusHook], secret_emulator: EmulatorServer
) -> None:
    key = "nxk-ASYNCMASK-9f8e7d6c5b"
    assert key in _masker().redact(f"x {key} y")
    async with connect(secret_emulator.url, key).async_client() as client:
        assert client.base_url == secret_emulator.url
    assert key not in _masker().redact(f"x {key} y")
