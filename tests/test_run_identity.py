"""What identifies a task's run (airflow_provider_noxus.run_identity), without sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_noxus.files import NoxusFile
from airflow_provider_noxus.run_identity import (
    CLOCK_SKEW_S,
    LOOKUP_PAGE_BUDGET,
    RunRecord,
    find_lost_run,
    fingerprint,
    intent_fingerprint,
)

OPTIONS: dict[str, Any] = {
    "workflow_version_id": None,
    "node_ids": None,
    "callback_url": None,
    "use_sync_endpoint": False,
}


def intent(inputs: dict[str, Any], workflow_id: str = "wf", **options: Any) -> str:
    return intent_fingerprint(workflow_id, inputs, **{**OPTIONS, **options})


def test_the_intent_ignores_key_order_and_sees_every_input_and_option() -> None:
    base = intent({"a": 1, "b": [1, {"c": "x"}]})
    assert intent({"b": [1, {"c": "x"}], "a": 1}) == base
    changed = [
        intent({"a": 2, "b": [1, {"c": "x"}]}),
        intent({"a": 1, "b": [1, {"c": "y"}]}),
        intent({"a": 1, "b": [1, {"c": "x"}]}, workflow_id="other"),
        intent({"a": 1, "b": [1, {"c": "x"}]}, workflow_version_id="v2"),
        intent({"a": 1, "b": [1, {"c": "x"}]}, node_ids=["n1"]),
        intent({"a": 1, "b": [1, {"c": "x"}]}, callback_url="https://hooks.example.org/x"),
        intent({"a": 1, "b": [1, {"c": "x"}]}, use_sync_endpoint=True),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_file_inputs_count_by_what_they_refer_to(tmp_path: Path) -> None:
    document = tmp_path / "doc.pdf"
    document.write_bytes(b"%PDF one")
    by_path = intent({"doc": NoxusFile.from_path(document)})
    assert intent({"doc": NoxusFile.from_path(str(document))}) == by_path, "the same file, read again"
    document.write_bytes(b"%PDF two")
    assert intent({"doc": NoxusFile.from_path(document)}) != by_path, "new content is a new intent"
    assert intent({"doc": NoxusFile.from_bytes(b"x", name="a")}) == intent(
        {"doc": NoxusFile.from_bytes(b"x", name="a")}
    )
    assert intent({"doc": NoxusFile.from_spot("spot://f1")}) == intent({"doc": NoxusFile.from_spot("f1")})
    assert intent({"doc": NoxusFile.from_url("https://example.org/a.pdf")}) != intent(
        {"doc": NoxusFile.from_url("https://example.org/b.pdf")}
    )


def test_the_record_survives_the_store_and_ignores_other_layouts() -> None:
    record = RunRecord("wf", "intent-1", sent_at=100.0, input_fingerprint="abc")
    assert record.pending
    stored = record.with_run("run-1").as_delivered()
    assert RunRecord.from_store(stored.to_store()) == stored
    assert not stored.pending
    assert RunRecord.from_store({"run_id": "run-1", "workflow_id": "wf"}) is None  # an older layout
    assert RunRecord.from_store("garbage") is None


def listed(run_id: str, created_at: str, input_: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": run_id, "created_at": created_at, "input": input_, "status": "running", **fields}


SENT_AT = 1_780_000_000.0  # 2026-05-28T20:26:40Z


@pytest.mark.parametrize(
    ("run", "ours"),
    [
        (listed("r", "2026-05-28T20:26:41Z", {"q": 1}), True),
        (listed("r", "2026-05-28T20:26:41.123456Z", {"q": 1}), True),
        (listed("r", "2026-05-28T20:22:00Z", {"q": 1}), True),  # within the clock skew
        (listed("r", "2026-05-28T20:00:00Z", {"q": 1}), False),  # well before the send
        (listed("r", "2026-05-28T20:26:41Z", {"q": 2}), False),
        (listed("r", "2026-05-28T20:26:41Z", {"q": 1}, workflow_version_id="v2"), False),
        (listed("r", "not a date", {"q": 1}), False),
        ({"id": "r", "input": {"q": 1}}, False),
    ],
)
def test_which_listed_run_a_lost_create_made(run: dict[str, Any], ours: bool) -> None:
    record = RunRecord("wf", "intent", sent_at=SENT_AT, input_fingerprint=fingerprint({"q": 1}))
    found = find_lost_run(lambda page, size: {"items": [run], "pages": 1}, record, None)
    assert (found is not None) == ours


def test_the_search_stops_at_runs_older_than_the_send_and_within_its_budget() -> None:
    record = RunRecord("wf", "intent", sent_at=SENT_AT, input_fingerprint=fingerprint({"q": 1}))
    pages_read: list[int] = []

    def old_runs(page: int, size: int) -> dict[str, Any]:
        pages_read.append(page)
        return {"items": [listed(f"r{page}", "2026-05-28T19:00:00Z", {"q": 9})], "pages": 50}

    assert find_lost_run(old_runs, record, None) is None
    assert pages_read == [1], "a page older than the send (less the skew) ends the search"

    pages_read.clear()

    def newer_runs(page: int, size: int) -> dict[str, Any]:
        pages_read.append(page)
        return {"items": [listed(f"r{page}", "2026-05-28T20:30:00Z", {"q": 9})], "pages": 50}

    assert find_lost_run(newer_runs, record, None) is None
    assert pages_read == list(range(1, LOOKUP_PAGE_BUDGET + 1))
    assert CLOCK_SKEW_S >= 60
