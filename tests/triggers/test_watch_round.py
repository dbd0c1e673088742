"""The shared status watcher's decisions (triggers/watch_round.py), without sockets: when the list is read
again after failures, refusals and 429s, and where a round's walk down the list ends."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_noxus.exceptions import (
    NoxusAuthError,
    NoxusProtocolError,
    NoxusRateLimitedError,
    NoxusServerError,
    NoxusValidationError,
)
from airflow_provider_noxus.run_list import RunPage
from airflow_provider_noxus.triggers.watch_round import (
    LIST_RETRY_MAX_INTERVALS,
    MAX_RATE_LIMIT_PAUSE_S,
    AfterListFailure,
    ListHealth,
    PageWalk,
    Step,
    page_budget,
)

INTERVAL = 5.0


def page(number: int, *, items: int = 100, total: int | None = 10_000, pages: int | None = 100) -> RunPage:
    runs = tuple({"id": f"run-{number}-{index}"} for index in range(items))
    return RunPage(items=runs, dropped=0, total=total, page=number, size=100, pages=pages)


def walk_to_the_end(walk: PageWalk, pages: Any, unseen: int = 5) -> list[Step]:
    """Feed ``pages(number)`` (none repeating the one before) until the walk stops; its steps."""
    steps = [walk.after(pages(1), unseen)]
    while steps[-1] is Step.NEXT_PAGE:
        assert len(steps) < 10_000, "the walk never ended"
        steps.append(walk.after(pages(walk.pages_read), unseen))
    return steps


# ---- the list's health across rounds ------------------------------------------------------------


def test_transient_failures_wait_then_read_runs_while_the_list_backs_off_from_one_interval() -> None:
    health = ListHealth()
    outcomes = [health.list_failed(NoxusServerError("down"), now=0.0, interval=INTERVAL) for _ in range(2)]
    assert outcomes == [AfterListFailure.WAIT] * 2
    assert health.reads_list(0.0)
    backoffs = []
    for _ in range(4):
        assert (
            health.list_failed(NoxusServerError("down"), now=100.0, interval=INTERVAL)
            is AfterListFailure.READ_RUNS
        )
        backoffs.append((health.list_again_at - 100.0) / INTERVAL)
    assert backoffs == [1, 2, 4, LIST_RETRY_MAX_INTERVALS]
    assert not health.reads_list(100.0 + 3 * INTERVAL)
    assert health.reads_list(100.0 + 4 * INTERVAL)
    health.list_read()
    assert (health.failures, health.reads_list(0.0)) == (0, True)
    assert (
        health.list_failed(NoxusProtocolError("garbage"), now=0.0, interval=INTERVAL) is AfterListFailure.WAIT
    )


@pytest.mark.parametrize(
    "error", [NoxusAuthError("refused", status_code=401), NoxusValidationError("no", status_code=422)]
)
def test_a_refused_list_is_read_one_by_one_and_tried_again_within_a_few_intervals(error: Exception) -> None:
    health = ListHealth(failures=2)
    assert health.list_failed(error, now=10.0, interval=INTERVAL) is AfterListFailure.READ_RUNS
    assert health.failures == 0
    assert not health.reads_list(10.0 + LIST_RETRY_MAX_INTERVALS * INTERVAL - 0.1)
    assert health.reads_list(10.0 + LIST_RETRY_MAX_INTERVALS * INTERVAL)


@pytest.mark.parametrize(
    ("retry_after", "pause"), [(30.0, 30.0), (None, INTERVAL), (0.0, INTERVAL), (1e9, MAX_RATE_LIMIT_PAUSE_S)]
)
def test_a_429_pauses_every_request_for_its_retry_after(retry_after: float | None, pause: float) -> None:
    health = ListHealth(failures=2)
    error = NoxusRateLimitedError("slow down", retry_after=retry_after)
    assert health.list_failed(error, now=50.0, interval=INTERVAL) is AfterListFailure.WAIT
    assert health.failures == 2, "a 429 is no reason to read runs one by one"
    assert health.round_at(51.0) == 50.0 + pause
    assert health.round_at(50.0 + pause + 1) == 50.0 + pause + 1
    health.rate_limited(NoxusRateLimitedError("again", retry_after=1.0), now=51.0, interval=0.5)
    assert health.quiet_until == 50.0 + pause, "a shorter pause does not cut a longer one"


# ---- one round's walk down the list -------------------------------------------------------------


def test_the_walk_stops_when_every_due_run_is_seen_or_the_list_ends() -> None:
    walk = PageWalk(budget=3, needed=5, first_total=10_000)
    assert walk.after(page(1), 0) is Step.DONE
    walk = PageWalk(budget=3, needed=5, first_total=250)
    assert walk_to_the_end(walk, lambda n: page(n, total=250, pages=3)) == [Step.NEXT_PAGE] * 2 + [
        Step.READ_RUNS
    ]
    walk = PageWalk(budget=3, needed=5, first_total=None)
    assert walk.after(page(1, items=0, total=None, pages=None), 5) is Step.READ_RUNS


def test_a_busy_list_adds_its_growth_once_and_never_more_pages_than_runs_needed() -> None:
    # Three runs created between any two page reads of a 20,000-run list.
    walk = PageWalk(budget=2, needed=2, first_total=20_000)
    steps = walk_to_the_end(walk, lambda n: page(n, total=20_000 + 3 * n, pages=201), unseen=2)
    assert len(steps) == 3  # the budget's two pages and one for the growth
    # A server claiming ever more runs still ends the walk at the budget plus the runs needed.
    walk = PageWalk(budget=2, needed=2, first_total=1_000)
    steps = walk_to_the_end(walk, lambda n: page(n, total=1_000 * 10**n, pages=10**9), unseen=2)
    assert len(steps) == 4


def test_the_rest_of_a_short_list_is_read_when_it_costs_less_than_the_runs_unseen() -> None:
    walk = PageWalk(budget=2, needed=60, first_total=500)
    steps = walk_to_the_end(walk, lambda n: page(n, total=500, pages=5), unseen=60)
    assert steps == [Step.NEXT_PAGE] * 4 + [Step.READ_RUNS]
    # A server that always says one more page follows, with runs never seen before, is cut off.
    walk = PageWalk(budget=2, needed=60, first_total=None)
    steps = walk_to_the_end(walk, lambda n: page(n, total=None, pages=n + 1), unseen=60)
    assert len(steps) == 62


def test_a_page_that_repeats_ends_the_walk() -> None:
    walk = PageWalk(budget=5, needed=5, first_total=None)
    assert walk.after(page(1, total=None, pages=None), 5) is Step.NEXT_PAGE
    assert walk.after(page(2, total=None, pages=None), 5, repeats=True) is Step.READ_RUNS
    walk = PageWalk(budget=5, needed=5, first_total=None)
    assert walk.after(page(1, total=None, pages=None), 5) is Step.NEXT_PAGE
    assert walk.after(page(1, total=None, pages=None), 5) is Step.READ_RUNS  # the server says "page 1" again


def test_the_budget_goes_deep_only_where_pages_cost_less_than_per_run_reads() -> None:
    assert page_budget([None] * 50, 100) == 2
    assert page_budget([None] * 150, 100) == 3
    assert page_budget([250] * 50, 100) == 4  # fifty runs on page 3: read down to them
    assert page_budget([10_000], 100) == 2  # one run far down: read it by itself
    assert page_budget([], 100) == 1


def test_429s_in_a_row_back_off_from_one_interval_with_a_floor() -> None:
    """``Retry-After: 0`` on every read must not make a hot loop, however short the poll interval."""
    health = ListHealth()
    pauses = []
    now = 0.0
    for _ in range(6):
        health.rate_limited(NoxusRateLimitedError("slow down", retry_after=0.0), now=now, interval=0.01)
        pauses.append(health.quiet_until - now)
        now = health.quiet_until
    assert all(pause >= 0.1 - 1e-9 for pause in pauses), pauses
    assert pauses[-1] >= 0.16, "the pause grows with each 429 in a row"
    health.run_read()
    health.rate_limited(NoxusRateLimitedError("slow down", retry_after=0.0), now=now, interval=0.01)
    assert health.quiet_until - now < 0.16, "an answer in between starts the backoff over"
