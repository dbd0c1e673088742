"""Fault injection and request counters of the emulator's control API.

A fault hits the next ``count`` requests to its endpoint (``-1``: until cleared; ``*`` matches every
endpoint); faults are consumed in the order they were added, one per request. The kinds, with their
fields in the JSON body of ``POST /_emulator/faults``:

- ``status`` (``status``, ``retry_after``): answer STATUS with a JSON ``detail`` instead of handling the
  request. ``retry_after`` (a number or any text: ``0``, ``-5``, ``0.5``, an HTTP date, garbage) is sent
  verbatim as ``Retry-After``; ``none`` sends no header. Default: ``1`` on a 429, no header otherwise.
- ``redirect`` (``status``, ``location``): answer 301, 302, 303, 307 or 308 (default 307) with an empty
  body and ``Location: <location>``, absolute (another origin...) or relative; ``{path}`` in it stands for
  the request's path and query. The client decides whether to follow it.
- ``latency`` (``seconds``): wait, then handle the request.
- ``reset``: close the connection (TCP reset) without an answer.
- ``malformed``: a 200 whose body is not JSON.
- ``trickle`` (``seconds``, ``chunk_bytes``): handle the request, then send its answer (or its event
  stream) ``chunk_bytes`` bytes at a time (default 1), ``seconds`` (default 0.5) apart.
- ``lose_answer`` (``mode``, ``seconds``), every endpoint but ``run_events``: handle the request (a create
  makes its run), then lose the answer. Modes: ``timeout`` holds it ``seconds`` (default 30) then sends
  it; ``timeout_close`` holds it then closes the connection; ``truncate`` sends the head with the whole
  body's ``Content-Length`` but half the body, then closes; ``cut_json`` sends the head without a length
  and half the body, then closes (the client sees a body cut mid-JSON); ``502`` answers 502 with an HTML
  page, as a proxy in front of the API would.
- ``drop_stream`` (``after_frames``), ``run_events`` only: close the stream after that many frames.
- ``silent_stream`` (``seconds``), ``run_events`` only: send ``: keep-alive`` comments every ``seconds``
  (default: the emulator's keep-alive interval) and never a frame, until the client leaves; the run goes
  on and ends as usual.
- ``sync_timeout``: ``create_run_sync`` only: answer 504 at once; the run goes on.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

#: Endpoint names used by faults and counters (``*`` matches any of them).
ENDPOINTS = (
    "create_run",
    "create_run_sync",
    "get_run",
    "list_runs",
    "get_run_status",
    "run_events",
    "stop_run",
    "upload_file",
    "download_file",
    "me",
    "nodes",
    "list_workflows",
    "get_workflow",
)
FAULT_KINDS = (
    "status",
    "redirect",
    "latency",
    "reset",
    "malformed",
    "trickle",
    "lose_answer",
    "drop_stream",
    "silent_stream",
    "sync_timeout",
)
#: The endpoints of kinds that make sense on some endpoints only.
KIND_ENDPOINTS = {
    "drop_stream": ("run_events",),
    "silent_stream": ("run_events",),
    "sync_timeout": ("create_run_sync",),
    "lose_answer": tuple(endpoint for endpoint in ENDPOINTS if endpoint != "run_events"),
}
FAULT_STATUSES = (400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503, 504)
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
LOSE_ANSWER_MODES = ("timeout", "timeout_close", "truncate", "cut_json", "502")
#: A ``retry_after`` that means "send no ``Retry-After`` header".
NO_RETRY_AFTER = "none"
#: Fields of each kind's command-line spec after ``ENDPOINT:KIND``, in order (kinds not here: COUNT only).
SPEC_FIELDS = {
    "status": ("status", "count", "retry_after"),
    "redirect": ("status", "count", "location"),
    "latency": ("seconds", "count"),
    "trickle": ("seconds", "count", "chunk_bytes"),
    "lose_answer": ("mode", "count", "seconds"),
    "drop_stream": ("after_frames", "count"),
    "silent_stream": ("seconds", "count"),
}
#: Spec fields kept as text.
TEXT_FIELDS = ("retry_after", "location", "mode")
#: Text fields that come last and take the rest of the spec, colons included (URLs, HTTP dates).
REST_FIELDS = ("retry_after", "location")

FAULT_SPEC_HELP = """\
Fault spec: ENDPOINT:KIND[:FIELDS], repeatable. ENDPOINT is one of {endpoints} or '*'.
COUNT is how many requests the fault hits: 1 by default, -1 until cleared. An empty field keeps its default.
  status:STATUS[:COUNT[:RETRY_AFTER]]  answer STATUS (a 4xx/5xx). RETRY_AFTER, the rest of the spec, is
      sent verbatim (0, -5, 0.5, an HTTP date, any text); 'none' sends no header. Default: 1 on a 429
  redirect:STATUS[:COUNT]:LOCATION  answer 301/302/303/307/308 with that Location (the rest of the spec,
      absolute or relative; {{path}} stands for the request's path and query)
  latency:SECONDS[:COUNT]  wait, then handle the request
  reset[:COUNT]  close the connection without an answer
  malformed[:COUNT]  a 200 whose body is not JSON
  trickle:SECONDS[:COUNT[:BYTES]]  send the answer (or the event stream) BYTES at a time (default 1),
      SECONDS (default 0.5) apart
  lose_answer:MODE[:COUNT[:SECONDS]]  handle the request (a create makes its run), then lose the answer:
      timeout (hold it SECONDS, default 30, then send it), timeout_close (hold it, then close),
      truncate (Content-Length larger than the body sent, then close), cut_json (no length, the body
      stops mid-JSON, then close), 502 (an HTML 502 as from a proxy). Every endpoint but run_events
  drop_stream:AFTER_FRAMES[:COUNT]  run_events only: close the stream after that many frames
  silent_stream[:SECONDS[:COUNT]]  run_events only: keep-alive comments every SECONDS (default
      --keep-alive-seconds), never a frame; the run goes on
  sync_timeout[:COUNT]  create_run_sync only: 504 at once; the run goes on
Examples: get_run:status:503:2  get_run:status:429:1:0  get_run:redirect:307:http://127.0.0.1:9/v1/x
  get_run:trickle:0.5  run_events:silent_stream  create_run:lose_answer:timeout:1:45  create_run:reset
""".format(endpoints=", ".join(ENDPOINTS))


@dataclass
class Fault:
    """A fault applied to the next ``count`` matching requests (``-1``: until cleared).

    :param endpoint: endpoint name or ``*``.
    :param kind: one of :data:`FAULT_KINDS`.
    :param status: the status answered by a ``status`` or ``redirect`` fault.
    :param retry_after: the ``Retry-After`` text of a ``status`` fault (:data:`NO_RETRY_AFTER`: none).
    :param seconds: wait of a ``latency`` fault, pause of a ``trickle``, hold of a ``lose_answer`` timeout,
        keep-alive interval of a ``silent_stream`` (None: the emulator's).
    :param after_frames: frames sent before a ``drop_stream`` fault closes the stream.
    :param location: the ``Location`` of a ``redirect``.
    :param chunk_bytes: bytes sent at a time by a ``trickle``.
    :param mode: how a ``lose_answer`` loses it, one of :data:`LOSE_ANSWER_MODES`.
    """

    endpoint: str
    kind: str
    count: int = 1
    status: int | None = None
    retry_after: str | None = None
    seconds: float | None = None
    after_frames: int | None = None
    location: str | None = None
    chunk_bytes: int | None = None
    mode: str | None = None

    def applies_to(self, endpoint: str) -> bool:
        """Whether this fault hits a request to ``endpoint``."""
        if self.endpoint not in ("*", endpoint):
            return False
        only = KIND_ENDPOINTS.get(self.kind)
        return only is None or endpoint in only


def make_fault(raw: Any) -> Fault:
    """Build a fault from the control API's JSON body; ``ValueError`` says what is wrong.

    :param raw: ``{"endpoint", "kind", "count"}`` and the kind's fields (module docstring).
    """
    if not isinstance(raw, dict):
        raise ValueError("the body must be a JSON object")
    endpoint, kind = raw.get("endpoint", "*"), raw.get("kind")
    if endpoint != "*" and endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; use one of {', '.join(ENDPOINTS)} or '*'")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
    only = KIND_ENDPOINTS.get(kind)
    if only and endpoint != "*" and endpoint not in only:
        raise ValueError(f"a {kind} fault applies to {', '.join(only)} only")
    count = _number(raw, "count", int, 1, low=-1)
    if count == 0:
        raise ValueError("count must be a positive number of requests, or -1 for 'until cleared'")
    fault = Fault(endpoint=endpoint, kind=kind, count=count)
    if kind == "status":
        fault.status = _number(raw, "status", int, 503)
        if fault.status not in FAULT_STATUSES:
            raise ValueError(f"status must be one of {FAULT_STATUSES}")
        fault.retry_after = _retry_after(raw.get("retry_after"), fault.status)
    elif kind == "redirect":
        fault.status = _number(raw, "status", int, 307)
        if fault.status not in REDIRECT_STATUSES:
            raise ValueError(f"a redirect's status must be one of {REDIRECT_STATUSES}")
        fault.location = _header_text("location", raw.get("location"))
    elif kind == "latency":
        fault.seconds = _number(raw, "seconds", float, 1.0)
    elif kind == "trickle":
        fault.seconds = _number(raw, "seconds", float, 0.5)
        fault.chunk_bytes = _number(raw, "chunk_bytes", int, 1, low=1)
    elif kind == "lose_answer":
        mode = raw.get("mode")
        if str(mode) not in LOSE_ANSWER_MODES:  # 502 may come as a number
            raise ValueError(f"mode must be one of {', '.join(LOSE_ANSWER_MODES)}, got {mode!r}")
        fault.mode = str(mode)
        if fault.mode.startswith("timeout"):
            fault.seconds = _number(raw, "seconds", float, 30.0)
    elif kind == "drop_stream":
        fault.after_frames = _number(raw, "after_frames", int, 1)
    elif kind == "silent_stream" and raw.get("seconds") is not None:
        fault.seconds = _number(raw, "seconds", float, 0.0, low=0.01)
    return fault


def _number(
    raw: dict[str, Any], key: str, kind: type[int] | type[float], default: float, low: float = 0
) -> Any:
    """``raw[key]`` as ``kind``, at least ``low``; ``default`` when absent."""
    value = raw.get(key)
    if value is None:
        return kind(default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number, got {value!r}")
    if kind is int and value != int(value):
        raise ValueError(f"{key} must be a whole number, got {value!r}")
    if value < low:
        raise ValueError(f"{key} must be {low:g} or more, got {value!r}")
    return kind(value)


def _retry_after(value: Any, status: int) -> str | None:
    """The ``Retry-After`` text of a status fault: a number as its shortest text, any text verbatim."""
    if value is None:
        return "1" if status == 429 else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return _header_text("retry_after", value)


def _header_text(key: str, value: Any) -> str:
    """``value`` if it can be sent as a header value: printable ASCII text, not empty."""
    if not isinstance(value, str) or not value or not all(" " <= char <= "~" for char in value):
        raise ValueError(f"{key} must be non-empty printable ASCII text, got {value!r}")
    return value


def parse_fault_spec(spec: str) -> Fault:
    """Build a fault from a command-line spec (see :data:`FAULT_SPEC_HELP`); ``ValueError`` if bad."""
    endpoint, _, rest = spec.partition(":")
    kind, _, rest = rest.partition(":")
    if not kind:
        raise ValueError(f"fault spec {spec!r} needs at least ENDPOINT:KIND")
    names = SPEC_FIELDS.get(kind, ("count",))
    if names[-1] in REST_FIELDS:
        args = rest.split(":", len(names) - 1) if rest else []
        if kind == "redirect" and len(args) > 1 and not re.fullmatch(r"-?\d*", args[1]):
            args = [args[0], "", ":".join(args[1:])]  # no COUNT before the LOCATION
    else:
        args = rest.split(":") if rest else []
    if len(args) > len(names):
        raise ValueError(f"fault spec {spec!r}: too many fields for kind {kind!r} ({':'.join(names)})")
    raw: dict[str, Any] = {"endpoint": endpoint, "kind": kind}
    for name, text in zip(names, args, strict=False):
        if not text:
            continue
        if name in TEXT_FIELDS:
            raw[name] = text
            continue
        try:
            raw[name] = float(text) if "." in text else int(text)
        except ValueError as error:
            raise ValueError(f"fault spec {spec!r}: {name} must be a number, got {text!r}") from error
    return make_fault(raw)


class FaultRegistry:
    """Faults in the order they were added; each matching request consumes one use of the first."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Queue a fault."""
        self.faults.append(fault)

    def clear(self) -> None:
        """Forget every fault."""
        self.faults.clear()

    def take(self, endpoint: str) -> Fault | None:
        """The first fault that hits ``endpoint``, with one use consumed, or None."""
        for index, fault in enumerate(self.faults):
            if fault.applies_to(endpoint):
                if fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        del self.faults[index]
                return fault
        return None

    def to_json(self) -> list[dict[str, Any]]:
        """The pending faults."""
        return [asdict(fault) for fault in self.faults]


class Counters:
    """What the emulator saw, for tests: requests per endpoint and status, runs, stops, webhooks."""

    def __init__(self) -> None:
        self.requests: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.runs_created: defaultdict[str, int] = defaultdict(int)
        self.stops: defaultdict[str, int] = defaultdict(int)
        self.webhook_deliveries: list[dict[str, Any]] = []

    def count_request(self, endpoint: str, outcome: int | str) -> None:
        """Count one answered request.

        :param outcome: the status sent; ``reset`` (no answer, a reset), ``closed`` (no answer, the
            connection closed) or ``truncated`` (the answer cut short).
        """
        self.requests[endpoint][str(outcome)] += 1

    def to_json(self, open_connections: int, open_streams: int) -> dict[str, Any]:
        """The body of ``GET /_emulator/counters``, with the live connection and stream counts."""
        return {
            "requests": {endpoint: dict(by_status) for endpoint, by_status in self.requests.items()},
            "runs_created": dict(self.runs_created),
            "runs_created_total": sum(self.runs_created.values()),
            "stops": dict(self.stops),
            "stops_total": sum(self.stops.values()),
            "open_connections": open_connections,
            "open_streams": open_streams,
            "webhook_deliveries": list(self.webhook_deliveries),
        }
