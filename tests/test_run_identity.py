"""What identifies a task's run (airflow_provider_noxus.run_identity), without sockets."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_noxus.exceptions import NoxusServerError
from airflow_provider_noxus.files import NoxusFile
from airflow_provider_noxus.run_identity import (
    LATE_CREATE_S,
    LIST_SETTLE_S,
    LOOKUP_PAGE_BUDGET,
    MAX_CLOCK_SKEW_S,
    Action,
    Lookup,
    RunRecord,
    ServerView,
    decide,
    fingerprint,
    intent_fingerprint,
    look_up,
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
    record = RunRecord("wf", "intent-1", sent_at=100.0, input_fingerprint="abc", answer_by=101.0, seen=("r",))
    assert record.pending
    assert RunRecord.from_store(record.to_store()) == record
    stored = record.with_run("run-1").as_delivered()
    assert RunRecord.from_store(stored.to_store()) == stored
    assert not stored.pending and stored.own and stored.seen == ()
    adopted = record.adopted("run-2")
    assert RunRecord.from_store(adopted.to_store()) == adopted and not adopted.own
    assert RunRecord.from_store({"run_id": "run-1", "workflow_id": "wf"}) is None  # no version
    assert RunRecord.from_store("garbage") is None
    # A record written by 0.1.0 (version 2) is read; its run counts as the task's own, as then.
    old = RunRecord.from_store({"version": 2, "workflow_id": "wf", "intent": "i", "run_id": "run-1"})
    assert old is not None and old.own and old.run_id == "run-1"


# ---- the decision: the README's table "Exactly one Noxus run per task" ----------------------------

NOW = 1_780_000_000.0  # 2026-05-28T20:26:40Z
INTENT = "intent"
EDITED = "edited intent"
Q1 = fingerprint({"q": 1})


def made(*, own: bool = True, delivered: bool = False) -> RunRecord:
    return RunRecord("wf", INTENT, run_id="run-1", delivered=delivered, max_tries=3, own=own)


def lost(sent: float = NOW - 10, seen: tuple[str, ...] = ()) -> RunRecord:
    """A create sent at ``sent`` whose failure was seen 1 s later."""
    return RunRecord(
        "wf", INTENT, sent_at=sent, input_fingerprint=Q1, max_tries=3, answer_by=sent + 1, seen=seen
    )


def listed_run(run_id: str, created: float, input_: Any = None, **fields: Any) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1e6):06d}Z"
    return {"id": run_id, "created_at": stamp, "input": {"q": 1} if input_ is None else input_, **fields}


def found(*run_ids: str, read_at: float = NOW, problem: str | None = None) -> ServerView:
    return ServerView(lookup=Lookup(tuple({"id": run_id} for run_id in run_ids), read_at, problem))


SETTLED = NOW - 10 + 1 + LATE_CREATE_S + MAX_CLOCK_SKEW_S + LIST_SETTLE_S  # lost()'s settle time

TABLE = [
    # (what happened before, record, intent, max_tries, what the server said, same try) -> action
    ("first try", None, INTENT, 3, ServerView(), False, Action.CREATE),
    ("delivered, then cleared", made(delivered=True), INTENT, 5, ServerView(), False, Action.CREATE),
    ("retry, intent unchanged: read the run", made(), INTENT, 3, ServerView(), False, Action.READ_RUN),
    ("retry, run running", made(), INTENT, 3, ServerView(run={"status": "running"}), False, Action.WAIT),
    ("retry, run queued", made(), INTENT, 3, ServerView(run={"status": "queued"}), False, Action.WAIT),
    ("retry, unknown status", made(), INTENT, 3, ServerView(run={"status": "new"}), False, Action.WAIT),
    ("retry, run completed", made(), INTENT, 3, ServerView(run={"status": "completed"}), False,
     Action.RETURN_OUTPUT),
    ("retry, run failed", made(), INTENT, 3, ServerView(run={"status": "failed"}), False, Action.CREATE),
    ("retry, run stopped", made(), INTENT, 3, ServerView(run={"status": "stopped"}), False, Action.CREATE),
    ("retry, run gone", made(), INTENT, 3, ServerView(run_gone=True), False, Action.CREATE),
    ("cleared while its run goes on", made(), INTENT, 5, ServerView(), False, Action.STOP_THEN_CREATE),
    ("intent changed", made(), EDITED, 3, ServerView(), False, Action.STOP_THEN_CREATE),
    ("intent changed, the run was adopted", made(own=False), EDITED, 3, ServerView(), False, Action.CREATE),
    ("cleared, the run was adopted", made(own=False), INTENT, 5, ServerView(), False, Action.CREATE),
    ("retry, adopted run still running", made(own=False), INTENT, 3, ServerView(run={"status": "running"}),
     False, Action.WAIT),
    ("lost create: look it up", lost(), INTENT, 3, ServerView(), False, Action.LOOK_UP),
    ("lost create, one candidate, settled", lost(), INTENT, 3, found("r1", read_at=SETTLED), False,
     Action.ADOPT),
    ("lost create, one candidate, same try, settled", lost(), INTENT, 3, found("r1", read_at=SETTLED), True,
     Action.ADOPT),
    ("lost create, one candidate before the window settled", lost(sent=NOW), INTENT, 3, found("r1"), True,
     Action.LOOK_UP),
    ("lost create, two candidates", lost(), INTENT, 3, found("r1", "r2", read_at=SETTLED), False,
     Action.FAIL),
    ("lost create, two candidates before the window settled", lost(sent=NOW), INTENT, 3, found("r1", "r2"),
     True, Action.FAIL),
    ("lost create, one candidate now and another seen by an earlier look-up", lost(seen=("r0",)), INTENT, 3,
     found("r1", read_at=SETTLED), False, Action.FAIL),
    ("lost create, the same candidate as an earlier look-up", lost(seen=("r1",)), INTENT, 3,
     found("r1", read_at=SETTLED), False, Action.ADOPT),
    ("lost create, no candidate, next try", lost(), INTENT, 3, found(read_at=SETTLED), False, Action.CREATE),
    ("lost create, no candidate, same try", lost(), INTENT, 3, found(read_at=SETTLED), True, Action.FAIL),
    ("lost create, list unreadable, next try", lost(sent=NOW - 600), INTENT, 3,
     found(read_at=NOW, problem="HTTP 503"), False, Action.FAIL),
    ("lost create, list unreadable, same try, just after the failure", lost(sent=NOW - 1), INTENT, 3,
     found(problem="HTTP 503"), True, Action.LOOK_UP),
    ("lost create, intent changed", lost(), EDITED, 3, ServerView(), False, Action.CREATE),
    ("lost create, cleared", lost(), INTENT, 5, ServerView(), False, Action.CREATE),
]


@pytest.mark.parametrize(
    ("record", "intent_", "max_tries", "view", "same_try", "action"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_the_identity_rules(
    record: RunRecord | None, intent_: str, max_tries: int, view: ServerView, same_try: bool, action: Action
) -> None:
    decision = decide(record, intent_, max_tries, view, now=max(NOW, SETTLED), same_try=same_try)
    assert decision.action is action, decision.reason
    if action in (Action.STOP_THEN_CREATE, Action.READ_RUN, Action.WAIT, Action.RETURN_OUTPUT):
        assert decision.run_id == "run-1"
    if action is Action.ADOPT:
        assert decision.run_id == "r1"


def test_a_look_up_before_the_window_settles_waits_for_it_then_decides() -> None:
    record = lost(sent=NOW)
    decision = decide(record, INTENT, 3, found("r1", read_at=NOW + 0.5), now=NOW + 0.5, same_try=True)
    assert decision.action is Action.LOOK_UP
    settled = NOW + 1 + LATE_CREATE_S + MAX_CLOCK_SKEW_S + LIST_SETTLE_S
    assert decision.after == pytest.approx(settled - (NOW + 0.5))
    after = decide(record, INTENT, 3, found("r1", read_at=settled), now=settled, same_try=True)
    assert after.action is Action.ADOPT


def test_an_ambiguous_look_up_names_the_runs_and_says_why_nothing_is_adopted() -> None:
    decision = decide(lost(), INTENT, 3, found("r1", "r2", read_at=SETTLED), now=SETTLED)
    assert "r1" in decision.reason and "r2" in decision.reason
    assert "cannot tell" in decision.reason and "clear the task" in decision.reason
    assert decision.candidates == ("r1", "r2")


def test_a_killed_try_keeps_a_wide_window_that_the_next_try_closes_when_it_starts() -> None:
    # A try killed during its create never saw its failure: the window runs to the create's last
    # possible answer (retries included), too long to wait for...
    record = RunRecord(
        "wf", INTENT, sent_at=NOW - 100, input_fingerprint=Q1, max_tries=3, answer_by=NOW + 300
    )
    assert decide(record, INTENT, 3, found(read_at=NOW), now=NOW).action is Action.FAIL
    # ...but once a later try runs, the killed one is over: its window closes when the later try began.
    closed = record.ended_by(NOW)
    settled = NOW + LATE_CREATE_S + MAX_CLOCK_SKEW_S + LIST_SETTLE_S
    early = decide(closed, INTENT, 3, found("r1", read_at=NOW), now=NOW)
    assert early.action is Action.LOOK_UP and early.after == pytest.approx(settled - NOW)
    assert decide(closed, INTENT, 3, found("r1", read_at=settled), now=settled).action is Action.ADOPT
    # A record of 0.1.0 (no answer time) keeps the bound of the slowest create, not the later try's start.
    old = RunRecord("wf", INTENT, sent_at=NOW - 3600, input_fingerprint=Q1, max_tries=3)
    assert old.ended_by(NOW).window.end < NOW - 2000


# ---- the look-up in the run list -----------------------------------------------------------------


def pages(*items: list[dict[str, Any]]) -> Any:
    read: list[int] = []

    def list_page(page: int, size: int) -> dict[str, Any]:
        read.append(page)
        return {"items": items[page - 1] if page <= len(items) else [], "pages": len(items), "page": page}

    list_page.read = read  # type: ignore[attr-defined]
    return list_page


SENT = NOW - 10


@pytest.mark.parametrize(
    ("run", "candidate"),
    [
        (listed_run("r", SENT + 0.01), True),
        (listed_run("r", SENT - MAX_CLOCK_SKEW_S + 0.1), True),  # within the clock skew
        (listed_run("r", SENT + 1 + LATE_CREATE_S + MAX_CLOCK_SKEW_S - 0.1), True),  # made late
        (listed_run("r", SENT - 240), False),  # a colleague's run from 4 minutes before
        (listed_run("r", SENT + 3600), False),  # an hour later
        (listed_run("r", SENT + 0.01, {"q": 2}), False),
        (listed_run("r", SENT + 0.01, workflow_version_id="v2"), False),
        ({"id": "r", "created_at": "not a date", "input": {"q": 1}}, False),
        ({"id": "r", "input": {"q": 1}}, False),
    ],
    ids=["at-send", "skew", "late", "4-min-before", "hour-later", "other-input", "other-version",
         "bad-date", "no-date"],
)
def test_which_listed_run_may_be_the_lost_creates(run: dict[str, Any], candidate: bool) -> None:
    lookup = look_up(pages([run]), lost(SENT), None, clock=lambda: SENT + 7200)
    assert lookup.problem is None
    assert (lookup.candidate_ids == ("r",)) is candidate


def test_a_zone_less_created_at_is_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    naive = listed_run("r", SENT + 0.01)
    naive["created_at"] = naive["created_at"].removesuffix("Z")
    for zone in ("Asia/Tokyo", "America/Los_Angeles"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        try:
            assert look_up(pages([naive]), lost(SENT), None, clock=lambda: NOW - 5).candidate_ids == ("r",)
        finally:
            monkeypatch.delenv("TZ")
            time.tzset()


def test_the_look_up_reads_back_to_the_window_start_and_counts_each_run_once() -> None:
    fresh = [listed_run(f"n{index}", SENT + 2, {"q": 9}) for index in range(3)]
    ours = listed_run("ours", SENT + 0.5)
    old = [listed_run("old", SENT - 60)]
    list_page = pages([*fresh, ours], [ours, *fresh], old, old)  # runs shift down between two pages
    lookup = look_up(list_page, lost(SENT), None, clock=lambda: NOW - 5)
    assert lookup.candidate_ids == ("ours",) and lookup.problem is None
    assert list_page.read == [1, 2, 3], "a page older than the window start ends the look-up"


def test_a_look_up_that_cannot_see_the_whole_window_says_so() -> None:
    newer = [listed_run("n", SENT + 2, {"q": 9})]
    lookup = look_up(pages(*[newer] * 50), lost(SENT), None, clock=lambda: NOW - 5)
    assert lookup.problem and "not all were read" in lookup.problem
    ahead = [listed_run("future", NOW + 30, {"q": 9})]
    lookup = look_up(pages(ahead), lost(SENT), None, clock=lambda: NOW)
    assert lookup.problem and "clock is ahead" in lookup.problem

    def unreadable(page: int, size: int) -> Any:
        raise NoxusServerError("busy", status_code=503)

    lookup = look_up(unreadable, lost(SENT), None, clock=lambda: NOW)
    assert lookup.problem and "could not be read" in lookup.problem
    assert LOOKUP_PAGE_BUDGET * 100 >= 500
