"""What the provider sends and shows besides the key: no cookies kept, a key checked when the
connection is read, no ``user:password@`` from the host field in any URL or message."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from support.hostile_calls import KEY, run_body, trigger_event
from support.hostile_server import Conn, Request

from airflow_provider_noxus.exceptions import NoxusConfigurationError, NoxusServerError
from airflow_provider_noxus.hooks.noxus import NoxusHook


def cookie_setter(request: Request, conn: Conn) -> None:
    """Sets a cookie naming the key it was given, on every answer."""
    key = request.headers.get("x-api-key", "")
    conn.reply(200, run_body(), headers={"Set-Cookie": f"session=for-{key[-4:]}; Path=/"})


def by_name(server: Any) -> str:
    """The server's URL with a host name: aiohttp keeps no cookie from an IP address anyway."""
    return f"http://localhost:{server.port}"


def test_cookies_are_never_sent_back(serve: Any, connect: Any, call_mode: str) -> None:
    server = serve(cookie_setter)
    hook: NoxusHook = connect(by_name(server))
    if call_mode == "sync":
        hook.get_run_status("run-1")
        hook.get_run_status("run-1")
    else:

        async def twice() -> None:
            async with hook.async_client() as client:
                await client.a_get_run_status("run-1")
                await client.a_get_run_status("run-1")

        asyncio.run(asyncio.wait_for(twice(), 30))
    assert len(server.requests) == 2
    assert all("cookie" not in request.headers for request in server.requests)


def test_a_cookie_set_for_one_key_is_not_sent_with_another(serve: Any, connect: Any) -> None:
    """The triggerer shares one aiohttp pool per base URL between every connection (every key)."""
    server = serve(cookie_setter)
    first = connect(by_name(server), key="nxk-first-key-aaaa")
    second = connect(by_name(server), key="nxk-second-key-bbbb")

    async def both() -> None:
        async with first.async_client() as a, second.async_client() as b:
            assert a._transport.session is b._transport.session  # the shared pool
            await a.a_get_run_status("run-1")
            await b.a_get_run_status("run-1")

    asyncio.run(asyncio.wait_for(both(), 30))
    assert [request.headers.get("x-api-key") for request in server.requests] == [
        "nxk-first-key-aaaa",
        "nxk-second-key-bbbb",
    ]
    assert "cookie" not in server.requests[1].headers


def strict_key(request: Request, conn: Conn) -> None:
    """Accepts exactly :data:`KEY`, like the API."""
    if request.headers.get("x-api-key") != KEY:
        conn.reply(401, {"detail": "Invalid API key"})
    else:
        conn.reply(200, run_body())


@pytest.mark.parametrize("pasted", [f"{KEY}\n", f"  {KEY}\r\n"])
def test_a_key_with_surrounding_whitespace_is_stripped(
    serve: Any, connect: Any, api_for: Any, pasted: str
) -> None:
    server = serve(strict_key)
    assert api_for(connect(server.url, key=pasted))("get_run_status", "run-1")["status"] == "completed"
    assert [request.headers["x-api-key"] for request in server.requests] == [KEY]


def test_a_key_with_surrounding_whitespace_works_in_the_trigger(serve: Any, connect: Any) -> None:
    server = serve(strict_key)
    event = trigger_event(connect(server.url, key=f"{KEY}\n"), wait_strategy="poll")
    assert event["status"] == "success"


BAD_KEYS = [
    pytest.param("nxk-first\nsecond-line", id="inner-newline"),
    pytest.param("nxk-bell\x07key", id="control-character"),
    pytest.param("nxk-clé-accentuée", id="non-ascii"),
    pytest.param("nxk-emoji-\U0001f511", id="non-latin-1"),
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_key_that_cannot_be_a_header_is_refused_naming_the_connection(
    serve: Any, connect: Any, api_for: Any, key: str
) -> None:
    server = serve(strict_key)
    hook = connect(server.url, key=key)
    with pytest.raises(NoxusConfigurationError) as caught:
        api_for(hook)("get_run_status", "run-1")
    message = str(caught.value)
    assert hook.noxus_conn_id in message and "password field" in message
    assert key not in message and key.split("-")[1] not in message
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert server.requests == []


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_key_that_cannot_be_a_header_ends_the_trigger_with_a_clear_error(
    serve: Any, connect: Any, key: str
) -> None:
    server = serve(strict_key)
    hook = connect(server.url, key=key)
    event = trigger_event(hook, wait_strategy="poll")
    assert event["status"] == "error"
    assert hook.noxus_conn_id in event["message"] and key not in event["message"]
    assert server.requests == []


def failing(request: Request, conn: Conn) -> None:
    conn.reply(500, {"detail": "boom"})


def test_credentials_in_the_host_field_are_in_no_url_or_message(
    serve: Any, connect: Any, api_for: Any
) -> None:
    server = serve(failing)
    hook: NoxusHook = connect(server.url.replace("http://", "http://admin:hunter2@"))
    with pytest.raises(NoxusServerError) as caught:
        api_for(hook)("get_run_status", "run-1")
    assert "hunter2" not in str(caught.value)
    assert hook.base_url == server.url
    assert hook.run_url("wf-1", "run-1") == f"{server.url}/workflows/wf-1/runs/run-1"
    assert all("authorization" not in request.headers for request in server.requests)


def test_credentials_in_the_app_url_are_dropped(serve: Any, connect: Any) -> None:
    server = serve(failing)
    hook: NoxusHook = connect(server.url, app_url="https://viewer:s3cret@app.example.com/")
    assert hook.run_url("wf-1", "run-1") == "https://app.example.com/workflows/wf-1/runs/run-1"


def test_credentials_in_the_host_field_are_not_in_the_trigger_event(serve: Any, connect: Any) -> None:
    server = serve(failing)
    hook = connect(server.url.replace("http://", "http://admin:hunter2@"), retry_attempts=1)
    event = trigger_event(hook, wait_strategy="poll", deadline=time.time() + 1.0)
    assert "hunter2" not in str(event)
    assert all("authorization" not in request.headers for request in server.requests)
