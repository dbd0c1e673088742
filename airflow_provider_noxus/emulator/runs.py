"""Runs, their ordered event logs, and how a run progresses (one asyncio task per run, no threads)."""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_noxus.emulator.workflows import Workflow, WorkflowNode, render

log = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"completed", "failed", "stopped"})
#: How long a new run stays ``queued`` before it starts.
QUEUED_SECONDS = 0.02
#: At most this many ``content`` events per llm node.
MAX_CONTENT_FRAMES = 40


def utc_timestamp() -> str:
    """Now, as the API writes times: ISO 8601 in UTC with a ``Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_event_id(text: str) -> tuple[int, int] | None:
    """``"<ms>-<seq>"`` as a comparable pair, or None if it is not one."""
    ms, sep, seq = text.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        return None
    return int(ms), int(seq)


class EventLog:
    """A run's ordered SSE frames with growing ``<ms>-<seq>`` ids; subscribers wait for new ones."""

    def __init__(self) -> None:
        self.ids: list[tuple[int, int]] = []
        self.frames: list[bytes] = []
        self.closed = False
        self.abandoned = False
        self._last = (0, -1)
        self._changed = asyncio.Event()

    def append(self, frame_type: str, data: dict[str, Any], *, final: bool = False) -> None:
        """Add a frame ``{"type", "data", "redisId"}``; a final frame closes the log.

        :param frame_type: ``state`` or ``content``.
        :param data: the frame's ``data``.
        :param final: whether this is the run's last frame.
        """
        now_ms = int(time.time() * 1000)
        last_ms, last_seq = self._last
        event_id = (now_ms, 0) if now_ms > last_ms else (last_ms, last_seq + 1)
        self._last = event_id
        redis_id = f"{event_id[0]}-{event_id[1]}"
        payload = json.dumps({"type": frame_type, "data": data, "redisId": redis_id}, separators=(",", ":"))
        self.ids.append(event_id)
        self.frames.append(f"event: message\ndata: {payload}\n\n".encode())
        if final:
            self.closed = True
        self._wake()

    def abandon(self) -> None:
        """Close the log without a final frame (the emulator was reset or stops): subscribers stop."""
        self.closed = True
        self.abandoned = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def index_after(self, event_id: tuple[int, int] | None) -> int:
        """Index of the first frame after ``event_id`` (0 for None)."""
        return 0 if event_id is None else bisect.bisect_right(self.ids, event_id)

    async def wait_for_more(self, timeout: float) -> bool:
        """Wait until a frame is added or the log closes; False when ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


@dataclass
class Run:
    """One workflow run and its progress.

    :param workflow: the workflow it runs.
    :param group_id: the workspace it belongs to.
    :param input: the ``input`` object as echoed back in the run object.
    :param values: input values by label (files resolved to their attributes), for templates.
    :param plan: the nodes this run executes (``node_ids``/``single_node_id`` may narrow it).
    """

    workflow: Workflow
    group_id: str
    input: dict[str, Any]
    values: dict[str, Any]
    plan: list[WorkflowNode]
    callback_url: str | None = None
    workflow_version_id: str | None = None
    node_ids: list[str] | None = None
    single_node_id: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "queued"
    created_at: str = field(default_factory=utc_timestamp)
    finished_at: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    node_texts: dict[str, str] = field(default_factory=dict)
    log: EventLog = field(default_factory=EventLog)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    _node_started: float = 0.0
    _node_seconds: float = 0.0

    @property
    def is_final(self) -> bool:
        """Whether the run reached ``completed``, ``failed`` or ``stopped``."""
        return self.status in FINAL_STATUSES

    def progress(self) -> tuple[int, dict[str, int]]:
        """The run's progress 0-100 and each node's progress, the running node's from elapsed time."""
        per_node = dict.fromkeys(self.executed, 100)
        if self.status == "completed" or not self.plan:
            return (100 if self.status == "completed" else 0), per_node
        fraction = 0.0
        if self.running:
            elapsed = time.monotonic() - self._node_started
            fraction = min(1.0, elapsed / self._node_seconds) if self._node_seconds > 0 else 1.0
            per_node[self.running[0]] = int(fraction * 100)
        return min(99, int(100 * (len(self.executed) + fraction) / len(self.plan))), per_node

    def progress_details(self, per_node: dict[str, int]) -> dict[str, Any]:
        """The nine ``progress_details`` keys."""
        planned = {node.id for node in self.plan}
        done_or_running = set(self.executed) | set(self.running)
        return {
            "executed_nodes": list(self.executed),
            "running_nodes": list(self.running),
            "remaining_nodes": [n.id for n in self.plan if n.id not in done_or_running],
            "skipped_nodes": [n.id for n in self.workflow.nodes if n.id not in planned],
            "error_handler_nodes": [],
            "per_node_progress": per_node,
            "per_edge_progress": {},
            "subflow_executions": {},
            "run_logs": {},
        }

    def to_json(self, *, with_output: bool = False, use_output_ids: bool = False) -> dict[str, Any]:
        """The run object of the reference (section 4).

        :param with_output: include ``output`` (only the workflow-scoped GET and the sync create do).
        :param use_output_ids: key outputs by output node id instead of label.
        """
        progress, per_node = self.progress()
        body: dict[str, Any] = {
            "id": self.id,
            "group_id": self.group_id,
            "workflow_id": self.workflow.id,
            "workflow_version_id": self.workflow_version_id,
            "status": self.status,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "input": self.input,
        }
        if with_output:
            body["output"] = self.output_json(use_output_ids)
        body.update(
            node_ids=self.node_ids,
            single_node_id=self.single_node_id,
            progress=progress,
            progress_details=self.progress_details(per_node),
        )
        return body

    def output_json(self, use_output_ids: bool = False) -> dict[str, Any]:
        """The run's output, keyed by output label or, with ``use_output_ids``, by output node id."""
        if not use_output_ids or self.status != "completed":
            return self.output
        ids = {output.label: output.node_id for output in self.workflow.outputs}
        return {ids.get(label, label): value for label, value in self.output.items()}

    def state_frame(self, node: WorkflowNode | None = None, node_status: str | None = None) -> None:
        """Log a ``state`` frame; the final one carries ``workflow_status``."""
        progress, per_node = self.progress()
        data: dict[str, Any] = {
            "status": self.status,
            "progress": progress,
            "progress_details": self.progress_details(per_node),
        }
        if node is not None:
            data["node"] = {"id": node.id, "name": node.name, "status": node_status}
        if self.is_final:
            data["workflow_status"] = self.status
        self.log.append("state", data, final=self.is_final)

    def start_node(self, node: WorkflowNode, seconds: float) -> None:
        """Mark ``node`` running for about ``seconds`` and log it."""
        self.running = [node.id]
        self._node_started = time.monotonic()
        self._node_seconds = seconds
        self.state_frame(node, "running")

    def end_node(self, node: WorkflowNode) -> None:
        """Mark ``node`` executed and log it."""
        self.running = []
        self.executed.append(node.id)
        self.state_frame(node, "completed")

    def set_status(self, status: str) -> None:
        """Move to a non-final status and log it."""
        self.status = status
        self.state_frame()

    def finish(self, status: str, output: dict[str, Any]) -> None:
        """Move to a final status, set ``finished_at`` and ``output``, log the final frame."""
        self.status = status
        self.finished_at = utc_timestamp()
        self.output = output
        self.running = []
        self.state_frame()
        self.done.set()


