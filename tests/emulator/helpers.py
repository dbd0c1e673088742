"""Helpers of the emulator's own tests: an API client, an SSE parser, a local web server's state."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from airflow_provider_noxus.emulator import EmulatorServer

KEY_A = "emulator-test-key-a-0001"
KEY_B = "emulator-test-key-b-0002"


@dataclass
class Api:
    """A small client of the emulator's API, as workspace A by default."""

    emu: EmulatorServer
    session: requests.Session

    def url(self, path: str) -> str:
        return self.emu.url + path

    def wid(self, name: str) -> str:
        return self.emu.control.workflow_id(name)

    def create(self, workflow: str, inputs: dict[str, Any], **body: Any) -> requests.Response:
        return self.session.post(
            self.url(f"/v1/workflows/{self.wid(workflow)}/runs"), json={"input": inputs, **body}
        )

    def create_ok(self, workflow: str, inputs: dict[str, Any], **body: Any) -> dict[str, Any]:
        response = self.create(workflow, inputs, **body)
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        return run

    def run(self, run: dict[str, Any]) -> dict[str, Any]:
        response = self.session.get(self.url(f"/v1/workflows/{run['workflow_id']}/runs/{run['id']}"))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_final(self, run: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            current = self.run(run)
            if current["status"] in ("completed", "failed", "stopped") or time.monotonic() > deadline:
                return current
            time.sleep(0.05)

    def events(self, run_id: str, etag: str | None = None) -> list[dict[str, Any]]:
        """Every frame of a run's stream until the server closes it; keep-alives as ``{"comment": ...}``."""
        params = {"etag": etag} if etag else None
        with self.session.get(
            self.url(f"/v1/runs/{run_id}/events"), params=params, stream=True, timeout=20
        ) as r:
            assert r.status_code == 200, r.text
            assert r.headers["Content-Type"].startswith("text/event-stream")
            return parse_sse(r.iter_lines(decode_unicode=True))


def parse_sse(lines: Any) -> list[dict[str, Any]]:
    """SSE lines as frames: ``data`` JSON objects, or ``{"comment": text}``; each frame's event name kept."""
    frames: list[dict[str, Any]] = []
    event = None
    for line in lines:
        if line.startswith(":"):
            frames.append({"comment": line[1:].strip()})
        elif line.startswith("event:"):
            event = line[len("event:") :].strip()
        elif line.startswith("data:"):
            frames.append({**json.loads(line[len("data:") :]), "_event": event})
    return frames


@dataclass
class LocalWebServer:
    """A local web server's state: GET answers ``body``; POST the next of ``post_statuses``, then 200."""

    body: bytes = b"hello from the local server"
    content_type: str = "text/plain"
    post_statuses: list[int] = field(default_factory=list)
    received: list[Any] = field(default_factory=list)
    url: str = ""
