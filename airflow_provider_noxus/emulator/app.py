"""The emulator's HTTP application: the Noxus API (docs: noxus-api.md) plus the ``/_emulator`` control API.

Built on aiohttp's server (a dependency of the provider, present with Airflow 2 and 3) in one asyncio loop:
runs progress as tasks of that loop, SSE streams wait on their run's event log. One handler per
endpoint of the API reference, in its order, which is what makes this module long: reading it side by
side with noxus-api.md is how it is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import struct
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from airflow_provider_noxus.emulator.errors import ApiError, ValidationFailed, invalid, validation_issue
from airflow_provider_noxus.emulator.faults import NO_RETRY_AFTER, Counters, Fault, FaultRegistry, make_fault
from airflow_provider_noxus.emulator.files import (
    MAX_FILE_BYTES,
    FileStore,
    RefusedInput,
    StoredFile,
    check_url,
)
from airflow_provider_noxus.emulator.nodes import NODE_CATALOGUE
from airflow_provider_noxus.emulator.runs import EventLog, Run, RunEngine, parse_event_id
from airflow_provider_noxus.emulator.webhooks import deliver_webhook
from airflow_provider_noxus.emulator.workflows import (
    ID_NAMESPACE,
    Workflow,
    builtin_workflows,
    is_uuid,
    merge_workflows,
    validate_inputs,
)

log = logging.getLogger(__name__)

DEMO_API_KEY = "noxus-demo-key"
DEFAULT_ADMIN_TOKEN = "noxus-emulator-admin"
ADMIN_HEADER = "X-Emulator-Admin-Token"
CREATE_FIELDS_OPTIONAL_STR = ("callback_url", "workflow_version_id", "single_node_id", "group_id")
#: The page a proxy in front of the API (nginx) answers when the API's answer is lost.
PROXY_502_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
KEEP_ALIVE = b": keep-alive\n\n"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Typed request-storage keys where aiohttp has them (3.12+), plain strings before.
WORKSPACE_KEY: Any = web.RequestKey("workspace", object) if hasattr(web, "RequestKey") else "workspace"
FAULT_KEY: Any = web.RequestKey("fault", object) if hasattr(web, "RequestKey") else "fault"


@dataclass
class EmulatorSettings:
    """How an emulator behaves.

    :param api_keys: accepted ``X-API-Key`` values, one workspace each; none means the demo key.
    :param admin_token: the ``X-Emulator-Admin-Token`` of the control API.
    :param allow_loopback_urls: let file URLs and webhooks use loopback addresses (tests).
    :param sync_hold_seconds: how long the sync create holds before answering 504.
    :param feedback_delay: default pause of human-review nodes, in seconds.
    :param keep_alive_seconds: idle time between ``: keep-alive`` comments on SSE streams.
    :param workflows: workflows added to (or replacing by name) the built-ins.
    :param faults: faults active from the start.
    """

    api_keys: list[str] = field(default_factory=list)
    admin_token: str = DEFAULT_ADMIN_TOKEN
    allow_loopback_urls: bool = False
    sync_hold_seconds: float = 120.0
    feedback_delay: float = 1.0
    keep_alive_seconds: float = 15.0
    workflows: list[Workflow] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    @property
    def effective_api_keys(self) -> list[str]:
        """The configured keys, or the demo key when there are none."""
        return list(dict.fromkeys(self.api_keys)) or [DEMO_API_KEY]


@dataclass(frozen=True)
class Workspace:
    """The workspace ("group") of one API key."""

    group_id: str
    key_id: str
    name: str
    masked_key: str


def mask_key(key: str) -> str:
    """An API key as ``/v1/admin/me`` shows it: never the key itself."""
    return "****" + key[-4:] if len(key) >= 16 else "********"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer."""
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def error_response(error: ApiError) -> web.Response:
    """An :class:`ApiError` as its JSON answer, with an ``x-request-id``."""
    headers = {**error.headers, "x-request-id": uuid.uuid4().hex}
    return json_response(error.body(), error.status, headers)


