"""Fault injection and request counters of the emulator's control API."""

from __future__ import annotations

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
FAULT_KINDS = ("status", "latency", "reset", "malformed", "drop_stream", "sync_timeout")
#: Kinds that only make sense on one endpoint.
KIND_ENDPOINT = {"drop_stream": "run_events", "sync_timeout": "create_run_sync"}
FAULT_STATUSES = (400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503, 504)

FAULT_SPEC_HELP = """\
Fault spec: ENDPOINT:KIND[:ARG][:COUNT], repeatable. ENDPOINT is one of {endpoints} or '*'.
KIND and ARG: status:STATUS[:COUNT[:RETRY_AFTER]] (429 carries Retry-After, default 1 s);
latency:SECONDS[:COUNT]; drop_stream:AFTER_FRAMES[:COUNT] (run_events only); reset[:COUNT];
malformed[:COUNT]; sync_timeout[:COUNT] (create_run_sync only). COUNT defaults to 1; -1 = until cleared.
Examples: get_run:status:503:2   get_run:status:429:1:2   run_events:drop_stream:3   create_run:reset
""".format(endpoints=", ".join(ENDPOINTS))


@dataclass
class Fault:
    """A fault applied to the next ``count`` matching requests (``-1``: until cleared).

    :param endpoint: endpoint name or ``*``.
    :param kind: one of :data:`FAULT_KINDS`.
    :param status: the status answered by a ``status`` fault.
    :param retry_after: seconds in ``Retry-After`` of a 429.
    :param seconds: latency added by a ``latency`` fault.
    :param after_frames: frames sent before a ``drop_stream`` fault closes the stream.
    """

    endpoint: str
    kind: str
    count: int = 1
    status: int | None = None
    retry_after: float | None = None
    seconds: float | None = None
    after_frames: int | None = None

    def applies_to(self, endpoint: str) -> bool:
        """Whether this fault hits a request to ``endpoint``."""
        if self.endpoint not in ("*", endpoint):
            return False
        only = KIND_ENDPOINT.get(self.kind)
        return only is None or only == endpoint


def make_fault(raw: Any) -> Fault:
    """Build a fault from the control API's JSON body; ``ValueError`` says what is wrong.

    :param raw: ``{"endpoint", "kind", "status", "count", "retry_after", "seconds", "after_frames"}``.
    """
    if not isinstance(raw, dict):
        raise ValueError("the body must be a JSON object")
    endpoint, kind = raw.get("endpoint", "*"), raw.get("kind")
    if endpoint != "*" and endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; use one of {', '.join(ENDPOINTS)} or '*'")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
    only = KIND_ENDPOINT.get(kind)
    if only and endpoint not in (only, "*"):
        raise ValueError(f"a {kind} fault applies to {only} only")
    count = _number(raw, "count", int, 1)
    if count == 0 or count < -1:
        raise ValueError("count must be a positive number of requests, or -1 for 'until cleared'")
    fault = Fault(endpoint=endpoint, kind=kind, count=count)
    if kind == "status":
        fault.status = _number(raw, "status", int, 503)
        if fault.status not in FAULT_STATUSES:
            raise ValueError(f"status must be one of {FAULT_STATUSES}")
        retry_after = raw.get("retry_after")
        fault.retry_after = _number(raw, "retry_after", float, 1.0) if retry_after is not None else None
        if fault.status == 429 and fault.retry_after is None:
            fault.retry_after = 1.0
    elif kind == "latency":
        fault.seconds = _number(raw, "seconds", float, 1.0)
    elif kind == "drop_stream":
        fault.after_frames = _number(raw, "after_frames", int, 1)
        if fault.after_frames < 0:
            raise ValueError("after_frames must be 0 or more")
    return fault


def _number(raw: dict[str, Any], key: str, kind: type[int] | type[float], default: float) -> Any:
    value = raw.get(key)
    if value is None:
        return kind(default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < -1:
        raise ValueError(f"{key} must be a number, got {value!r}")
    if kind is int and value != int(value):
        raise ValueError(f"{key} must be a whole number, got {value!r}")
    return kind(value)


def parse_fault_spec(spec: str) -> Fault:
    """Build a fault from a command-line spec (see :data:`FAULT_SPEC_HELP`); ``ValueError`` if bad."""
    parts = spec.split(":")
    if len(parts) < 2:
        raise ValueError(f"fault spec {spec!r} needs at least ENDPOINT:KIND")
    endpoint, kind, args = parts[0], parts[1], parts[2:]
    names = {
        "status": ["status", "count", "retry_after"],
        "latency": ["seconds", "count"],
        "drop_stream": ["after_frames", "count"],
    }.get(kind, ["count"])
    if len(args) > len(names):
        raise ValueError(f"fault spec {spec!r}: too many fields for kind {kind!r} ({':'.join(names)})")
    raw: dict[str, Any] = {"endpoint": endpoint, "kind": kind}
    for name, text in zip(names, args, strict=False):
        if text:
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
        """Count one answered request (``outcome``: a status, or ``reset``)."""
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
