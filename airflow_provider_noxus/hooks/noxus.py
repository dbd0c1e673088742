"""NoxusHook: the Noxus API for tasks, with a sync client (``requests``) and an async one (``aiohttp``).

The connection (fields, extras, form) is described in :mod:`airflow_provider_noxus.connection`.

Longer than most modules, on purpose: it is the hook's whole public API, every endpoint once on the
blocking client and once, ``a_``-prefixed, on the async one (each a few lines over the protocol layer),
plus the two wait drivers' I/O; splitting the twins apart would hide which endpoints either lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_noxus import protocol
from airflow_provider_noxus._compat import BaseHook, mask_secret
from airflow_provider_noxus.connection import (
    CONNECTION_CACHE,
    CONNECTION_TYPE,
    NoxusConnectionSettings,
    connection_form_widgets,
    settings_from_connection,
    ui_field_behaviour,
)
from airflow_provider_noxus.exceptions import (
    NoxusAuthError,
    NoxusConfigurationError,
    NoxusError,
    NoxusNotFoundError,
    NoxusProtocolError,
)
from airflow_provider_noxus.files import upload_part
from airflow_provider_noxus.hooks._transport import REDACTED
from airflow_provider_noxus.run_result import Pause, ReadRun, ResultStep, final_run, outcome_error, run_steps
from airflow_provider_noxus.wait import (
    DEFAULT_POLL_INTERVAL_S,
    RunWait,
    WaitOptions,
    WaitOutcome,
    WaitStrategy,
    adrive,
    check_timeout,
    drive,
    run_signature,
    streams,
)

if TYPE_CHECKING:  # the transports are imported where first used: see hooks/_transport/__init__.py
    from airflow_provider_noxus.hooks._transport import AsyncSleep, AsyncTransport, SyncSleep, SyncTransport

#: Status reads of a wait are sent once each: the wait backs off and tries again itself.
SINGLE_ATTEMPT = protocol.RetryPolicy(max_attempts=1)
#: The frames of one chunk of an event stream (none for a keep-alive).
EventBatch = list[protocol.RunEvent]
#: ``watch(after)``: the run object once its :func:`~airflow_provider_noxus.wait.run_signature` differs
#: from ``after`` (that of the last one seen; None: at once), as a shared watcher reading the run every
#: poll interval tells.
StatusWatch = Callable[[tuple[Any, ...] | None], Awaitable[Mapping[str, Any]]]


def _me_without_key(record: dict[str, Any], api_key: str) -> dict[str, Any]:
    """The key's record with its ``value`` (the key itself, when the server echoes it) hidden."""
    if record.get("value") == api_key:
        return {**record, "value": REDACTED}
    return record


# --------------------------------------------------------------------------------------------
# The hook
# --------------------------------------------------------------------------------------------


