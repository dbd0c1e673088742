"""A run's output is taken only from a read that says the run's final status (issue 23).

A loopback server answers the status read (``GET /v1/runs/{id}``) with ``completed`` while the read
that carries the output (``GET /v1/workflows/{wf}/runs/{id}``) still says ``running``, as a lagging
replica or cache would. Every way a task ends must read again until the two agree, and fail clearly
(naming the workflow, the run and its link) when they never do: blocking on the worker, deferred and
resumed on the worker, deferred and ended in the triggerer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.hostile_calls import KEY
from support.hostile_server import Conn, HostileServer, Request
from support.noxus_tasks import TaskFailedInTriggerer, make_context, run_task, use_fast_connection

from airflow_provider_noxus import run_result
from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_noxus.exceptions import NoxusRunError
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.sensors.noxus import NoxusRunSensor

OUTPUT = {"summary": "the real output"}

#: (deferrable, end_from_trigger) of every way a waiting task ends.
MODES = [(False, False), (True, False), (True, True)]
MODE_IDS = ["blocking", "deferred-resumed-on-worker", "deferred-ended-in-triggerer"]


class LaggingApi:
    """Status reads say ``completed``; the first ``lag`` output reads say ``running`` with no output."""

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.output_reads = 0

    def __call__(self, request: Request, conn: Conn) -> None:
        if request.path == "/v1/runs/run-1":
            conn.reply(200, {"id": "run-1", "status": "completed"})
        elif request.path == "/v1/workflows/wf-1/runs/run-1":
            self.output_reads += 1
            if self.output_reads <= self.lag:
                conn.reply(200, {"id": "run-1", "status": "running", "output": {}})
            else:
                conn.reply(200, {"id": "run-1", "status": "completed", "output": OUTPUT})
        else:
            conn.reply(404, {"detail": "Not Found"})


@pytest.fixture
def short_rereads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_result, "OUTPUT_READ_DELAYS_S", (0.05, 0.05, 0.05, 0.05))


@pytest.fixture
def api(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[LaggingApi]:
    handler = LaggingApi(lag=request.param)
    with HostileServer(handler) as server:
        use_fast_connection(monkeypatch, server, api_key=KEY)
        yield handler


def sensor(deferrable: bool, end_from_trigger: bool) -> NoxusRunSensor:
    kwargs: dict[str, Any] = {"end_from_trigger": end_from_trigger} if deferrable else {}
    return NoxusRunSensor(
        task_id="wait",
        run_id="run-1",
        workflow_id="wf-1",
        deferrable=deferrable,
        poll_interval=0.05,
        wait_strategy="poll",
        **kwargs,
    )


# A lag of 3 output reads: a deferrable sensor's own first read (the run is then "running") and two
# after the status said "completed"; a poking sensor's three after it.
@pytest.mark.parametrize("api", [3], indirect=True)
@pytest.mark.parametrize(("deferrable", "end_from_trigger"), MODES, ids=MODE_IDS)
def test_an_output_read_that_lags_is_read_again(
    api: LaggingApi, short_rereads: None, deferrable: bool, end_from_trigger: bool
) -> None:
    task = sensor(deferrable, end_from_trigger)
    context = make_context()
    assert run_task(task, context) == OUTPUT
    assert api.output_reads == 4, "read until the output read said completed, and no more"
    if end_from_trigger:
        assert context["ti"].xcom["return_value"] == OUTPUT


@pytest.mark.parametrize("api", [1000], indirect=True)
@pytest.mark.parametrize(("deferrable", "end_from_trigger"), MODES, ids=MODE_IDS)
def test_an_output_read_that_never_agrees_fails_the_task_clearly(
    api: LaggingApi,
    short_rereads: None,
    deferrable: bool,
    end_from_trigger: bool,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    task = sensor(deferrable, end_from_trigger)
    in_triggerer = end_from_trigger and AIRFLOW_V_3_0_PLUS  # Airflow 2 resumes on a worker to fail
    with pytest.raises(TaskFailedInTriggerer if in_triggerer else NoxusRunError) as raised:
        run_task(task, make_context())
    message = str(raised.value)
    if in_triggerer:  # the error is in the task's log, written by the trigger
        message = caplog.text + capsys.readouterr().out
    assert "5 reads of its output" in message and "said running" in message
    assert "workflow wf-1" in message and "run run-1" in message
    assert NoxusHook().run_url("wf-1", "run-1") in message
    first_read = 1 if deferrable else 0  # a deferrable sensor reads the run once before deferring
    resumed = 5 if end_from_trigger and not in_triggerer else 0  # the worker's own five reads
    assert api.output_reads == first_read + 5 + resumed, "bounded: five reads after the status said completed"
