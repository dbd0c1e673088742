"""Every retry rule, on the sync and the async path alike, against the emulator's faults.

Waits are recorded by the injected sleep (never slept); the emulator's counters prove how many
requests reached it and how many runs were created.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from airflow_provider_noxus import protocol
from airflow_provider_noxus.exceptions import (
    NoxusApiError,
    NoxusProtocolError,
    NoxusRateLimitedError,
    NoxusServerError,
    NoxusTimeoutError,
    NoxusTransportError,
)
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.protocol import RetryPolicy

# Fixtures `api`/`api_for` (sync or async caller), `sleeps`, `make_hook`, `answered`: conftest.py.


@pytest.fixture
def echo_run(hook: NoxusHook, noxus_emulator: Any) -> tuple[str, str]:
    """A finished echo run: (workflow id, run id)."""
    echo = noxus_emulator.control.workflow_id("echo")
    run_id = hook.create_run(echo, {"text": "x"})["id"]
    hook.wait_for_run(echo, run_id)
    return echo, run_id


def test_429_waits_for_retry_after(
    api: Any, noxus_emulator: Any, sleeps: Any, answered: Any, echo_run: Any
) -> None:
    noxus_emulator.control.add_fault("get_run", "status", status=429, count=2, retry_after=2)
    assert api("get_run", *echo_run)["status"] == "completed"
    assert sleeps.waits == [2.0, 2.0]
    assert answered("get_run") == {"429": 2, "200": 2}  # the fixture's wait read it once


def test_retry_after_is_capped_by_max_backoff(
    api: Any, noxus_emulator: Any, sleeps: Any, echo_run: Any
) -> None:
    noxus_emulator.control.add_fault("get_run_status", "status", status=429, count=1, retry_after=3600)
    api("get_run_status", echo_run[1])
    assert sleeps.waits == [5.0]  # TEST_POLICY.backoff_max


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_transient_status_then_success(
    api: Any, noxus_emulator: Any, sleeps: Any, answered: Any, echo_run: Any, status: int
) -> None:
    noxus_emulator.control.add_fault("get_run_status", "status", status=status, count=2)
    assert api("get_run_status", echo_run[1])["status"] == "completed"
    assert answered("get_run_status") == {str(status): 2, "200": 1}
    # Exponential backoff with jitter: attempt n waits within [c/2, c], c = 0.5 * 2**(n-1).
    assert len(sleeps.waits) == 2
    assert 0.25 <= sleeps.waits[0] <= 0.5
    assert 0.5 <= sleeps.waits[1] <= 1.0


def test_connection_reset_then_success(
    api: Any, noxus_emulator: Any, sleeps: Any, answered: Any, echo_run: Any
) -> None:
    noxus_emulator.control.add_fault("list_runs", "reset", count=1)
    assert api("list_runs", echo_run[0])["total"] == 1
    assert len(sleeps.waits) == 1


def test_read_timeout_then_success(
    api_for: Any, make_hook: Any, noxus_emulator: Any, sleeps: Any, answered: Any, echo_run: Any
) -> None:
    api = api_for(make_hook(timeout=0.3))
    noxus_emulator.control.add_fault("get_run_status", "latency", seconds=1.0, count=1)
    assert api("get_run_status", echo_run[1])["status"] == "completed"
    assert len(sleeps.waits) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_4xx_is_never_retried(
    api: Any, noxus_emulator: Any, sleeps: Any, answered: Any, echo_run: Any, status: int
) -> None:
    noxus_emulator.control.add_fault("get_run", "status", status=status, count=-1)
    with pytest.raises(NoxusApiError) as caught:
        api("get_run", *echo_run)
    assert caught.value.status_code == status
    assert sleeps.waits == []
    assert answered("get_run") == {"200": 1, str(status): 1}  # 200: the fixture's wait


def test_attempts_end_retries(
    api: Any, noxus_emulator: Any, sleeps: Any, answered: Any, echo_run: Any
) -> None:
    noxus_emulator.control.add_fault("get_run_status", "status", status=503, count=-1)
    with pytest.raises(NoxusServerError, match="HTTP 503"):
        api("get_run_status", echo_run[1])
    assert answered("get_run_status") == {"503": 4}  # TEST_POLICY.max_attempts
    assert len(sleeps.waits) == 3


def test_budget_ends_retries(
    api_for: Any, make_hook: Any, noxus_emulator: Any, sleeps: Any, answered: Any, echo_run: Any
) -> None:
    budget = RetryPolicy(max_attempts=10, backoff_initial=0.5, backoff_max=30, total_budget=5)
    api = api_for(make_hook(policy=budget))
    noxus_emulator.control.add_fault("get_run_status", "status", status=429, retry_after=2, count=-1)
    with pytest.raises(NoxusRateLimitedError):
        api("get_run_status", echo_run[1])
    # Waits 2 + 2 fit in 5 s; a third would start the next attempt past the budget.
    assert sleeps.waits == [2.0, 2.0]
    assert answered("get_run_status") == {"429": 3}


def test_malformed_body_is_a_protocol_error_not_retried(
    api: Any, noxus_emulator: Any, sleeps: Any, echo_run: Any
) -> None:
    noxus_emulator.control.add_fault("get_run", "malformed")
    with pytest.raises(NoxusProtocolError, match="not JSON"):
        api("get_run", *echo_run)
    assert sleeps.waits == []


# ---- creating a run is not idempotent -----------------------------------------------------------


def _create_echo(api: Any, noxus_emulator: Any) -> dict[str, Any]:
    result: dict[str, Any] = api("create_run", noxus_emulator.control.workflow_id("echo"), {"text": "once"})
    return result


def test_create_is_retried_after_429(api: Any, noxus_emulator: Any, sleeps: Any, answered: Any) -> None:
    noxus_emulator.control.add_fault("create_run", "status", status=429, retry_after=1, count=1)
    _create_echo(api, noxus_emulator)
    assert sleeps.waits == [1.0]
    assert answered("create_run") == {"429": 1, "200": 1}
    assert noxus_emulator.control.counters()["runs_created_total"] == 1


def test_create_is_not_retried_after_a_503_even_with_retry_after() -> None:
    # A 503 may come from a proxy after it forwarded the create: it may hide a run (CHANGELOG, Unreleased).
    request = protocol.create_run_request("wf", {"input": {}})
    with_wait = NoxusServerError("busy", status_code=503, retry_after=1.0)
    assert not protocol.is_retryable(request, with_wait)
    assert protocol.may_have_created_run(with_wait)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_create_is_not_retried_after_a_5xx_that_may_hide_a_run(
    api: Any, noxus_emulator: Any, sleeps: Any, answered: Any, status: int
) -> None:
    noxus_emulator.control.add_fault("create_run", "status", status=status, count=1)
    with pytest.raises(NoxusServerError):
        _create_echo(api, noxus_emulator)
    assert sleeps.waits == []
    assert answered("create_run") == {str(status): 1}


def test_create_is_not_retried_after_a_reset(
    api: Any, noxus_emulator: Any, sleeps: Any, answered: Any
) -> None:
    noxus_emulator.control.add_fault("create_run", "reset", count=1)
    with pytest.raises(NoxusTransportError) as caught:
        _create_echo(api, noxus_emulator)
    assert caught.value.reached_server
    assert sleeps.waits == []
    assert sum(answered("create_run").values()) <= 1


def test_create_is_not_retried_after_a_read_timeout(
    api_for: Any, make_hook: Any, noxus_emulator: Any, sleeps: Any, answered: Any
) -> None:
    api = api_for(make_hook(timeout=0.3))
    noxus_emulator.control.add_fault("create_run", "latency", seconds=1.0, count=-1)
    with pytest.raises(NoxusTimeoutError) as caught:
        _create_echo(api, noxus_emulator)
    assert caught.value.reached_server
    assert sleeps.waits == []
    assert noxus_emulator.control.counters()["runs_created_total"] <= 1
    assert sum(answered("create_run").values()) <= 1


def test_create_is_retried_when_the_connection_is_refused(api_for: Any, make_hook: Any, sleeps: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    api = api_for(make_hook(host=f"http://127.0.0.1:{closed}"))
    with pytest.raises(NoxusTransportError, match="connection refused") as caught:
        api("create_run", "wf", {"text": "x"})
    assert caught.value.reached_server is False
    assert len(sleeps.waits) == 3  # all 4 attempts: nothing reached a server
