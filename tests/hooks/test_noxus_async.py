"""The async client: every ``a_`` method, its event stream, and the shared aiohttp session."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from airflow_provider_noxus.exceptions import NoxusAuthError, NoxusNotFoundError
from airflow_provider_noxus.hooks import _transport
from airflow_provider_noxus.hooks._transport import aiohttp_transport
from airflow_provider_noxus.hooks.noxus import NoxusAsyncClient, NoxusHook
from airflow_provider_noxus.protocol import RunEvent


async def _final(client: NoxusAsyncClient, workflow_id: str, run_id: str) -> dict[str, Any]:
    """Follow the run's events to the final frame, then read the run with its output."""
    async with contextlib.aclosing(client.a_iter_run_events(run_id)) as events:
        async for event in events:
            if event.workflow_status:
                break
    return await client.a_get_run(workflow_id, run_id)


async def test_create_stream_and_read_a_run(hook: NoxusHook, noxus_emulator: Any) -> None:
    echo = noxus_emulator.control.workflow_id("echo")
    async with hook.async_client() as client:
        run = await client.a_create_run(echo, {"text": "async"})
        assert run["status"] == "queued"
        final = await _final(client, echo, run["id"])
        assert final["output"] == {"text": "async"}
        status = await client.a_get_run_status(run["id"])
        assert status["status"] == "completed"
        assert "output" not in status
        assert (await client.a_list_runs(echo, size=10))["items"][0]["id"] == run["id"]
        assert client.run_url(echo, run["id"]) == hook.run_url(echo, run["id"])
        assert client.base_url == noxus_emulator.url


async def test_stop_run(hook: NoxusHook, noxus_emulator: Any) -> None:
    slow = noxus_emulator.control.workflow_id("slow")
    async with hook.async_client() as client:
        run_id = (await client.a_create_run(slow, {"seconds": 30}))["id"]
        await client.a_stop_run(run_id, workflow_id=slow)
        assert (await _final(client, slow, run_id))["status"] == "stopped"
    assert noxus_emulator.control.counters()["stops"] == {run_id: 1}


async def test_get_me_hides_the_key(hook: NoxusHook, noxus_emulator: Any) -> None:
    async with hook.async_client() as client:
        record = await client.a_get_me()
    assert record["id"]
    assert noxus_emulator.api_key not in str(record)


async def test_errors_are_typed(hook: NoxusHook, noxus_emulator: Any) -> None:
    async with hook.async_client() as client:
        with pytest.raises(NoxusNotFoundError, match="run no-such-run"):
            await client.a_get_run_status("no-such-run")


async def test_events_resume_after_an_etag(hook: NoxusHook, noxus_emulator: Any) -> None:
    summarize = noxus_emulator.control.workflow_id("summarize")
    async with hook.async_client() as client:
        run_id = (await client.a_create_run(summarize, {"document": "Words to stream. " * 10}))["id"]
        everything = [event async for event in client.a_iter_run_events(run_id)]
        resumed = client.a_iter_run_events(run_id, last_event_id=everything[2].event_id)
        later = [event async for event in resumed]
    assert everything[-1].workflow_status == "completed"
    assert any(event.type == "content" for event in everything)
    assert [e.event_id for e in later] == [e.event_id for e in everything[3:]]


async def _open_streams_drop_to_zero(noxus_emulator: Any) -> None:
    for _ in range(200):
        if noxus_emulator.control.counters()["open_streams"] == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the event stream was left open")


async def test_leaving_the_event_stream_early_releases_its_response(
    hook: NoxusHook, noxus_emulator: Any
) -> None:
    slow = noxus_emulator.control.workflow_id("slow")
    async with hook.async_client() as client:
        run_id = (await client.a_create_run(slow, {"seconds": 30}))["id"]
        events = client.a_iter_run_events(run_id)
        first: RunEvent = await anext(events)
        assert first.event_id
        assert noxus_emulator.control.counters()["open_streams"] == 1
        await events.aclose()
        await _open_streams_drop_to_zero(noxus_emulator)
        await client.a_stop_run(run_id)


# ---- the shared session -------------------------------------------------------------------------


async def test_clients_share_one_session_closed_with_the_last(make_hook: Any) -> None:
    first_hook, second_hook = make_hook(), make_hook()
    async with first_hook.async_client() as first:
        async with second_hook.async_client() as second:
            session = first._transport.session
            assert second._transport.session is session
            assert [pool.api for pool in _transport.SHARED_SESSIONS.pools().values()] == [session]
            await first.a_get_me()
            await second.a_get_me()
        assert not session.closed, "closed while a client still uses it"
        await first.a_get_me()
    assert session.closed
    assert _transport.SHARED_SESSIONS.pools() == {}