class NoxusHook(BaseHook):
    """Talk to the Noxus API: run workflows, read runs, stream their events, move files.

    Sync methods use one ``requests.Session`` per hook. Async code (triggers) uses
    ``async with hook.async_client() as client:``, which reads the connection asynchronously.

    :param noxus_conn_id: Airflow connection id of type ``noxus``.
    :param retry_policy: overrides the retry settings of the connection's extras.
    :param sleep: waits between sync retries and polls (default ``time.sleep``).
    :param async_sleep: waits between async retries (default ``asyncio.sleep``).
    """

    conn_name_attr = "noxus_conn_id"
    default_conn_name = "noxus_default"
    conn_type = CONNECTION_TYPE
    hook_name = "Noxus"

    def __init__(
        self,
        noxus_conn_id: str = default_conn_name,
        *,
        retry_policy: protocol.RetryPolicy | None = None,
        sleep: SyncSleep | None = None,
        async_sleep: AsyncSleep | None = None,
    ) -> None:
        super().__init__()
        self.noxus_conn_id = noxus_conn_id
        self._retry_policy = retry_policy
        self._sleep: SyncSleep = sleep or time.sleep
        self._async_sleep: AsyncSleep = async_sleep or asyncio.sleep

    # ---- Airflow 2 connection form (Airflow 3 reads conn-fields from get_provider_info) --------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Form fields of the extras (Airflow 2); see :func:`connection.connection_form_widgets`."""
        return connection_form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden, relabelled and placeholder fields (Airflow 2); see :mod:`~.connection`."""
        return ui_field_behaviour()

    # ---- connection and sync transport ---------------------------------------------------------

    @cached_property
    def settings(self) -> NoxusConnectionSettings:
        """The connection, read once (sync read: not for the triggerer; use :meth:`async_client`).

        When the server refuses its key, the transport reads it again, once per refusal, and goes on
        with a rotated key (the transport's ``settings`` then hold it).
        """
        return self._read_settings()

    def _read_settings(self) -> NoxusConnectionSettings:
        """Read and check the connection now; its key is registered with the secrets masker."""
        conn = self.get_connection(self.noxus_conn_id)
        settings = settings_from_connection(conn, retry_policy=self._retry_policy)
        mask_secret(settings.api_key)
        return settings

    @cached_property
    def _transport(self) -> SyncTransport:
        from airflow_provider_noxus.hooks._transport.requests_transport import SyncTransport

        return SyncTransport(self.settings, sleep=self._sleep, reread=self._read_settings)

    def close(self) -> None:
        """Close the hook's HTTP session (it is reopened if the hook is used again)."""
        transport = self.__dict__.pop("_transport", None)
        if transport is not None:
            transport.close()

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def run_url(self, workflow_id: str, run_id: str) -> str:
        """Link to the run in the Noxus web app."""
        return self.settings.run_url(workflow_id, run_id)

    # ---- sync API ------------------------------------------------------------------------------

    def create_run(
        self,
        workflow_id: str,
        inputs: Mapping[str, Any],
        *,
        workflow_version_id: str | None = None,
        node_ids: list[str] | None = None,
        callback_url: str | None = None,
    ) -> dict[str, Any]:
        """Start a run and return it (status ``queued``). Retried only when no run can have been made.

        :param workflow_id: the workflow to run.
        :param inputs: input label (or node id) -> value.
        :param workflow_version_id: a saved version to run instead of the current one.
        :param node_ids: run only these nodes and what they depend on.
        :param callback_url: webhook the server POSTs the run to when it ends.
        """
        body = protocol.create_run_body(
            inputs, workflow_version_id=workflow_version_id, node_ids=node_ids, callback_url=callback_url
        )
        return self._transport.call_json(protocol.create_run_request(workflow_id, body))

    def create_run_sync(
        self,
        workflow_id: str,
        inputs: Mapping[str, Any],
        *,
        workflow_version_id: str | None = None,
        node_ids: list[str] | None = None,
        use_output_ids: bool = False,
    ) -> dict[str, Any]:
        """Run a workflow through the sync endpoint and return the final run with its output.

        Raises :class:`~airflow_provider_noxus.exceptions.NoxusSyncEndpointTimeout` when the server
        stops holding the request (its ``run_id`` is the run, which goes on: wait for it).
        """
        body = protocol.create_run_body(inputs, workflow_version_id=workflow_version_id, node_ids=node_ids)
        request = protocol.create_run_sync_request(workflow_id, body, use_output_ids=use_output_ids)
        return self._transport.call_json(request)

    def get_run(self, workflow_id: str, run_id: str) -> dict[str, Any]:
        """The run with its ``output``."""
        return self._transport.call_json(protocol.get_run_request(workflow_id, run_id))

    def get_run_status(self, run_id: str) -> dict[str, Any]:
        """The run without its ``output`` (needs no workflow id)."""
        return self._transport.call_json(protocol.get_run_status_request(run_id))

    def list_runs(self, workflow_id: str, *, page: int = 1, size: int = 50) -> dict[str, Any]:
        """One page of a workflow's runs, newest first: ``{"items", "total", "page", "size", "pages"}``."""
        return self._transport.call_json(protocol.list_runs_request(workflow_id, page=page, size=size))

    def stop_run(self, run_id: str, *, workflow_id: str | None = None) -> dict[str, Any]:
        """Ask the server to stop a run; returns the run as it is after the stop."""
        return self._transport.call_json(protocol.stop_run_request(run_id, workflow_id=workflow_id))

    def upload_file(
        self,
        content: bytes | str | os.PathLike[str],
        *,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """Upload a file; pass the returned ``uri`` (``spot://...``) as a run's file input.

        :param content: the bytes, or the path of a local file (``str`` is a path).
        :param filename: name shown in Noxus; default the path's base name.
        :param content_type: MIME type; default guessed from the name.
        :raises NoxusFileInputError: the file cannot be read or is over the server's cap (nothing sent).
        """
        part = upload_part(content, filename, content_type)
        return self._transport.call_json(protocol.upload_file_request(), files={"file": part})

    def download_file(self, file_id: str) -> bytes:
        """The bytes of a stored file; takes ``spot://<id>`` or ``<id>``."""
        return self._transport.call(protocol.download_file_request(file_id))

    def get_me(self) -> dict[str, Any]:
        """The calling API key's record (its ``value`` hidden when it is the key)."""
        record = self._transport.call_json(protocol.me_request())
        return _me_without_key(record, self._transport.settings.api_key)

    def list_workflows(self, *, page: int = 1, size: int = 50) -> dict[str, Any]:
        return self._transport.call_json(protocol.list_workflows_request(page=page, size=size))

    def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        return self._transport.call_json(protocol.get_workflow_request(workflow_id))

    def iter_run_events(
        self, run_id: str, *, last_event_id: str | None = None
    ) -> Iterator[protocol.RunEvent]:
        """The run's Server-Sent Events over one connection, until the server closes it.

        :param last_event_id: the ``event_id`` of a frame already seen: only later frames are sent.
        """
        for events in self._event_batches(run_id, last_event_id, None):
            yield from events

    def _event_batches(
        self, run_id: str, last_event_id: str | None, read_timeout: float | None
    ) -> Generator[EventBatch, None, None]:
        """The frames of each chunk of the run's event stream (none for a keep-alive), as they arrive."""
        request = protocol.run_events_request(run_id, last_event_id=last_event_id, timeout=read_timeout)
        parser = protocol.SSEParser()
        with contextlib.closing(self._transport.stream_chunks(request)) as chunks:
            for chunk in chunks:
                yield parser.feed(chunk)

    def wait(
        self,
        workflow_id: str,
        run_id: str,
        options: WaitOptions,
        *,
        deadline: float | None = None,
        log: Any = None,
        on_event: Callable[[protocol.RunEvent], None] | None = None,
    ) -> WaitOutcome:
        """Block until the run ends, ``deadline`` passes or waiting fails; say how it ended.

        The same wait as the trigger's (:meth:`NoxusAsyncClient.a_wait`), driven with blocking I/O.

        :param options: strategy, poll interval, human-feedback handling.
        :param deadline: epoch seconds (``time.time``) at which the outcome is ``timeout``; None waits
            without limit.
        :param log: where progress goes (default the hook's logger).
        :param on_event: called with each event-stream frame.
        """
        settings = self.settings
        wait = RunWait(
            run_id,
            workflow_id,
            options,
            stream=streams(options.strategy),
            deadline=deadline,
            clock=time.time,
            log=log or self.log,
            request_timeout=settings.timeout,
            max_backoff=settings.retry_policy.backoff_max,
        )
        return drive(wait, _BlockingWaitIO(self, run_id, on_event))

    def wait_for_run(
        self,
        workflow_id: str,
        run_id: str,
        *,
        strategy: WaitStrategy = "auto",
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        timeout: float | None = None,
        on_event: Callable[[protocol.RunEvent], None] | None = None,
        fail_on_human_feedback: bool = False,
    ) -> dict[str, Any]:
        """Block until the run reaches a final status; return it with its output, whatever the status
        (read from an answer that says that status).

        Transient errors (5xx, 429, timeouts, resets) never end the wait: it backs off and goes on
        until ``timeout``.

        :param strategy: ``stream`` or ``auto`` (follow the event stream, resuming after drops, and
            poll after three stream failures in a row), or ``poll``.
        :param poll_interval: seconds between polls.
        :param timeout: seconds after which :class:`NoxusRunTimeoutError` is raised; the run is
            not stopped (the caller decides).
        :param on_event: called with each event when streaming.
        :param fail_on_human_feedback: raise :class:`NoxusRunError` when the run waits for a human.
        """
        options = WaitOptions(
            strategy=strategy,
            poll_interval=poll_interval,
            on_human_feedback="fail" if fail_on_human_feedback else "wait",
        )
        timeout = check_timeout("timeout", timeout)
        deadline = None if timeout is None else time.time() + timeout
        outcome = self.wait(workflow_id, run_id, options, deadline=deadline, on_event=on_event)
        run_url = self.run_url(workflow_id, run_id)
        if not outcome.run_ended:
            limits = "no limit set" if timeout is None else f"timeout={timeout:g} s"
            error = outcome_error(outcome, run_url=run_url, limits=limits, stop_note="it was not stopped")
            assert error is not None, "an unfinished wait is an error"
            raise error

        def perform(step: ResultStep) -> Any:
            if isinstance(step, Pause):
                return self._sleep(step.seconds)
            assert isinstance(step, ReadRun), "reading a final run never stops it"
            return self.get_run(workflow_id, run_id)

        return dict(run_steps(final_run(outcome, run_url), perform))

    def test_connection(self) -> tuple[bool, str]:
        """One ``GET /v1/admin/me``, no retry; a message a person can act on."""
        try:
            settings = self.settings
            record = self._transport.call_json(
                protocol.me_request(), policy=protocol.RetryPolicy(max_attempts=1)
            )
        except NoxusConfigurationError as error:
            return False, str(error)
        except NoxusAuthError as error:
            return False, (
                f"The Noxus API at {self.base_url} refused the API key (HTTP {error.status_code}): "
                "check the connection's password field (a Noxus API key)."
            )
        except NoxusNotFoundError:
            return False, (
                f"{self.base_url} answered 404 to GET /v1/admin/me: it is not the Noxus API root. Check the "
                f"base URL (host field), e.g. {protocol.DEFAULT_BASE_URL}."
            )
        except NoxusProtocolError:
            return False, (
                f"{self.base_url} answered, but not with JSON: it is not the Noxus API. Check the base URL "
                f"(host field), e.g. {protocol.DEFAULT_BASE_URL}."
            )
        except NoxusError as error:
            return False, f"Cannot use the Noxus API: {error}"
        if "id" not in record:
            return (
                False,
                f"{settings.base_url} answered GET /v1/admin/me without a key record: check the base URL.",
            )
        key_name = record.get("name") or record["id"]
        return True, f"Connected to the Noxus API at {settings.base_url} with API key {key_name!r}."

    # ---- async ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def async_client(self) -> AsyncIterator[NoxusAsyncClient]:
        """``async with hook.async_client() as client:``: the connection read without blocking (and
        reused by this process for a minute, see :class:`~.connection.AsyncConnectionCache`), and a
        reference on the aiohttp
        sessions shared per (event loop, base URL, TLS setting), released on every exit.
        """
        settings = await CONNECTION_CACHE.read(self.noxus_conn_id, self._retry_policy)
        async with open_async_client(settings, sleep=self._async_sleep) as client:
            yield client


@contextlib.asynccontextmanager
async def open_async_client(
    settings: NoxusConnectionSettings, *, sleep: AsyncSleep = asyncio.sleep
) -> AsyncIterator[NoxusAsyncClient]:
    """An async client on a connection already read; holds a reference on the shared sessions.

    When the server refuses the key, the client reads the connection again (past the cache, once per
    refusal: see :meth:`~.connection.AsyncConnectionCache.read_after_refusal`) and goes on with a
    rotated key.
    """
    from airflow_provider_noxus.hooks._transport.aiohttp_transport import SHARED_SESSIONS, AsyncTransport

    reread = functools.partial(CONNECTION_CACHE.read_after_refusal, settings.conn_id)
    async with SHARED_SESSIONS.use(settings.base_url, settings.verify_ssl) as pool:
        yield NoxusAsyncClient(AsyncTransport(settings, pool, sleep=sleep, reread=reread))


class NoxusAsyncClient:
    """Async twin of the hook's API methods (``a_`` prefix), for triggers; made by
    :meth:`NoxusHook.async_client`.
    """

    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    @property
    def settings(self) -> NoxusConnectionSettings:
        return self._transport.settings

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def run_url(self, workflow_id: str, run_id: str) -> str:
        """Link to the run in the Noxus web app."""
        return self.settings.run_url(workflow_id, run_id)

    async def a_create_run(
        self,
        workflow_id: str,
        inputs: Mapping[str, Any],
        *,
        workflow_version_id: str | None = None,
        node_ids: list[str] | None = None,
        callback_url: str | None = None,
    ) -> dict[str, Any]:
        """See :meth:`NoxusHook.create_run`."""
        body = protocol.create_run_body(
            inputs, workflow_version_id=workflow_version_id, node_ids=node_ids, callback_url=callback_url
        )
        return await self._transport.call_json(protocol.create_run_request(workflow_id, body))

    async def a_get_run(self, workflow_id: str, run_id: str) -> dict[str, Any]:
        """The run with its ``output``."""
        return await self._transport.call_json(protocol.get_run_request(workflow_id, run_id))

    async def a_get_run_status(
        self, run_id: str, *, policy: protocol.RetryPolicy | None = None
    ) -> dict[str, Any]:
        """The run without its ``output``.

        :param policy: overrides the connection's retry policy (e.g. one attempt).
        """
        return await self._transport.call_json(protocol.get_run_status_request(run_id), policy=policy)

    async def a_stop_run(self, run_id: str, *, workflow_id: str | None = None) -> dict[str, Any]:
        return await self._transport.call_json(protocol.stop_run_request(run_id, workflow_id=workflow_id))

    async def a_list_runs(
        self, workflow_id: str, *, page: int = 1, size: int = 50, policy: protocol.RetryPolicy | None = None
    ) -> dict[str, Any]:
        """One page of a workflow's runs, newest first; see :meth:`NoxusHook.list_runs`.

        :param policy: overrides the connection's retry policy (e.g. one attempt).
        """
        request = protocol.list_runs_request(workflow_id, page=page, size=size)
        return await self._transport.call_json(request, policy=policy)

    async def a_get_me(self) -> dict[str, Any]:
        record = await self._transport.call_json(protocol.me_request())
        return _me_without_key(record, self.settings.api_key)

    async def a_iter_run_events(
        self, run_id: str, *, last_event_id: str | None = None
    ) -> AsyncIterator[protocol.RunEvent]:
        """The run's events over one connection, until the server closes it; the response is released
        on every exit (close the generator: ``async with contextlib.aclosing(...)``).

        :param last_event_id: the ``event_id`` of a frame already seen: only later frames are sent.
        """
        async with contextlib.aclosing(self._event_batches(run_id, last_event_id, None)) as batches:
            async for events in batches:
                for event in events:
                    yield event

    async def _event_batches(
        self, run_id: str, last_event_id: str | None, read_timeout: float | None
    ) -> AsyncGenerator[EventBatch, None]:
        """The frames of each chunk of the run's event stream (none for a keep-alive), as they arrive."""
        request = protocol.run_events_request(run_id, last_event_id=last_event_id, timeout=read_timeout)
        parser = protocol.SSEParser()
        async with contextlib.aclosing(self._transport.stream_chunks(request)) as chunks:
            async for chunk in chunks:
                yield parser.feed(chunk)

    async def a_wait(
        self,
        workflow_id: str,
        run_id: str,
        options: WaitOptions,
        *,
        deadline: float | None,
        log: Any,
        stream: bool,
        last_event_id: str | None = None,
        on_polling: Callable[[], None] | None = None,
        watch_status: StatusWatch | None = None,
    ) -> WaitOutcome:
        """Wait for the run in this event loop; the same wait as :meth:`NoxusHook.wait`.

        :param deadline: epoch seconds (``time.time``) at which the outcome is ``timeout``.
        :param stream: follow the event stream (else poll from the start).
        :param on_polling: called once if the wait gives up streaming for polling.
        :param watch_status: tells when the run's status changes, while polling (the triggerer's shared
            watcher); default one ``GET /v1/runs/{id}`` per poll interval.
        """
        wait = RunWait(
            run_id,
            workflow_id,
            options,
            stream=stream,
            deadline=deadline,
            clock=time.time,
            log=log,
            request_timeout=self.settings.timeout,
            max_backoff=self.settings.retry_policy.backoff_max,
            last_event_id=last_event_id,
            on_polling=on_polling,
            watched=watch_status is not None,
        )
        return await adrive(wait, _AsyncWaitIO(self, run_id, watch_status))


class _BlockingWaitIO:
    """The I/O of :meth:`NoxusHook.wait` (:class:`~airflow_provider_noxus.wait.WaitIO`)."""

    def __init__(
        self, hook: NoxusHook, run_id: str, on_event: Callable[[protocol.RunEvent], None] | None
    ) -> None:
        self._hook = hook
        self._run_id = run_id
        self._on_event = on_event
        self._stream: Generator[EventBatch, None, None] | None = None

    def sleep(self, seconds: float) -> None:
        self._hook._sleep(seconds)

    def read_status(self, timeout: float) -> Mapping[str, Any]:
        request = protocol.get_run_status_request(self._run_id, timeout=timeout)
        return self._hook._transport.call_json(request, policy=SINGLE_ATTEMPT)

    def await_status(self, timeout: float) -> Mapping[str, Any]:
        """A worker has no shared watcher: awaiting the status is reading it."""
        return self.read_status(timeout)

    def open_stream(self, last_event_id: str | None, timeout: float) -> None:
        self.close()
        self._stream = self._hook._event_batches(self._run_id, last_event_id, timeout)

    def read_stream(self, timeout: float) -> EventBatch | None:
        batch = next(self._stream, None) if self._stream is not None else None
        if self._on_event is not None:
            for event in batch or ():
                self._on_event(event)
        return batch

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class _AsyncWaitIO:
    """The I/O of :meth:`NoxusAsyncClient.a_wait` (:class:`~airflow_provider_noxus.wait.AsyncWaitIO`):
    each step bounded by its timeout."""

    def __init__(self, client: NoxusAsyncClient, run_id: str, watch_status: StatusWatch | None) -> None:
        self._client = client
        self._run_id = run_id
        self._watch_status = watch_status
        self._last_signature: tuple[Any, ...] | None = None
        self._stream: AsyncGenerator[EventBatch, None] | None = None

    async def sleep(self, seconds: float) -> None:
        await self._client._transport.sleep(seconds)

    async def await_status(self, timeout: float) -> Mapping[str, Any]:
        if self._watch_status is None:  # no watcher: awaiting the status is reading it
            return await self.read_status(timeout)
        bound = None if math.isinf(timeout) else timeout
        run = await asyncio.wait_for(self._watch_status(self._last_signature), bound)
        self._last_signature = run_signature(run)
        return run

    async def read_status(self, timeout: float) -> Mapping[str, Any]:
        request = protocol.get_run_status_request(self._run_id, timeout=timeout)
        call = self._client._transport.call_json(request, policy=SINGLE_ATTEMPT)
        return await asyncio.wait_for(call, timeout)

    async def open_stream(self, last_event_id: str | None, timeout: float) -> None:
        await self.aclose()
        self._stream = self._client._event_batches(self._run_id, last_event_id, timeout)

    async def read_stream(self, timeout: float) -> EventBatch | None:
        if self._stream is None:
            return None
        return await asyncio.wait_for(anext(self._stream, None), timeout)

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.aclose()


__all__ = ["NoxusAsyncClient", "NoxusHook", "open_async_client"]