def query_bool(request: web.Request, name: str) -> bool:
    """A boolean query parameter, parsed like FastAPI (true/false/1/0/yes/no/on/off)."""
    text = request.query.get(name)
    if text is None:
        return False
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on", "t", "y"):
        return True
    if lowered in ("0", "false", "no", "off", "f", "n"):
        return False
    raise invalid(
        ["query", name], "Input should be a valid boolean, unable to interpret input", "bool_parsing", text
    )


def page_params(request: web.Request) -> tuple[int, int]:
    """``page`` (>= 1, default 1) and the page size (1..100, default 50), or a FastAPI-style 422.

    The page size is ``size`` (the docs' name) or ``page_size`` (what the official client sends,
    beside ``size``); both may be given if they agree.
    """
    issues = []
    values: dict[str, int] = {}
    for name, low, high in (("page", 1, None), ("size", 1, 100), ("page_size", 1, 100)):
        text = request.query.get(name)
        if text is None:
            continue
        try:
            value = int(text)
        except ValueError:
            msg = "Input should be a valid integer, unable to parse string as an integer"
            issues.append(validation_issue(["query", name], msg, "int_parsing", text))
            continue
        if value < low:
            msg = f"Input should be greater than or equal to {low}"
            issues.append(validation_issue(["query", name], msg, "greater_than_equal", text))
        elif high is not None and value > high:
            msg = f"Input should be less than or equal to {high}"
            issues.append(validation_issue(["query", name], msg, "less_than_equal", text))
        values[name] = value
    sizes = {values[name] for name in ("size", "page_size") if name in values}
    if len(sizes) > 1:
        msg = f"size ({values['size']}) and page_size ({values['page_size']}) disagree: give one page size"
        issues.append(validation_issue(["query", "page_size"], msg, "value_error", values["page_size"]))
    if issues:
        raise ValidationFailed(issues)
    return values.get("page", 1), sizes.pop() if sizes else 50


def page_envelope(items: list[Any], page: int, size: int) -> dict[str, Any]:
    """One page of ``items`` in the envelope ``{"items", "total", "page", "size", "pages"}``."""
    start = (page - 1) * size
    return envelope(items[start : start + size], len(items), page, size)


def newest_first_page(oldest_first: list[Any], page: int, size: int) -> tuple[list[Any], int]:
    """The items of one page of ``oldest_first`` read from its end (newest first), and the total;
    without copying the whole list."""
    end = max(0, len(oldest_first) - (page - 1) * size)
    return oldest_first[max(0, end - size) : end][::-1], len(oldest_first)


def envelope(page_items: list[Any], total: int, page: int, size: int) -> dict[str, Any]:
    """The page envelope of ``page_items``, page ``page`` of ``total`` items."""
    return {"items": page_items, "total": total, "page": page, "size": size, "pages": math.ceil(total / size)}


class InjectedReset(Exception):
    """A ``reset`` fault closed the connection: there is no answer to send."""


class EmulatorStopping(Exception):
    """The emulator stops: a trickling answer ends at once instead of holding the shutdown."""


def request_fault(request: web.Request, kind: str) -> Fault | None:
    """The fault of ``kind`` the request carries into its handler, or None."""
    fault: Fault | None = request.get(FAULT_KEY)
    return fault if fault is not None and fault.kind == kind else None


