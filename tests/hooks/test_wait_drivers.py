"""One scenario suite, run by both drivers of the wait over HTTP: the blocking one (a worker,
``deferrable=False``) and the async one (the triggerer). Each scenario must end the same way in both.

The waits are real (the wait's clock is), kept short by small poll intervals and a 0.2 s backoff cap.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_noxus.exceptions import NoxusTLSError
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.wait import WaitOptions, WaitOutcome

Wait = Callable[..., WaitOutcome]


@pytest.fixture(params=["blocking", "async"])
def wait(request: pytest.FixtureRequest) -> Wait:
    """``wait(hook, workflow_id, run_id, timeout=None, **options)``: the run's wait, by one driver."""

    def blocking(
        hook: NoxusHook, workflow_id: str, run_id: str, timeout: float | None = 60, **kw: Any
    ) -> WaitOutcome:
        deadline = None if timeout is None else time.time() + timeout
        return hook.wait(workflow_id, run_id, WaitOptions(**kw), deadline=deadline)

    def in_event_loop(
        hook: NoxusHook, workflow_id: str, run_id: str, timeout: float | None = 60, **kw: Any
    ) -> WaitOutcome:
        options = WaitOptions(**kw)

        async def wait() -> WaitOutcome:
            async with hook.async_client() as client:
                return await client.a_wait(
                    workflow_id,
                    run_id,
                    options,
                    deadline=None if timeout is None else time.time() + timeout,
                    log=hook.log,
                    stream=options.strategy != "poll",
                )

        return asyncio.run(asyncio.wait_for(wait(), 60))

    return blocking if request.param == "blocking" else in_event_loop


@pytest.fixture
def make_hook(noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., NoxusHook]:
    """``make_hook(host=None, **extras)``: a hook with real sleeps on a connection to the emulator
    (short backoffs: ``max_backoff`` 0.2 s, 2 attempts per request)."""

    def make(host: str | None = None, **extras: Any) -> NoxusHook:
        extras = {"max_backoff": 0.2, "retry_attempts": 2, **extras}
        connection = {"conn_type": "noxus", "host": host or noxus_emulator.url}
        connection["password"] = noxus_emulator.api_key
        monkeypatch.setenv("AIRFLOW_CONN_NOXUS_WAIT", json.dumps({**connection, "extra": extras}))
        return NoxusHook("noxus_wait")

    return make


def start(hook: NoxusHook, emulator: Any, workflow: str, inputs: dict[str, Any]) -> tuple[str, str]:
    workflow_id = emulator.control.workflow_id(workflow)
    return workflow_id, hook.create_run(workflow_id, inputs)["id"]


@pytest.mark.parametrize("strategy", ["stream", "poll"])
@pytest.mark.parametrize(
    ("workflow", "inputs", "expected"),
    [
        ("echo", {"text": "hi"}, ("success", "completed")),
        ("fail", {"message": "boom"}, ("failed", "failed")),
        ("human_review", {"text": "ok?", "feedback_delay": 0.3}, ("success", "completed")),
    ],
    ids=["completed", "failed", "feedback-then-completed"],
)
def test_final_statuses(
    make_hook: Any, noxus_emulator: Any, wait: Wait, strategy: str, workflow: str, inputs: Any, expected: Any
) -> None:
    hook = make_hook()
    workflow_id, run_id = start(hook, noxus_emulator, workflow, inputs)
    outcome = wait(hook, workflow_id, run_id, strategy=strategy, poll_interval=0.05)
    assert (outcome.status, outcome.run_status) == expected


@pytest.mark.parametrize("strategy", ["stream", "poll"])
def test_stopped_run(make_hook: Any, noxus_emulator: Any, wait: Wait, strategy: str) -> None:
    hook = make_hook()
    workflow_id, run_id = start(hook, noxus_emulator, "slow", {"seconds": 30})
    hook.stop_run(run_id)
    outcome = wait(hook, workflow_id, run_id, strategy=strategy, poll_interval=0.05)
    assert (outcome.status, outcome.run_status) == ("stopped", "stopped")


@pytest.mark.parametrize("strategy", ["stream", "poll"])
def test_human_feedback_refused(make_hook: Any, noxus_emulator: Any, wait: Wait, strategy: str) -> None:
    hook = make_hook()
    workflow_id, run_id = start(hook, noxus_emulator, "human_review", {"text": "ok?", "feedback_delay": 30})
    outcome = wait(hook, workflow_id, run_id, strategy=strategy, poll_interval=0.05, on_human_feedback="fail")
    assert outcome.refused_feedback
    hook.stop_run(run_id)


