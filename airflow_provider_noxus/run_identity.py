"""One Noxus run per intent: what identifies the run a task asks for, and what a task instance
remembers of the run it made.

A task's *intent* is the workflow, the version and a fingerprint of the rendered inputs and run
options (canonical JSON; a file input by what it refers to: its URL, its ``spot://`` id, or the
SHA-256 of its content). The task instance keeps a :class:`RunRecord` in Airflow 3.3's
``task_state_store``: the intent, the run id once known, whether the task already delivered that
run's output, and, while a create is in flight, when it was sent and a fingerprint of the input sent
(so a run whose create answer was lost can be found again in the workflow's run list).

The rules that use them are the operator's (:mod:`airflow_provider_noxus.operators.noxus`); this
module holds the data and the pure decisions: fingerprints, the stored record, and which listed
run is the one a lost create made.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow_provider_noxus.files import NoxusFile
from airflow_provider_noxus.protocol import spot_uri

#: ``task_state_store`` key of the :class:`RunRecord`.
RUN_RECORD_KEY = "noxus_run"
#: Version of the stored record's layout; a record of another version is ignored.
RECORD_VERSION = 2
#: How far before the recorded send time a listed run may have been created and still be ours
#: (the worker's and the server's clocks differ).
CLOCK_SKEW_S = 300.0
#: Pages of 100 runs read, at most, when looking for a run whose create answer was lost.
LOOKUP_PAGE_BUDGET = 5
LOOKUP_PAGE_SIZE = 100

ListRunsPage = Callable[[int, int], Mapping[str, Any]]


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no spaces; NaN and infinities refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def fingerprint(value: Any) -> str:
    """SHA-256 of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _content_sha256(file: NoxusFile) -> str | None:
    if isinstance(file.source, bytes):
        return hashlib.sha256(file.source).hexdigest()
    digest = hashlib.sha256()
    try:
        with Path(str(file.source)).open("rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
    except OSError:
        return None  # reading it for the run will fail with a clear message
    return digest.hexdigest()


def _file_reference(file: NoxusFile) -> dict[str, Any]:
    """What a file input refers to, stable across tries (an upload gets a new ``spot://`` id each time)."""
    if file.kind == "url":
        reference = str(file.source)
    elif file.kind == "spot":
        reference = spot_uri(str(file.source))
    else:
        sha256 = _content_sha256(file)
        reference = f"sha256:{sha256}" if sha256 else f"path:{file.source!s}"
    return {"noxus_file": file.kind, "ref": reference, "name": file.default_name()}


def _identity_value(value: Any) -> Any:
    if isinstance(value, NoxusFile):
        return _file_reference(value)
    if isinstance(value, Mapping):
        return {str(key): _identity_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_identity_value(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # refused with a clear message when the body is built
    return value


def intent_fingerprint(
    workflow_id: str,
    inputs: Mapping[str, Any],
    *,
    workflow_version_id: str | None,
    node_ids: Any,
    callback_url: str | None,
    use_sync_endpoint: bool,
) -> str:
    """The fingerprint of what a task asks Noxus to run (inputs rendered, files not yet resolved)."""
    return fingerprint(
        {
            "workflow_id": workflow_id,
            "workflow_version_id": workflow_version_id,
            "inputs": _identity_value(inputs),
            "node_ids": _identity_value(node_ids),
            "callback_url": callback_url,
            "sync": use_sync_endpoint,
        }
    )


@dataclass(frozen=True)
class RunRecord:
    """What a task instance keeps of its run between tries.

    :param workflow_id: the run's workflow.
    :param intent: the :func:`intent_fingerprint` of the try that made it.
    :param run_id: the run, once the create answered (or the run was found again).
    :param delivered: the task succeeded with this run's result: a later try (a clear) makes a new run.
    :param sent_at: epoch seconds at which the create was sent, while its answer is unknown.
    :param input_fingerprint: :func:`fingerprint` of the ``input`` sent, while the answer is unknown.
    :param max_tries: the task instance's ``max_tries`` when the run was made: Airflow raises it when
        the task instance is cleared (and only then), so a later try can tell a clear from a retry.
    """

    workflow_id: str
    intent: str
    run_id: str | None = None
    delivered: bool = False
    sent_at: float | None = None
    input_fingerprint: str | None = None
    max_tries: int | None = None

    def cleared_since(self, max_tries: int | None) -> bool:
        """Whether the task instance was cleared since this record was made."""
        return self.max_tries is not None and max_tries is not None and max_tries != self.max_tries

    @property
    def pending(self) -> bool:
        """A create was sent and no run id is known."""
        return self.run_id is None and self.sent_at is not None

    def with_run(self, run_id: str) -> RunRecord:
        return replace(self, run_id=run_id, sent_at=None, input_fingerprint=None)

    def as_delivered(self) -> RunRecord:
        return replace(self, delivered=True)

    def to_store(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, **asdict(self)}

    @classmethod
    def from_store(cls, value: Any) -> RunRecord | None:
        """The record read from the store, or None when there is none this version understands."""
        if not isinstance(value, Mapping) or value.get("version") != RECORD_VERSION:
            return None
        try:
            return cls(
                workflow_id=str(value["workflow_id"]),
                intent=str(value["intent"]),
                run_id=str(value["run_id"]) if value.get("run_id") else None,
                delivered=bool(value.get("delivered")),
                sent_at=float(value["sent_at"]) if value.get("sent_at") is not None else None,
                input_fingerprint=value.get("input_fingerprint"),
                max_tries=int(value["max_tries"]) if value.get("max_tries") is not None else None,
            )
        except (KeyError, TypeError, ValueError):
            return None


class RunLedger:
    """The task instance's :class:`RunRecord`, in ``task_state_store`` when Airflow has one (3.3+),
    else for this try only.

    :param store: the context's ``task_state_store``, or None.
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self.record: RunRecord | None = RunRecord.from_store(store.get(RUN_RECORD_KEY)) if store else None

    @property
    def durable(self) -> bool:
        """Whether the record survives this try."""
        return self._store is not None

    def save(self, record: RunRecord) -> None:
        self.record = record
        if self._store is not None:
            self._store.set(RUN_RECORD_KEY, record.to_store())


def _created_at(run: Mapping[str, Any]) -> float | None:
    value = run.get("created_at")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def is_lost_run(run: Mapping[str, Any], record: RunRecord, workflow_version_id: str | None) -> bool:
    """Whether a listed ``run`` is the one the record's create made: created at or after the send
    (less :data:`CLOCK_SKEW_S`), with the same input and version."""
    created = _created_at(run)
    if created is None or record.sent_at is None or created < record.sent_at - CLOCK_SKEW_S:
        return False
    if (run.get("workflow_version_id") or None) != (workflow_version_id or None):
        return False
    run_input = run.get("input")
    return isinstance(run_input, Mapping) and fingerprint(run_input) == record.input_fingerprint


def listed_runs_since(list_page: ListRunsPage, since: float) -> Iterator[Mapping[str, Any]]:
    """The workflow's runs, newest first, created after ``since`` (less the clock skew), reading at most
    :data:`LOOKUP_PAGE_BUDGET` pages.

    :param list_page: ``(page, size)`` -> one page of the run list (``{"items": [...], "pages": n}``).
    """
    for page in range(1, LOOKUP_PAGE_BUDGET + 1):
        envelope = list_page(page, LOOKUP_PAGE_SIZE)
        items = envelope.get("items")
        if not isinstance(items, list) or not items:
            return
        for run in items:
            if isinstance(run, Mapping):
                yield run
        oldest = _created_at(items[-1]) if isinstance(items[-1], Mapping) else None
        pages = envelope.get("pages")
        if (oldest is not None and oldest < since - CLOCK_SKEW_S) or (
            isinstance(pages, int) and page >= pages
        ):
            return


def find_lost_run(
    list_page: ListRunsPage, record: RunRecord, workflow_version_id: str | None
) -> Mapping[str, Any] | None:
    """The run a lost create made, from the workflow's newest runs; the one created closest to the send
    time when several match (identical inputs sent at once by other tasks). None when none matches."""
    assert record.sent_at is not None
    sent_at = record.sent_at
    matches = [
        run for run in listed_runs_since(list_page, sent_at) if is_lost_run(run, record, workflow_version_id)
    ]
    return min(matches, key=lambda run: abs((_created_at(run) or sent_at) - sent_at), default=None)


__all__ = [
    "RUN_RECORD_KEY",
    "RunLedger",
    "RunRecord",
    "canonical_json",
    "find_lost_run",
    "fingerprint",
    "intent_fingerprint",
    "is_lost_run",
]