class Emulator:
    """The emulator's state and handlers; :meth:`build_app` makes the aiohttp application.

    :param settings: how it behaves.
    """

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.workflows = merge_workflows(builtin_workflows(), settings.workflows)
        self.workflows_by_name = {workflow.name: workflow for workflow in self.workflows.values()}
        self.workspaces: dict[str, Workspace] = {}
        for index, key in enumerate(settings.effective_api_keys, start=1):
            self.workspaces[key] = Workspace(
                group_id=str(uuid.uuid5(ID_NAMESPACE, f"workspace-{index}")),
                key_id=str(uuid.uuid5(ID_NAMESPACE, f"api-key-{index}")),
                name=f"Emulator key {index}",
                masked_key=mask_key(key),
            )
        self.runs: dict[str, Run] = {}
        #: The runs of each (workflow id, workspace group id), oldest first: a page of the run list
        #: costs the page, not a scan of every run.
        self.listed_runs: defaultdict[tuple[str, str], list[Run]] = defaultdict(list)
        self.files = FileStore(settings.allow_loopback_urls)
        self.faults = FaultRegistry()
        for fault in settings.faults:
            self.faults.add(fault)
        self.counters = Counters()
        self.open_streams = 0
        self.engine = RunEngine(settings.feedback_delay, self._on_run_final)
        self.connection_count: Callable[[], int] = lambda: 0
        self._webhook_tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()

    # ------------------------------------------------------------------ application

    def build_app(self) -> web.Application:
        """The aiohttp application serving the API and the control API."""
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_FILE_BYTES * 2)
        api = [
            ("POST", "/v1/workflows/{workflow_id}/runs", self.create_run, "create_run"),
            ("POST", "/v1/workflows/{workflow_id}/runs/sync", self.create_run_sync, "create_run_sync"),
            ("GET", "/v1/workflows/{workflow_id}/runs/{run_id}", self.get_run, "get_run"),
            ("GET", "/v1/workflows/{workflow_id}/runs", self.list_runs, "list_runs"),
            ("GET", "/v1/runs/{run_id}", self.get_run_status, "get_run_status"),
            ("GET", "/v1/runs/{run_id}/events", self.run_events, "run_events"),
            ("POST", "/v1/runs/{run_id}/stop", self.stop_run, "stop_run"),
            ("POST", "/v1/file", self.upload_file, "upload_file"),
            ("GET", "/v1/file/{file_id}", self.download_file, "download_file"),
            ("GET", "/v1/admin/me", self.me, "me"),
            ("GET", "/v1/nodes", self.nodes, "nodes"),
            ("GET", "/v1/workflows", self.list_workflows, "list_workflows"),
            ("GET", "/v1/workflows/{workflow_id}", self.get_workflow, "get_workflow"),
            ("POST", "/_emulator/faults", self.control_add_fault, "control_add_fault"),
            ("GET", "/_emulator/faults", self.control_list_faults, "control_list_faults"),
            ("DELETE", "/_emulator/faults", self.control_clear_faults, "control_clear_faults"),
            ("GET", "/_emulator/counters", self.control_counters, "control_counters"),
            ("POST", "/_emulator/reset", self.control_reset, "control_reset"),
            ("GET", "/_emulator/runs/{run_id}", self.control_get_run, "control_get_run"),
            ("GET", "/_emulator/workflows", self.control_workflows, "control_workflows"),
        ]
        for method, path, handler, name in api:
            app.router.add_route(method, path, handler, name=name)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), trust_env=False)

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing.set()  # held sync creates answer now
        for run in self.runs.values():
            run.log.abandon()  # open SSE streams end now instead of holding the shutdown

    async def _on_cleanup(self, app: web.Application) -> None:
        self._forget_everything()
        if self._http is not None:
            await self._http.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        """The client for downloads and webhooks (made when the app starts)."""
        if self._http is None:
            raise RuntimeError("The emulator application has not started")
        return self._http

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = request.match_info.route.name
        try:
            if endpoint is None:
                return await handler(request)
            if endpoint.startswith("control_"):
                if request.headers.get(ADMIN_HEADER) != self.settings.admin_token:
                    raise ApiError(401, f"Missing or wrong {ADMIN_HEADER} header")
                return await handler(request)
            response = await self._serve_api(request, handler, endpoint)
        except ApiError as error:
            response = error_response(error)
        except web.HTTPException as error:
            headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
            response = error_response(ApiError(error.status, error.reason, headers=headers))
        except InjectedReset:
            self.counters.count_request(str(endpoint), "reset")
            return web.Response(status=599)
        except Exception:
            log.exception("Emulator error on %s %s", request.method, request.path)
            response = error_response(ApiError(500, "Internal Server Error"))
        if endpoint is not None and not endpoint.startswith("control_"):
            fault = request_fault(request, "trickle") or request_fault(request, "lose_answer")
            if fault is not None and isinstance(response, web.Response):
                return await self._send_damaged(request, endpoint, response, fault)
            self.counters.count_request(endpoint, response.status)
        return response

    async def _serve_api(self, request: web.Request, handler: Handler, endpoint: str) -> web.StreamResponse:
        fault = self.faults.take(endpoint) if self.faults.faults else None
        if fault is not None:
            answer = await self._apply_fault(request, fault)
            if answer is not None:
                return answer
        workspace = self.workspaces.get(request.headers.get("X-API-Key", ""))
        if workspace is None:
            raise ApiError(401, "Missing or invalid API key: send a valid key in the X-API-Key header")
        request[WORKSPACE_KEY] = workspace
        return await handler(request)

    async def _apply_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """Apply a fault; an answer replaces the real one, None lets the request go on."""
        if fault.kind == "latency":
            await asyncio.sleep(fault.seconds or 0.0)
        elif fault.kind == "status":
            status = fault.status or 503
            headers = {}
            if fault.retry_after is not None and fault.retry_after != NO_RETRY_AFTER:
                headers["Retry-After"] = fault.retry_after
            raise ApiError(status, f"Injected fault: HTTP {status}", headers=headers)
        elif fault.kind == "redirect":
            location = (fault.location or "/").replace("{path}", request.path_qs)
            headers = {"Location": location, "x-request-id": uuid.uuid4().hex}
            return web.Response(status=fault.status or 307, headers=headers)
        elif fault.kind == "malformed":
            return web.Response(status=200, body=b'{"id": "truncated', content_type="application/json")
        elif fault.kind == "reset":
            self._reset_connection(request)
            raise InjectedReset
        else:
            request[FAULT_KEY] = fault
        return None

    async def _send_damaged(
        self, request: web.Request, endpoint: str, answer: web.Response, fault: Fault
    ) -> web.StreamResponse:
        """Send ``answer`` as a ``trickle`` or ``lose_answer`` fault says, and count what went out."""
        body = answer.body if isinstance(answer.body, bytes) else b""
        if fault.kind == "trickle":
            self.counters.count_request(endpoint, answer.status)
            stream = web.StreamResponse(status=answer.status, reason=answer.reason, headers=answer.headers)
            stream.content_length = len(body)
            await stream.prepare(request)
            try:
                await self._write(stream, body, fault)
            except (EmulatorStopping, ConnectionError):  # stopping, or the client left: the answer ends
                self._close_connection(request)
            return stream
        if fault.mode == "502":
            answer = web.Response(status=502, text=PROXY_502_PAGE, content_type="text/html")
        elif fault.mode in ("timeout", "timeout_close"):
            await self._stopping_within(fault.seconds or 0.0)
        if fault.mode == "timeout_close":
            self._close_connection(request)
            self.counters.count_request(endpoint, "closed")
        elif fault.mode in ("truncate", "cut_json"):
            self._send_half(request, answer, body, with_length=fault.mode == "truncate")
            self.counters.count_request(endpoint, "truncated")
        else:
            self.counters.count_request(endpoint, answer.status)
        return answer  # after a close, aiohttp's own attempt to send it fails quietly

    @staticmethod
    def _send_half(request: web.Request, answer: web.Response, body: bytes, with_length: bool) -> None:
        """Write ``answer``'s head and the first half of its body on the connection, then close it.

        :param with_length: announce the whole body's ``Content-Length``; without it, the body is the
            bytes sent until the connection closes.
        """
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        lines = [f"HTTP/1.1 {answer.status} {answer.reason}"]
        lines += [f"{name}: {value}" for name, value in answer.headers.items()]
        if with_length:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body[: len(body) // 2])
        transport.close()

    @staticmethod
    def _close_connection(request: web.Request) -> None:
        """Close the request's connection once what was written is sent."""
        if request.transport is not None:
            request.transport.close()

    async def _write(self, response: web.StreamResponse, data: bytes, trickle: Fault | None) -> None:
        """Write ``data``, or with a ``trickle`` fault ``chunk_bytes`` at a time, ``seconds`` apart.

        :raises EmulatorStopping: the emulator started stopping during a pause.
        """
        if trickle is None:
            await response.write(data)
            return
        size = trickle.chunk_bytes or 1
        for start in range(0, len(data), size):
            if start and await self._stopping_within(trickle.seconds or 0.0):
                raise EmulatorStopping
            await response.write(data[start : start + size])

    async def _stopping_within(self, seconds: float) -> bool:
        """Wait ``seconds``, less if the emulator starts stopping meanwhile; whether it is stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)
        return self._closing.is_set()

    def _reset_connection(self, request: web.Request) -> None:
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _workspace(request: web.Request) -> Workspace:
        workspace: Workspace = request[WORKSPACE_KEY]
        return workspace

    def _workflow(self, workflow_id: str) -> Workflow:
        workflow = self.workflows.get(workflow_id)
        if workflow is None:
            raise ApiError(404, f"Workflow {workflow_id} not found (GET /v1/workflows lists them)")
        return workflow

    def _run(self, request: web.Request, workflow_id: str | None = None) -> Run:
        run_id = request.match_info["run_id"]
        run = self.runs.get(run_id)
        if run is None or run.group_id != self._workspace(request).group_id:
            raise ApiError(404, f"Run {run_id} not found")
        if workflow_id is not None and run.workflow.id != workflow_id:
            raise ApiError(404, f"Run {run_id} not found in workflow {workflow_id}")
        return run

    @staticmethod
    async def _json_body(request: web.Request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise invalid(["body", 0], f"JSON decode error: {error}", "json_invalid", None) from error

    # ------------------------------------------------------------------ runs

    async def create_run(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/workflows/{workflow_id}/runs``: the new run, ``queued``."""
        run = await self._create(request)
        return json_response(run.to_json())

    async def create_run_sync(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/workflows/{workflow_id}/runs/sync``: hold until the run ends or the hold ends (504)."""
        output_only = query_bool(request, "output_only")
        use_output_ids = query_bool(request, "use_output_ids")
        run = await self._create(request)
        if request_fault(request, "sync_timeout") is None:
            await self._hold_until_done(run)
        if self._closing.is_set() and not run.is_final:
            raise ApiError(503, f"The emulator is shutting down; run {run.id} was not finished")
        if not run.is_final:
            raise ApiError(
                504,
                f"Run {run.id} did not finish within the sync hold; it goes on: poll it by id",
                extra={"run_id": run.id},
            )
        if output_only:
            return json_response({"id": run.id, "output": run.output_json(use_output_ids)})
        return json_response(run.to_json(with_output=True, use_output_ids=use_output_ids))

    async def _hold_until_done(self, run: Run) -> None:
        """Wait until the run is final, the sync hold has passed, or the emulator shuts down."""
        waits = [asyncio.ensure_future(run.done.wait()), asyncio.ensure_future(self._closing.wait())]
        try:
            await asyncio.wait(
                waits, timeout=self.settings.sync_hold_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for wait in waits:
                wait.cancel()

    async def _create(self, request: web.Request) -> Run:
        workspace = self._workspace(request)
        body = await self._json_body(request)
        self._check_create_body(body)
        workflow = self._workflow(request.match_info["workflow_id"])
        group_id = body.get("group_id")
        if group_id is not None and group_id != workspace.group_id:
            raise ApiError(403, f"This API key has no access to workspace {group_id}")
        values = validate_inputs(workflow, body["input"])
        plan = self._plan(workflow, body.get("node_ids"), body.get("single_node_id"))
        echoed_input = await self._receive_files(workflow, body["input"], values, workspace.group_id)
        callback_url = body.get("callback_url")
        if callback_url is not None:
            try:
                await check_url(callback_url, self.settings.allow_loopback_urls)
            except RefusedInput as error:
                msg = f"callback_url refused for workflow {workflow.name!r}: {error}"
                raise invalid(["body", "callback_url"], msg, "value_error", callback_url) from error
        run = Run(
            workflow=workflow,
            group_id=workspace.group_id,
            input=echoed_input,
            values=values,
            plan=plan,
            callback_url=callback_url,
            workflow_version_id=body.get("workflow_version_id"),
            node_ids=body.get("node_ids"),
            single_node_id=body.get("single_node_id"),
        )
        self.runs[run.id] = run
        self.listed_runs[(workflow.id, workspace.group_id)].append(run)
        self.counters.runs_created[workflow.id] += 1
        self.engine.start(run)
        return run

    @staticmethod
    def _check_create_body(body: Any) -> None:
        """Validate the create body's fields like FastAPI would, all problems at once."""
        if not isinstance(body, dict):
            msg = "Input should be a valid dictionary or object to extract fields from"
            raise invalid(["body"], msg, "model_attributes_type", body)
        issues = []
        if "input" not in body:
            issues.append(validation_issue(["body", "input"], "Field required", "missing", None))
        elif not isinstance(body["input"], dict):
            msg = "Input should be a valid dictionary: 'input' maps input labels to values"
            issues.append(validation_issue(["body", "input"], msg, "dict_type", body["input"]))
        for name in CREATE_FIELDS_OPTIONAL_STR:
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                issues.append(
                    validation_issue(["body", name], "Input should be a valid string", "string_type", value)
                )
        callback_url = body.get("callback_url")
        if isinstance(callback_url, str) and not callback_url.lower().startswith(("http://", "https://")):
            msg = "URL scheme should be 'http' or 'https'"
            issues.append(validation_issue(["body", "callback_url"], msg, "url_scheme", callback_url))
        version = body.get("workflow_version_id")
        if isinstance(version, str) and not is_uuid(version):
            msg = "Input should be a valid UUID"
            issues.append(validation_issue(["body", "workflow_version_id"], msg, "uuid_parsing", version))
        node_ids = body.get("node_ids")
        if node_ids is not None and not (
            isinstance(node_ids, list) and all(isinstance(n, str) for n in node_ids)
        ):
            issues.append(
                validation_issue(
                    ["body", "node_ids"], "Input should be a valid list of strings", "list_type", node_ids
                )
            )
        if not isinstance(body.get("tracing", False), bool):
            issues.append(
                validation_issue(
                    ["body", "tracing"], "Input should be a valid boolean", "bool_type", body["tracing"]
                )
            )
        if issues:
            raise ValidationFailed(issues)

    @staticmethod
    def _plan(workflow: Workflow, node_ids: list[str] | None, single_node_id: str | None) -> list[Any]:
        """The nodes a run executes: all, one (``single_node_id``), or up to the last of ``node_ids``."""
        positions = {node.id: index for index, node in enumerate(workflow.nodes)}
        known = ", ".join(positions) or "none"
        if single_node_id is not None:
            if single_node_id not in positions:
                msg = f"Unknown node {single_node_id!r} in workflow {workflow.name!r}; its nodes: {known}"
                raise invalid(["body", "single_node_id"], msg, "value_error", single_node_id)
            return [workflow.nodes[positions[single_node_id]]]
        if node_ids:
            unknown = [node_id for node_id in node_ids if node_id not in positions]
            if unknown:
                msg = f"Unknown nodes {unknown} in workflow {workflow.name!r}; its nodes: {known}"
                raise invalid(["body", "node_ids"], msg, "value_error", node_ids)
            return list(workflow.nodes[: max(positions[node_id] for node_id in node_ids) + 1])
        return list(workflow.nodes)

    async def _receive_files(
        self, workflow: Workflow, given: dict[str, Any], values: dict[str, Any], group_id: str
    ) -> dict[str, Any]:
        """Store the file inputs (their info replaces them in ``values``); return the input to echo.

        A data URI is echoed as the ``spot://`` URI of its stored copy, so run objects stay small.
        """
        echoed = dict(given)
        for key, value in given.items():
            workflow_input = workflow.find_input(key)
            if workflow_input is None or workflow_input.type != "file":
                continue
            try:
                info = await self.files.receive_input(self.http, value, group_id)
            except RefusedInput as error:
                msg = f"Input {key!r} of workflow {workflow.name!r} refused: {error}"
                raise invalid(
                    ["body", "input", key], msg, "value_error", value.get("uri", "")[:200]
                ) from error
            values[workflow_input.label] = info
            if value["uri"].lower().startswith("data:"):
                echoed[key] = {**value, "uri": f"spot://{info['file_id']}"}
        return echoed

    async def get_run(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/workflows/{workflow_id}/runs/{run_id}``: the run with its output."""
        run = self._run(request, request.match_info["workflow_id"])
        return json_response(run.to_json(with_output=True))

    async def get_run_status(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/runs/{run_id}``: the run without its output."""
        return json_response(self._run(request).to_json())

    async def list_runs(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/workflows/{workflow_id}/runs``: the workspace's runs of a workflow, newest first."""
        page, size = page_params(request)
        workflow = self._workflow(request.match_info["workflow_id"])
        group_id = self._workspace(request).group_id
        runs, total = newest_first_page(self.listed_runs.get((workflow.id, group_id), []), page, size)
        return json_response(envelope([run.to_json() for run in runs], total, page, size))

    async def stop_run(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/runs/{run_id}/stop``: stop it (a final run stays as it is); the run after the stop."""
        run = self._run(request)
        self.counters.stops[run.id] += 1
        self.engine.stop(run)
        return json_response(run.to_json())

    async def run_events(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/runs/{run_id}/events[?etag=<redisId>]``: the run's event log as Server-Sent Events."""
        etag = request.query.get("etag")
        after = parse_event_id(etag) if etag else None
        if etag and after is None:
            msg = f"etag must be a redisId such as '1764324000123-0' (the last one received), got {etag!r}"
            raise invalid(["query", "etag"], msg, "value_error", etag)
        run = self._run(request)
        silent = request_fault(request, "silent_stream")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        self.open_streams += 1
        try:
            if silent is not None:
                interval = silent.seconds or self.settings.keep_alive_seconds
                await self._keep_alive_only(response, run.log, interval)
            else:
                await self._stream(response, run.log, run.log.index_after(after), request)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away (aiohttp cancels the handler): the stream simply ends
        except EmulatorStopping:
            pass  # a trickling stream ends when the emulator stops
        finally:
            self.open_streams -= 1
        return response

    async def _stream(
        self, response: web.StreamResponse, event_log: EventLog, index: int, request: web.Request
    ) -> None:
        """Send the log's frames from ``index`` until it closes, as the request's faults allow."""
        drop = request_fault(request, "drop_stream")
        frames_allowed = drop.after_frames if drop is not None else None
        trickle = request_fault(request, "trickle")
        while True:
            if index < len(event_log.frames):
                batch = event_log.frames[index:]
                if frames_allowed is not None:
                    batch = batch[:frames_allowed]
                    frames_allowed -= len(batch)
                await self._write(response, b"".join(batch), trickle)
                index += len(batch)
                if frames_allowed == 0:
                    return
            elif event_log.closed:
                return
            elif not await event_log.wait_for_more(self.settings.keep_alive_seconds):
                await self._write(response, KEEP_ALIVE, trickle)

    @staticmethod
    async def _keep_alive_only(response: web.StreamResponse, event_log: EventLog, interval: float) -> None:
        """Send a keep-alive comment every ``interval`` s and no frame, until the log is abandoned."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + interval
        while not event_log.abandoned:
            pause = next_beat - loop.time()
            if pause > 0:
                await event_log.wait_for_more(pause)  # wakes on new frames too: then waits on
                continue
            await response.write(KEEP_ALIVE)
            next_beat += interval

    def _on_run_final(self, run: Run) -> None:
        if run.callback_url is None:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(run, run.callback_url))
        self._webhook_tasks.add(task)
        task.add_done_callback(self._webhook_tasks.discard)

    async def _deliver(self, run: Run, url: str) -> None:
        payload = run.to_json(with_output=True)
        record = await deliver_webhook(self.http, url, payload, self.settings.allow_loopback_urls)
        self.counters.webhook_deliveries.append(record)

    # ------------------------------------------------------------------ files

    async def upload_file(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/file``: store the multipart part ``file`` (413 over 25 MB)."""
        if not request.content_type.startswith("multipart/"):
            raise invalid(
                ["body", "file"],
                "Field required: send multipart/form-data with a part named 'file'",
                "missing",
            )
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    raise invalid(
                        ["body", "file"], "Field required: no multipart part named 'file'", "missing"
                    )
                if isinstance(part, aiohttp.BodyPartReader) and part.name == "file":
                    break
            data = bytearray()
            while chunk := await part.read_chunk(256 * 1024):
                data += chunk
                if len(data) > MAX_FILE_BYTES:
                    raise ApiError(413, f"The file is larger than the {MAX_FILE_BYTES} bytes upload cap")
        except (ValueError, AssertionError, aiohttp.ClientPayloadError) as error:
            raise invalid(
                ["body", "file"], f"Could not read the multipart body: {error}", "value_error"
            ) from error
        stored = StoredFile(
            group_id=self._workspace(request).group_id,
            filename=part.filename or "upload",
            content_type=part.headers.get("Content-Type", "application/octet-stream"),
            data=bytes(data),
        )
        return json_response(self.files.add(stored).upload_json())

    async def download_file(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/file/{file_id}``: the file's bytes."""
        file_id = request.match_info["file_id"]
        stored = self.files.get(file_id, self._workspace(request).group_id)
        if stored is None:
            raise ApiError(404, f"File {file_id} not found")
        filename = stored.filename.replace('"', "")
        headers = {
            "Content-Type": stored.content_type,
            "Content-Disposition": f'attachment; filename="{filename}"',
        }
        return web.Response(body=stored.data, headers=headers)

    # ------------------------------------------------------------------ account, catalogue, workflows

    async def me(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/admin/me``: the calling key's record, its value masked."""
        workspace = self._workspace(request)
        return json_response(
            {
                "id": workspace.key_id,
                "name": workspace.name,
                "tenant_admin": False,
                "value": workspace.masked_key,
                "permissions": None,
                "group_id": workspace.group_id,
            }
        )

    async def nodes(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/nodes``: the node types of the emulator's workflows (see :mod:`.nodes`)."""
        return json_response(NODE_CATALOGUE)

    async def list_workflows(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/workflows``: the workflows (id, name, inputs) in the page envelope."""
        page, size = page_params(request)
        items = [workflow.summary() for workflow in self.workflows.values()]
        return json_response(page_envelope(items, page, size))

    async def get_workflow(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/workflows/{workflow_id}``: the workflow and its definition."""
        return json_response(self._workflow(request.match_info["workflow_id"]).describe())

    # ------------------------------------------------------------------ control API

    async def control_add_fault(self, request: web.Request) -> web.StreamResponse:
        """``POST /_emulator/faults``: queue a fault."""
        body = await self._json_body(request)
        try:
            fault = make_fault(body)
        except ValueError as error:
            raise invalid(["body"], str(error), "value_error", body) from error
        self.faults.add(fault)
        return json_response({"faults": self.faults.to_json()})

    async def control_list_faults(self, request: web.Request) -> web.StreamResponse:
        """``GET /_emulator/faults``: the pending faults."""
        return json_response({"faults": self.faults.to_json()})

    async def control_clear_faults(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /_emulator/faults``: forget every fault."""
        self.faults.clear()
        return json_response({"faults": []})

    async def control_counters(self, request: web.Request) -> web.StreamResponse:
        """``GET /_emulator/counters``."""
        return json_response(self.counters.to_json(self.connection_count(), self.open_streams))

    async def control_reset(self, request: web.Request) -> web.StreamResponse:
        """``POST /_emulator/reset``: forget runs, files, faults and counters."""
        self._forget_everything()
        return json_response({"reset": True})

    async def control_get_run(self, request: web.Request) -> web.StreamResponse:
        """``GET /_emulator/runs/{run_id}``: any workspace's run, with its output."""
        run = self.runs.get(request.match_info["run_id"])
        if run is None:
            raise ApiError(404, f"Run {request.match_info['run_id']} not found")
        return json_response(run.to_json(with_output=True))

    async def control_workflows(self, request: web.Request) -> web.StreamResponse:
        """``GET /_emulator/workflows``: ``{name: id}`` of every workflow."""
        return json_response({workflow.name: workflow.id for workflow in self.workflows.values()})

    def _forget_everything(self) -> None:
        for run in self.runs.values():
            if run.task is not None:
                run.task.cancel()
            run.log.abandon()
        for task in self._webhook_tasks:
            task.cancel()
        self.runs.clear()
        self.listed_runs.clear()
        self.files.files.clear()
        self.faults.clear()
        self.counters = Counters()
