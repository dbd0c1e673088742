"""The run list's envelope and run timestamps, read without trusting the server (no sockets)."""

from __future__ import annotations

import pytest

from airflow_provider_noxus.exceptions import NoxusProtocolError
from airflow_provider_noxus.run_list import (
    MAX_LISTED_COUNT,
    parse_run_page,
    parse_timestamp,
    run_created_at,
)


def test_a_zone_less_timestamp_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    for zone in ("Asia/Tokyo", "America/Los_Angeles", "UTC"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        naive, utc = parse_timestamp("2026-11-28T10:00:00"), parse_timestamp("2026-11-28T10:00:00Z")
        assert naive == utc == 1795860000.0
    monkeypatch.delenv("TZ")
    time.tzset()


@pytest.mark.parametrize("value", [None, "", "yesterday", 1795860000, "9999-99-99T00:00:00Z"])
def test_what_is_not_a_timestamp_is_none(value: object) -> None:
    assert parse_timestamp(value) is None
    assert run_created_at({"created_at": value}) is None


def test_items_of_another_workflow_or_without_id_are_dropped() -> None:
    page = parse_run_page(
        {
            "items": [
                {"id": "a", "workflow_id": "wf", "status": "running"},
                {"id": "b", "status": "running"},
                {"id": "c", "workflow_id": "other", "status": "completed"},
                {"status": "completed"},
                {"id": 7},
                "not a run",
            ],
            "total": 6,
            "page": 1,
            "size": 100,
            "pages": 1,
        },
        workflow_id="wf",
        page=1,
        size=100,
    )
    assert [run["id"] for run in page.items] == ["a", "b"]
    assert page.dropped == 4
    assert page.last


@pytest.mark.parametrize("huge", [10**400, MAX_LISTED_COUNT + 1, -1, True, 1.5, "12"])
def test_unbelievable_counts_are_no_counts(huge: object) -> None:
    page = parse_run_page(
        {"items": [{"id": "a"}], "total": huge, "page": huge, "size": huge, "pages": huge},
        workflow_id="wf",
        page=3,
        size=50,
    )
    assert (page.total, page.page, page.size, page.pages) == (None, 3, 50, None)
    assert not page.last  # no believable page count: only an empty page ends the list


def test_a_page_size_above_the_api_maximum_is_capped() -> None:
    assert parse_run_page({"items": [], "size": 5000}, workflow_id="wf", page=1, size=100).size == 100


@pytest.mark.parametrize("envelope", [None, [], {"items": None}, {"items": {"id": "a"}}, "text"])
def test_an_answer_without_an_items_list_is_a_protocol_error(envelope: object) -> None:
    with pytest.raises(NoxusProtocolError, match="items list") as caught:
        parse_run_page(envelope, workflow_id="wf", page=1, size=100)
    assert caught.value.workflow_id == "wf"