class RunEngine:
    """Creates runs' tasks and moves them through their statuses.

    :param feedback_delay: default pause of ``human`` nodes, in seconds.
    :param on_final: called with each run when it becomes final (webhooks).
    """

    def __init__(self, feedback_delay: float, on_final: Callable[[Run], None]) -> None:
        self.feedback_delay = feedback_delay
        self.on_final = on_final

    def start(self, run: Run) -> None:
        """Log the ``queued`` frame and start the run's task in the running loop."""
        run.state_frame()
        run.task = asyncio.get_running_loop().create_task(self._execute(run))

    def stop(self, run: Run) -> None:
        """Stop a run that is not final (a final run stays as it is)."""
        if run.is_final:
            return
        if run.task is not None:
            run.task.cancel()
        self._finish(run, "stopped", {})

    def _finish(self, run: Run, status: str, output: dict[str, Any]) -> None:
        run.finish(status, output)
        self.on_final(run)

    async def _execute(self, run: Run) -> None:
        try:
            await asyncio.sleep(QUEUED_SECONDS)
            run.set_status("running")
            for node in run.plan:
                seconds = self._seconds(node, run)
                run.start_node(node, seconds)
                if node.kind == "llm":
                    await self._stream_text(run, node, seconds)
                elif node.kind == "human":
                    run.set_status("awaiting_human_feedback")
                    await asyncio.sleep(seconds)
                    run.set_status("running")
                else:
                    await asyncio.sleep(seconds)
                if node.kind == "fail":
                    message = str(render(node.message, self._context(run)) or "Node failed")
                    self._finish(run, "failed", {"error": message})
                    return
                run.end_node(node)
            outputs = {o.label: render(o.value, self._context(run)) for o in run.workflow.outputs}
            self._finish(run, "completed", outputs)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Emulator run %s of workflow %s crashed", run.id, run.workflow.name)
            if not run.is_final:
                self._finish(run, "failed", {"error": "Emulator error while running the workflow"})

    def _seconds(self, node: WorkflowNode, run: Run) -> float:
        value = render(node.seconds, self._context(run))
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return self.feedback_delay if node.kind == "human" else 0.0
        return max(0.0, float(value))

    @staticmethod
    def _context(run: Run) -> dict[str, Any]:
        return {**run.values, "nodes": run.node_texts}

    @staticmethod
    async def _stream_text(run: Run, node: WorkflowNode, seconds: float) -> None:
        text = str(render(node.text, RunEngine._context(run)))
        words = text.split(" ")
        per_frame = max(1, -(-len(words) // MAX_CONTENT_FRAMES))
        chunks = [" ".join(words[i : i + per_frame]) for i in range(0, len(words), per_frame)]
        pause = seconds / max(1, len(chunks))
        produced = ""
        for index, chunk in enumerate(chunks):
            await asyncio.sleep(pause)
            piece = chunk if index == len(chunks) - 1 else chunk + " "
            produced += piece
            run.node_texts[node.name] = produced
            run.log.append("content", {"id": node.id, "status": "running", "content": piece})
        run.node_texts[node.name] = produced
