"""NoxusHook's sync methods and its connection, over HTTP against the emulator."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from airflow_provider_noxus import protocol
from airflow_provider_noxus.connection import settings_from_connection
from airflow_provider_noxus.exceptions import (
    NoxusConfigurationError,
    NoxusFileInputError,
    NoxusNotFoundError,
    NoxusRunError,
    NoxusRunTimeoutError,
    NoxusSyncEndpointTimeout,
    NoxusValidationError,
)
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.protocol import NoxusRunStatus, RunEvent

# ---- the connection ---------------------------------------------------------------------------


def _connection(uri: str | None = None, **fields: Any) -> Any:
    from airflow.models.connection import Connection

    return Connection(conn_id="noxus_x", uri=uri) if uri else Connection(conn_id="noxus_x", **fields)


@pytest.mark.parametrize(
    ("fields", "base_url"),
    [
        ({"host": "http://127.0.0.1:8765"}, "http://127.0.0.1:8765"),
        ({"host": "noxus.example.com"}, "https://noxus.example.com"),
        ({"host": "noxus.example.com", "extra": json.dumps({"scheme": "http"})}, "http://noxus.example.com"),
        ({"host": "noxus.example.com", "port": 8443}, "https://noxus.example.com:8443"),
        ({"host": "https://noxus.example.com/api/v1/"}, "https://noxus.example.com/api"),
        ({"host": ""}, protocol.DEFAULT_BASE_URL),
    ],
)
def test_base_url_from_the_host_field(fields: dict[str, Any], base_url: str) -> None:
    settings = settings_from_connection(_connection(conn_type="noxus", password="k", **fields))
    assert settings.base_url == base_url


@pytest.mark.parametrize(
    ("uri", "base_url"),
    [
        ("noxus://:KEY@127.0.0.1:8765/?scheme=http&timeout=10", "http://127.0.0.1:8765"),
        ("noxus://http://:KEY@127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("noxus://:KEY@backend.noxus.ai", "https://backend.noxus.ai"),
    ],
)
def test_uri_form_chooses_the_scheme(uri: str, base_url: str) -> None:
    settings = settings_from_connection(_connection(uri))
    assert (settings.base_url, settings.api_key) == (base_url, "KEY")


def test_extras_become_settings() -> None:
    extra = {
        "timeout": "12.5",
        "verify_ssl": "false",
        "retry_attempts": 7,
        "max_backoff": 3,
        "app_url": "https://x/",
    }
    settings = settings_from_connection(
        _connection(conn_type="noxus", host="https://h", password="k", extra=json.dumps(extra))
    )
    assert settings.timeout == 12.5
    assert settings.verify_ssl is False
    assert settings.retry_policy.max_attempts == 7
    assert settings.retry_policy.backoff_max == 3
    assert settings.app_url == "https://x"


def test_app_url_defaults_to_the_cloud_app_or_the_base_url() -> None:
    cloud = settings_from_connection(_connection(conn_type="noxus", password="k"))
    own = settings_from_connection(_connection(conn_type="noxus", host="https://noxus.corp", password="k"))
    assert cloud.app_url == protocol.DEFAULT_APP_URL
    assert own.app_url == "https://noxus.corp"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"host": "h"}, "no API key"),
        ({"host": "h", "password": "k", "extra": '{"timeout": "soon"}'}, "'timeout'"),
        ({"host": "h", "password": "k", "extra": '{"timeout": 0}'}, "'timeout'"),
        ({"host": "h", "password": "k", "extra": '{"verify_ssl": "maybe"}'}, "'verify_ssl'"),
        ({"host": "h", "password": "k", "extra": '{"retry_attempts": 1.5}'}, "'retry_attempts'"),
        ({"host": "h", "password": "k", "extra": '{"scheme": "ftp"}'}, "'scheme'"),
        ({"host": "http://h", "password": "k", "extra": '{"scheme": "https"}'}, "scheme"),
        ({"host": "ftp://h", "password": "k"}, "not a base URL"),
        ({"host": "http://h:99999", "password": "k"}, "not a base URL"),
        ({"host": "h", "password": "k", "extra": '{"timeout": "nan"}'}, "'timeout' must be a finite"),
        ({"host": "h", "password": "k", "extra": '{"timeout": "inf"}'}, "'timeout'"),
        ({"host": "h", "password": "k", "extra": '{"timeout": 86401}'}, "'timeout'"),
        ({"host": "h", "password": "k", "extra": '{"timeout": true}'}, "'timeout'"),
        ({"host": "h", "password": "k", "extra": '{"max_backoff": "NaN"}'}, "'max_backoff'"),
        ({"host": "h", "password": "k", "extra": '{"max_backoff": "-1"}'}, "'max_backoff'"),
        ({"host": "h", "password": "k", "extra": '{"retry_attempts": "inf"}'}, "'retry_attempts'"),
        ({"host": "h", "password": "k", "extra": '{"retry_attempts": "1e309"}'}, "'retry_attempts'"),
        ({"host": "h", "password": " \n "}, "no API key"),
        ({"host": "h", "password": "key\nsecond"}, "cannot be sent in an HTTP header"),
    ],
)
def test_bad_connection_is_refused_early_with_its_name(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(NoxusConfigurationError, match=named) as caught:
        settings_from_connection(_connection(conn_type="noxus", **fields))
    assert "noxus_x" in str(caught.value)


def test_the_key_loses_its_surrounding_whitespace() -> None:
    settings = settings_from_connection(_connection(conn_type="noxus", host="h", password=" nxk-1 key\r\n"))
    assert settings.api_key == "nxk-1 key"


def test_credentials_in_the_host_and_app_url_are_dropped() -> None:
    extra = json.dumps({"app_url": "https://v:pw@app.example.com/"})
    settings = settings_from_connection(
        _connection(conn_type="noxus", host="https://u:pw@noxus.example.com/v1", password="k", extra=extra)
    )
    assert settings.base_url == "https://noxus.example.com"
    assert settings.app_url == "https://app.example.com"
    own_app = settings_from_connection(_connection(conn_type="noxus", host="http://u:pw@h:8", password="k"))
    assert own_app.app_url == own_app.base_url == "http://h:8"


def test_uri_connection_from_the_environment_reaches_the_emulator(
    noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = noxus_emulator.url.rsplit(":", 1)[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOXUS_URI", f"noxus://:{noxus_emulator.api_key}@127.0.0.1:{port}/?scheme=http"
    )
    hook = NoxusHook("noxus_uri")
    assert hook.base_url == noxus_emulator.url
    assert hook.get_me()["id"]


def test_default_connection_id_is_noxus_default(noxus_connection: Any) -> None:
    hook = NoxusHook()
    assert hook.noxus_conn_id == "noxus_default"
    assert hook.base_url == noxus_connection.url


def test_run_url_points_at_the_app(hook: NoxusHook, noxus_emulator: Any) -> None:
    assert hook.run_url("wf 1", "run/2") == f"{noxus_emulator.url}/workflows/wf%201/runs/run%2F2"


# ---- runs ---------------------------------------------------------------------------------------


def test_create_run_then_wait_returns_the_output(hook: NoxusHook, noxus_emulator: Any) -> None:
    echo = noxus_emulator.control.workflow_id("echo")
    run = hook.create_run(echo, {"text": "hello"})
    assert run["status"] == NoxusRunStatus.QUEUED
    final = hook.wait_for_run(echo, run["id"], strategy="poll", poll_interval=0.05)
    assert final["status"] == "completed"
    assert final["output"] == {"text": "hello"}


def test_get_run_has_output_and_get_run_status_has_none(hook: NoxusHook, noxus_emulator: Any) -> None:
    echo = noxus_emulator.control.workflow_id("echo")
    run_id = hook.create_run(echo, {"text": "hi"})["id"]
    hook.wait_for_run(echo, run_id)
    assert hook.get_run(echo, run_id)["output"] == {"text": "hi"}
    status = hook.get_run_status(run_id)
    assert status["status"] == "completed"
    assert "output" not in status


def test_list_runs_pages_newest_first(hook: NoxusHook, noxus_emulator: Any) -> None:
    echo = noxus_emulator.control.workflow_id("echo")
    ids = [hook.create_run(echo, {"text": str(i)})["id"] for i in range(3)]
    page = hook.list_runs(echo, page=1, size=2)
    assert page["total"] == 3
    assert [run["id"] for run in page["items"]] == ids[::-1][:2]


def test_list_runs_refuses_a_bad_page_before_sending(hook: NoxusHook, answered: Any) -> None:
    with pytest.raises(NoxusConfigurationError, match="size"):
        hook.list_runs("wf", size=500)
    assert answered("list_runs") == {}


def test_stop_run_stops_it_and_wait_returns_the_stopped_run(hook: NoxusHook, noxus_emulator: Any) -> None:
    slow = noxus_emulator.control.workflow_id("slow")
    run_id = hook.create_run(slow, {"seconds": 30})["id"]
    hook.stop_run(run_id, workflow_id=slow)
    final = hook.wait_for_run(slow, run_id, strategy="poll", poll_interval=0.05)
    assert final["status"] == "stopped"
    assert noxus_emulator.control.counters()["stops"] == {run_id: 1}


def test_failed_run_is_returned_not_raised(hook: NoxusHook, noxus_emulator: Any) -> None:
    fail = noxus_emulator.control.workflow_id("fail")
    run_id = hook.create_run(fail, {"message": "boom"})["id"]
    final = hook.wait_for_run(fail, run_id)
    assert final["status"] == "failed"
    assert final["output"] == {"error": "boom"}


def test_unknown_workflow_is_not_found_and_named(hook: NoxusHook) -> None:
    with pytest.raises(NoxusNotFoundError) as caught:
        hook.create_run("00000000-0000-0000-0000-000000000000", {"text": "x"})
    assert "workflow 00000000-0000-0000-0000-000000000000" in str(caught.value)
    assert "HTTP 404" in str(caught.value)


def test_unknown_input_is_a_validation_error_naming_it(hook: NoxusHook, noxus_emulator: Any) -> None:
    echo = noxus_emulator.control.workflow_id("echo")
    with pytest.raises(NoxusValidationError, match="nonsense"):
        hook.create_run(echo, {"text": "x", "nonsense": 1})


def test_create_run_sync_returns_the_final_run(hook: NoxusHook, noxus_emulator: Any) -> None:
    echo = noxus_emulator.control.workflow_id("echo")
    run = hook.create_run_sync(echo, {"text": "now"})
    assert run["status"] == "completed"
    assert run["output"] == {"text": "now"}


def test_sync_endpoint_timeout_names_the_run_to_wait_for(hook: NoxusHook, noxus_emulator: Any) -> None:
    echo = noxus_emulator.control.workflow_id("echo")
    noxus_emulator.control.add_fault("create_run_sync", "sync_timeout")
    with pytest.raises(NoxusSyncEndpointTimeout) as caught:
        hook.create_run_sync(echo, {"text": "later"})
    run_id = caught.value.run_id
    assert run_id
    assert hook.wait_for_run(echo, run_id)["output"] == {"text": "later"}
    assert noxus_emulator.control.counters()["runs_created_total"] == 1


# ---- files --------------------------------------------------------------------------------------


def test_upload_bytes_and_download_by_uri_or_id(hook: NoxusHook) -> None:
    uploaded = hook.upload_file(b"col\n1\n", filename="data.csv")
    assert uploaded["uri"].startswith("spot://")
    assert uploaded["filename"] == "data.csv"
    assert uploaded["content_type"] == "text/csv"
    assert hook.download_file(uploaded["uri"]) == b"col\n1\n"
    assert hook.download_file(uploaded["id"]) == b"col\n1\n"


def test_uploaded_path_is_a_run_input(hook: NoxusHook, noxus_emulator: Any, tmp_path: Any) -> None:
    path = tmp_path / "report.txt"
    path.write_bytes(b"quarterly")
    uploaded = hook.upload_file(path)
    file_info = noxus_emulator.control.workflow_id("file_info")
    run_id = hook.create_run(file_info, {"document": {"uri": uploaded["uri"], "name": "report.txt"}})["id"]
    output = hook.wait_for_run(file_info, run_id)["output"]
    assert (output["name"], output["size"], output["source"]) == ("report.txt", 9, "spot")


def test_missing_upload_path_is_a_clear_error(hook: NoxusHook, answered: Any) -> None:
    with pytest.raises(NoxusFileInputError, match=r"nowhere\.pdf"):
        hook.upload_file("/nowhere.pdf")
    assert answered("upload_file") == {}


# ---- workflows and the key ----------------------------------------------------------------------


def test_list_and_get_workflows(hook: NoxusHook, noxus_emulator: Any) -> None:
    names = {workflow["name"] for workflow in hook.list_workflows(size=100)["items"]}
    assert {"echo", "slow", "fail", "human_review", "file_info", "summarize"} <= names
    echo = noxus_emulator.control.workflow_id("echo")
    assert hook.get_workflow(echo)["name"] == "echo"


def test_get_me_never_returns_the_key(hook: NoxusHook, noxus_emulator: Any) -> None:
    record = hook.get_me()
    assert record["id"]
    assert noxus_emulator.api_key not in json.dumps(record)


# ---- events and waiting -------------------------------------------------------------------------


def test_iter_run_events_ends_with_the_final_frame(hook: NoxusHook, noxus_emulator: Any) -> None:
    summarize = noxus_emulator.control.workflow_id("summarize")
    run_id = hook.create_run(summarize, {"document": "A long text. " * 20})["id"]
    events = list(hook.iter_run_events(run_id))
    assert events[-1].workflow_status == "completed"
    assert any(event.type == "content" and event.data.get("content") for event in events)
    assert len({event.event_id for event in events}) == len(events)


def test_iter_run_events_resumes_after_an_etag(hook: NoxusHook, noxus_emulator: Any) -> None:
    echo = noxus_emulator.control.workflow_id("echo")
    run_id = hook.create_run(echo, {"text": "x"})["id"]
    everything = list(hook.iter_run_events(run_id))
    later = list(hook.iter_run_events(run_id, last_event_id=everything[1].event_id))
    assert [event.event_id for event in later] == [event.event_id for event in everything[2:]]


@pytest.mark.parametrize("strategy", ["stream", "auto"])
def test_wait_by_stream_sees_every_event_and_returns_the_output(
    hook: NoxusHook, noxus_emulator: Any, answered: Any, strategy: str
) -> None:
    echo = noxus_emulator.control.workflow_id("echo")
    run_id = hook.create_run(echo, {"text": "streamed"})["id"]
    seen: list[RunEvent] = []
    final = hook.wait_for_run(echo, run_id, strategy=strategy, on_event=seen.append)  # type: ignore[arg-type]
    assert final["output"] == {"text": "streamed"}
    assert seen[-1].workflow_status == "completed"
    assert answered("get_run_status") == {}


def test_wait_resumes_a_dropped_stream_with_its_etag(
    hook: NoxusHook, noxus_emulator: Any, answered: Any
) -> None:
    summarize = noxus_emulator.control.workflow_id("summarize")
    run_id = hook.create_run(summarize, {"document": "Some words to stream. " * 10})["id"]
    noxus_emulator.control.add_fault("run_events", "drop_stream", after_frames=2, count=3)
    seen: list[RunEvent] = []
    final = hook.wait_for_run(summarize, run_id, strategy="stream", on_event=seen.append)
    assert final["status"] == "completed"
    assert answered("run_events") == {"200": 4}
    ids = [event.event_id for event in seen]
    assert len(ids) == len(set(ids)), "a frame was delivered twice after a resume"
    assert ids == [event.event_id for event in hook.iter_run_events(run_id)]


def test_wait_falls_back_to_polling_after_three_stream_failures(
    hook: NoxusHook, noxus_emulator: Any, answered: Any
) -> None:
    echo = noxus_emulator.control.workflow_id("echo")
    run_id = hook.create_run(echo, {"text": "polled"})["id"]
    noxus_emulator.control.add_fault("run_events", "drop_stream", after_frames=0, count=-1)
    final = hook.wait_for_run(echo, run_id, strategy="auto", poll_interval=0.05)
    assert final["output"] == {"text": "polled"}
    assert answered("run_events") == {"200": 3}
    assert sum(answered("get_run_status").values()) >= 1


def test_stream_strategy_also_falls_back_to_polling(
    hook: NoxusHook, noxus_emulator: Any, answered: Any
) -> None:
    # Before 0.1.0 the blocking wait raised here while the trigger polled: both poll now.
    echo = noxus_emulator.control.workflow_id("echo")
    run_id = hook.create_run(echo, {"text": "x"})["id"]
    noxus_emulator.control.add_fault("run_events", "drop_stream", after_frames=0, count=-1)
    assert hook.wait_for_run(echo, run_id, strategy="stream", poll_interval=0.05)["output"] == {"text": "x"}
    assert answered("run_events") == {"200": 3}


def test_wait_timeout_raises_and_does_not_stop_the_run(hook: NoxusHook, noxus_emulator: Any) -> None:
    slow = noxus_emulator.control.workflow_id("slow")
    run_id = hook.create_run(slow, {"seconds": 30})["id"]
    sleeping_hook = NoxusHook(hook.noxus_conn_id)  # real sleep: the deadline must pass
    with pytest.raises(NoxusRunTimeoutError) as caught:
        sleeping_hook.wait_for_run(slow, run_id, strategy="poll", poll_interval=0.05, timeout=0.3)
    assert caught.value.run_id == run_id
    assert "not stopped" in str(caught.value)
    assert noxus_emulator.control.counters()["stops_total"] == 0
    hook.stop_run(run_id)


@pytest.mark.parametrize("strategy", ["stream", "poll"])
def test_fail_on_human_feedback(hook: NoxusHook, noxus_emulator: Any, strategy: str) -> None:
    review = noxus_emulator.control.workflow_id("human_review")
    run_id = hook.create_run(review, {"text": "check me", "feedback_delay": 30})["id"]
    with pytest.raises(NoxusRunError, match="human feedback") as caught:
        hook.wait_for_run(review, run_id, strategy=strategy, poll_interval=0.05, fail_on_human_feedback=True)  # type: ignore[arg-type]
    assert caught.value.status == "awaiting_human_feedback"
    assert caught.value.run_url == hook.run_url(review, run_id)


def test_human_feedback_is_waited_through_by_default(hook: NoxusHook, noxus_emulator: Any) -> None:
    review = noxus_emulator.control.workflow_id("human_review")
    run_id = hook.create_run(review, {"text": "ok", "feedback_delay": 0.3})["id"]
    assert hook.wait_for_run(review, run_id)["output"] == {"text": "ok", "approved": True}


def test_bad_wait_arguments_are_refused(hook: NoxusHook) -> None:
    with pytest.raises(NoxusConfigurationError, match="strategy"):
        hook.wait_for_run("wf", "run", strategy="webhook")  # type: ignore[arg-type]
    with pytest.raises(NoxusConfigurationError, match="poll_interval"):
        hook.wait_for_run("wf", "run", poll_interval=0)


# ---- test_connection ----------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_test_connection_succeeds_with_one_get(hook: NoxusHook, answered: Any) -> None:
    ok, message = hook.test_connection()
    assert ok, message
    assert "Connected" in message
    assert answered("me") == {"200": 1}


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ({"api_key": "wrong-key"}, "refused the API key (HTTP 401)"),
        ({"host": "{url}/not-noxus"}, "it is not the Noxus API root"),
        ({"host": "http://127.0.0.1:{closed}"}, "Could not connect: connection refused"),
        ({"host": "https://noxus-host.invalid"}, "Could not connect: host name not found"),
        ({"host": "https://127.0.0.1:{port}"}, "TLS failure"),
    ],
)
def test_test_connection_says_what_is_wrong(
    make_hook: Any, noxus_emulator: Any, sleeps: Any, setup: dict[str, str], expected: str
) -> None:
    port = noxus_emulator.url.rsplit(":", 1)[1]
    if "host" in setup:
        setup = {"host": setup["host"].format(url=noxus_emulator.url, closed=_closed_port(), port=port)}
    ok, message = make_hook(**setup).test_connection()
    assert not ok
    assert expected in message
    assert sleeps.waits == [], "test_connection must not retry"


def test_test_connection_on_a_server_that_is_not_noxus(hook: NoxusHook, noxus_emulator: Any) -> None:
    noxus_emulator.control.add_fault("me", "malformed")
    ok, message = hook.test_connection()
    assert not ok
    assert "not with JSON" in message


def test_test_connection_names_an_untrusted_certificate(make_hook: Any, self_signed_server: str) -> None:
    ok, message = make_hook(host=self_signed_server).test_connection()
    assert not ok
    assert "TLS failure: certificate verify failed: self-signed certificate" in message
    assert "verify_ssl" in message


def test_verify_ssl_false_accepts_a_private_certificate(
    api_for: Any, make_hook: Any, self_signed_server: str
) -> None:
    hook = make_hook(host=self_signed_server, verify_ssl=False)
    assert api_for(hook)("get_me")["id"] == "key-1"
