"""Server-Sent Events: the frames of a run's event stream (``GET /v1/runs/{id}/events``) parsed.

The frame's wire id (``redisId``) is read here only: the rest of the provider calls it ``event_id``.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from airflow_provider_noxus.exceptions import NoxusProtocolError


@dataclass(frozen=True)
class RunEvent:
    """One SSE frame of a run.

    :param type: ``state`` or ``content`` (other values are passed through).
    :param data: the frame's ``data`` object.
    :param event_id: the frame's id (``redisId``): resume after it with ``last_event_id``.
    """

    type: str
    data: dict[str, Any]
    event_id: str | None

    @property
    def workflow_status(self) -> str | None:
        """The run's final status, set on the last frame only."""
        value = self.data.get("workflow_status")
        return str(value) if value else None


#: Longest line, and longest event (its data lines together), of an event stream, in characters.
#: A run's frames carry node outputs, so the bound is generous; past it the stream is dropped with
#: :class:`NoxusProtocolError` rather than held in memory without end.
MAX_SSE_EVENT_CHARS = 16 * 1024 * 1024
_LINE_END = re.compile(r"\r\n|\r|\n")


def _event_id(value: Any) -> str | None:
    """A frame's ``redisId`` as text; an id that is not a string or a number is ignored."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


class SSEParser:
    """Incremental parser of a ``text/event-stream`` body into :class:`RunEvent` objects.

    Feed it raw body chunks as they arrive (:meth:`feed`), or decoded lines without their line
    ending (:meth:`feed_line`). Comment lines (``: keep-alive``) and frames whose data is not a
    JSON object are skipped. Parsing is linear in the input; a line or an event over
    :data:`MAX_SSE_EVENT_CHARS` characters raises :class:`NoxusProtocolError`.
    """

    def __init__(self, *, max_event_chars: int = MAX_SSE_EVENT_CHARS) -> None:
        self._max = max_event_chars
        self._data: list[str] = []
        self._data_chars = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        #: Start of the current line, when it spans chunks (joined once, when the line ends).
        self._partial: list[str] = []
        self._partial_chars = 0
        self._started = False
        #: The last chunk ended with "\r": a "\n" starting the next one belongs to the same line end.
        self._after_cr = False

    def feed(self, chunk: bytes) -> list[RunEvent]:
        """Decode one body chunk and return the events it completes.

        A UTF-8 character, a line or a ``\r\n`` may be split across chunks; lines end with ``\n``,
        ``\r\n`` or ``\r`` as the SSE format allows, and a leading byte order mark is ignored.
        """
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = text.endswith("\r")
        events = []
        start = 0
        for match in _LINE_END.finditer(text):
            line = text[start : match.start()]
            if self._partial:
                self._check_size(self._partial_chars + len(line), "line")
                line = "".join([*self._partial, line])
                self._partial, self._partial_chars = [], 0
            event = self.feed_line(line)
            if event is not None:
                events.append(event)
            start = match.end()
        if start < len(text):
            rest = text[start:]
            self._partial_chars += len(rest)
            self._check_size(self._partial_chars, "line")
            self._partial.append(rest)
        return events

    def _check_size(self, chars: int, what: str) -> None:
        if chars > self._max:
            raise NoxusProtocolError(
                f"The Noxus event stream sent more than {self._max} characters in one {what}; the stream "
                "was dropped (the run can still be read by polling)."
            )

    def feed_line(self, line: str) -> RunEvent | None:
        """Take one line without its line ending; the event it completes, if any."""
        line = line.rstrip("\r\n")
        self._check_size(len(line), "line")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            value = value[1:] if value.startswith(" ") else value
            self._data_chars += len(value) + 1
            self._check_size(self._data_chars, "event")
            self._data.append(value)
        return None

    def _dispatch(self) -> RunEvent | None:
        if not self._data:
            return None
        raw, self._data, self._data_chars = "\n".join(self._data), [], 0
        try:
            payload = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        data = payload.get("data")
        return RunEvent(
            type=str(payload.get("type", "")),
            data=data if isinstance(data, dict) else {},
            event_id=_event_id(payload.get("redisId")),
        )