async def test_a_new_session_after_the_last_client_left(hook: NoxusHook) -> None:
    async with hook.async_client() as client:
        old = client._transport.session
    async with hook.async_client() as client:
        assert client._transport.session is not old
        assert not client._transport.session.closed
        await client.a_get_me()


async def test_sessions_are_per_base_url_and_tls_setting(make_hook: Any, noxus_emulator: Any) -> None:
    plain = make_hook()
    other_url = make_hook(host=noxus_emulator.url.replace("127.0.0.1", "localhost"))
    no_tls_check = make_hook(verify_ssl=False)
    async with plain.async_client() as a, other_url.async_client() as b, no_tls_check.async_client() as c:
        assert len({id(a._transport.session), id(b._transport.session), id(c._transport.session)}) == 3
        assert len(_transport.SHARED_SESSIONS.pools()) == 3
    assert _transport.SHARED_SESSIONS.pools() == {}


async def test_event_streams_past_the_request_pool_limit_neither_queue_nor_block_requests(
    hook: NoxusHook, noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each open stream holds a connection for its run's whole life: on the bounded request pool the
    stream past the limit would wait for a run to end, and status reads would queue behind them."""
    monkeypatch.setattr(aiohttp_transport, "POOL_LIMIT_PER_HOST", 2)
    slow = noxus_emulator.control.workflow_id("slow")
    async with hook.async_client() as client:
        run_ids = [(await client.a_create_run(slow, {"seconds": 30}))["id"] for _ in range(5)]
        streams = [contextlib.aclosing(client.a_iter_run_events(run_id)) for run_id in run_ids]
        async with contextlib.AsyncExitStack() as stack:
            opened = [await stack.enter_async_context(stream) for stream in streams]
            first_frames = await asyncio.wait_for(
                asyncio.gather(*(anext(events) for events in opened)), timeout=10
            )
            assert [isinstance(frame, RunEvent) for frame in first_frames] == [True] * 5
            assert noxus_emulator.control.counters()["open_streams"] == 5
            statuses = await asyncio.wait_for(
                asyncio.gather(*(client.a_get_run_status(run_id) for run_id in run_ids)), timeout=10
            )
            assert {status["status"] for status in statuses} <= {"queued", "running"}
        for run_id in run_ids:
            await client.a_stop_run(run_id)


async def test_the_key_is_sent_per_request_on_a_shared_session(make_hook: Any) -> None:
    good, bad = make_hook(), make_hook(api_key="not-a-key")
    async with good.async_client() as good_client, bad.async_client() as bad_client:
        assert good_client._transport.session is bad_client._transport.session
        with pytest.raises(NoxusAuthError):
            await bad_client.a_get_me()
        assert (await good_client.a_get_me())["id"]


async def test_session_is_closed_when_the_block_raises(hook: NoxusHook) -> None:
    with pytest.raises(NoxusNotFoundError):
        async with hook.async_client() as client:
            session = client._transport.session
            await client.a_get_run_status("missing")
    assert session.closed
    assert _transport.SHARED_SESSIONS.pools() == {}


async def test_session_is_closed_when_the_task_is_cancelled(hook: NoxusHook, noxus_emulator: Any) -> None:
    slow = noxus_emulator.control.workflow_id("slow")
    streaming = asyncio.Event()
    sessions: list[Any] = []

    async def follow(run_id: str) -> None:
        async with hook.async_client() as client:
            sessions.extend((client._transport.session, client._transport.stream_session))
            async for _ in client.a_iter_run_events(run_id):
                streaming.set()

    async with hook.async_client() as client:
        run_id = (await client.a_create_run(slow, {"seconds": 30}))["id"]
    task = asyncio.create_task(follow(run_id))
    await streaming.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(session.closed for session in sessions)
    assert _transport.SHARED_SESSIONS.pools() == {}
    await _open_streams_drop_to_zero(noxus_emulator)
    hook.stop_run(run_id)


async def test_tls_context_is_built_once_per_process(make_hook: Any, noxus_emulator: Any) -> None:
    first = make_hook()
    second = make_hook(host=noxus_emulator.url.replace("127.0.0.1", "localhost"))
    async with first.async_client() as a, second.async_client() as b:
        contexts = {id(client._transport.session.connector._ssl) for client in (a, b)}  # type: ignore[union-attr]
    assert contexts == {id(_transport.default_ssl_context())}


async def test_connection_is_read_without_the_sync_read(
    hook: NoxusHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a sync connection read in async code")

    monkeypatch.setattr(NoxusHook, "get_connection", refuse)
    async with hook.async_client() as client:
        assert (await client.a_get_me())["id"]