@pytest.mark.parametrize(
    ("endpoint", "fault"),
    [
        ("get_run_status", {"kind": "status", "status": 503, "count": 8}),
        ("get_run_status", {"kind": "reset", "count": 8}),
        ("get_run_status", {"kind": "status", "status": 429, "retry_after": "0", "count": 8}),
        ("run_events", {"kind": "status", "status": 503, "count": 8}),
        ("run_events", {"kind": "reset", "count": 8}),
    ],
    ids=["poll-503", "poll-reset", "poll-429-retry-after-0", "stream-503", "stream-reset"],
)
def test_an_outage_longer_than_the_transport_retries_is_waited_through(
    make_hook: Any, noxus_emulator: Any, wait: Wait, endpoint: str, fault: dict[str, Any]
) -> None:
    # 8 failures in a row: a transport-level budget of 2 attempts would be spent four times over.
    hook = make_hook()
    workflow_id, run_id = start(hook, noxus_emulator, "echo", {"text": "hi"})
    noxus_emulator.control.add_fault(endpoint, **fault)
    strategy = "poll" if endpoint == "get_run_status" else "stream"
    started = time.monotonic()
    outcome = wait(hook, workflow_id, run_id, strategy=strategy, poll_interval=0.1)
    assert (outcome.status, outcome.run_status) == ("success", "completed")
    if endpoint == "get_run_status":
        # Every wait after a failure is at least the floor of its backoff (half the poll interval):
        # a refusal, even with Retry-After: 0, never makes a hot loop.
        assert time.monotonic() - started >= 8 * 0.05


def test_a_stream_that_keeps_failing_falls_back_to_polling(
    make_hook: Any, noxus_emulator: Any, answered: Any, wait: Wait
) -> None:
    hook = make_hook()
    workflow_id, run_id = start(hook, noxus_emulator, "echo", {"text": "hi"})
    noxus_emulator.control.add_fault("run_events", "drop_stream", after_frames=0, count=-1)
    outcome = wait(hook, workflow_id, run_id, strategy="stream", poll_interval=0.05)
    assert outcome.status == "success"
    assert answered("run_events") == {"200": 3}
    assert sum(answered("get_run_status").values()) >= 1


def test_a_dropped_stream_resumes_after_its_last_event(
    make_hook: Any, noxus_emulator: Any, answered: Any, wait: Wait
) -> None:
    hook = make_hook()
    workflow_id, run_id = start(hook, noxus_emulator, "summarize", {"document": "Words to stream. " * 10})
    noxus_emulator.control.add_fault("run_events", "drop_stream", after_frames=2, count=3)
    outcome = wait(hook, workflow_id, run_id, strategy="stream", poll_interval=5)
    assert outcome.status == "success"
    assert outcome.last_event_id == list(hook.iter_run_events(run_id))[-1].event_id
    assert answered("run_events").get("200", 0) >= 4
    assert answered("get_run_status") == {}


def test_an_open_stream_that_never_says_the_run_ended_is_cross_checked(
    make_hook: Any, noxus_emulator: Any, wait: Wait
) -> None:
    # Keep-alives every 0.05 s; a status check every 6 poll intervals (0.3 s).
    hook = make_hook()
    workflow_id, run_id = start(hook, noxus_emulator, "echo", {"text": "hi"})
    noxus_emulator.control.add_fault("run_events", "silent_stream", seconds=0.05, count=-1)
    outcome = wait(hook, workflow_id, run_id, timeout=20, strategy="stream", poll_interval=0.05)
    assert (outcome.status, outcome.run_status) == ("success", "completed")


@pytest.mark.parametrize("strategy", ["stream", "poll"])
def test_deadline(make_hook: Any, noxus_emulator: Any, wait: Wait, strategy: str) -> None:
    hook = make_hook()
    workflow_id, run_id = start(hook, noxus_emulator, "slow", {"seconds": 30})
    started = time.monotonic()
    outcome = wait(hook, workflow_id, run_id, timeout=0.5, strategy=strategy, poll_interval=0.05)
    assert (outcome.status, outcome.run_status) == ("timeout", "running")
    assert time.monotonic() - started < 10
    hook.stop_run(run_id)


@pytest.mark.parametrize("strategy", ["stream", "poll"])
def test_an_untrusted_certificate_ends_the_wait(
    make_hook: Any, self_signed_server: str, wait: Wait, strategy: str
) -> None:
    hook = make_hook(host=self_signed_server)
    outcome = wait(hook, "wf-1", "run-1", timeout=30, strategy=strategy, poll_interval=0.05)
    assert (outcome.status, outcome.error_type) == ("error", "NoxusTLSError")
    with pytest.raises(NoxusTLSError, match="certificate verify failed"):
        raise outcome.as_error()
