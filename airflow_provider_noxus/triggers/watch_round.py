"""The shared status watcher's decisions, without I/O: how a round checks its due runs.

:class:`ListHealth` remembers, across rounds, what the workflow's run list answered: whether a round
reads it or reads its due runs one by one, and when the watcher may send anything at all (after a
429). :class:`PageWalk` is one round's walk down the list: after each page, read another, read the
runs still unseen one by one, or stop. Every answer here has a bound: a list that failed or was refused
is tried again within :data:`LIST_RETRY_MAX_INTERVALS` poll intervals, a round reads at most the pages
its due runs are worth (fewer requests than reading them one by one), and a page that repeats ends the
walk. :mod:`~airflow_provider_noxus.triggers.status_watcher` performs what these decide.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from airflow_provider_noxus.exceptions import NoxusRateLimitedError
from airflow_provider_noxus.protocol import RetryPolicy, backoff_seconds
from airflow_provider_noxus.run_list import RunPage
from airflow_provider_noxus.wait import is_transient

#: Runs asked for per list page (the API's maximum).
PAGE_SIZE = 100
#: Pages read beyond those the due runs could fill (new runs push older ones down the list).
PAGE_MARGIN = 1
#: Rounds in a row whose list reads failed (transiently) before a round reads its due runs one by one.
LIST_FAILURES_BEFORE_PER_RUN_READS = 3
#: Longest the list goes unread, in poll intervals: after failures (a backoff from one interval,
#: doubled) or after a verdict that it cannot be read (a 4xx answer).
LIST_RETRY_MAX_INTERVALS = 4
#: Longest pause a 429's ``Retry-After`` imposes on a watcher, in seconds (a bound on a server's word;
#: the API's own pauses are seconds long).
MAX_RATE_LIMIT_PAUSE_S = 600.0


class Step(enum.Enum):
    """What a round does after a page of the run list."""

    #: Read the next page.
    NEXT_PAGE = "next_page"
    #: Read the due runs still unseen one by one.
    READ_RUNS = "read_runs"
    #: Every due run was seen.
    DONE = "done"


class AfterListFailure(enum.Enum):
    """What a round does with its unseen due runs when a list read fails."""

    #: Leave them to the next round (the list is tried again then).
    WAIT = "wait"
    #: Read them one by one now.
    READ_RUNS = "read_runs"


@dataclass
class ListHealth:
    """What the run list answered lately, and so how the next round checks its runs.

    Times are the event loop's clock; ``interval`` is the watcher's tick (its triggers' shortest poll
    interval).

    :param failures: rounds in a row whose list read failed transiently (429s not counted).
    :param list_again_at: no round reads the list before this time (backoff, or a refusal's verdict).
    :param quiet_until: nothing is sent before this time (a 429's ``Retry-After``).
    :param rate_limits: 429 answers in a row (the pause after each is a backoff from one interval).
    """

    failures: int = 0
    list_again_at: float = -math.inf
    quiet_until: float = -math.inf
    rate_limits: int = 0

    def reads_list(self, now: float) -> bool:
        """Whether a round starting at ``now`` reads the list (or its due runs one by one)."""
        return now >= self.list_again_at

    def round_at(self, scheduled: float) -> float:
        """When a round scheduled for ``scheduled`` may start: not before a 429's pause is over."""
        return max(scheduled, self.quiet_until)

    def list_read(self) -> None:
        """A page of the list was read."""
        self.failures = 0
        self.list_again_at = -math.inf
        self.rate_limits = 0

    def run_read(self) -> None:
        """A run was read on its own."""
        self.rate_limits = 0

    def rate_limited(self, error: NoxusRateLimitedError, now: float, interval: float) -> None:
        """A request was answered 429: the watcher sends nothing for the server's ``Retry-After``,
        for at least one ``interval`` and the backoff a wait would take (from one interval, doubled
        with each 429 in a row, never under ``protocol.MIN_BACKOFF_S``: ``Retry-After: 0`` makes no hot
        loop), at most :data:`MAX_RATE_LIMIT_PAUSE_S`."""
        self.rate_limits += 1
        policy = RetryPolicy(backoff_initial=interval, backoff_max=max(MAX_RATE_LIMIT_PAUSE_S, interval))
        pause = max(interval, backoff_seconds(policy, self.rate_limits, error))
        self.quiet_until = max(self.quiet_until, now + pause)

    def list_failed(self, error: BaseException, now: float, interval: float) -> AfterListFailure:
        """A list read failed with ``error``: what the round does with its unseen runs.

        A 429 pauses the whole watcher (:meth:`rate_limited`) and the runs wait: reading them one by
        one would fan out exactly when the server asked to slow down. Other transient failures leave
        the runs to the next round, until :data:`LIST_FAILURES_BEFORE_PER_RUN_READS` rounds in a row
        failed; then the rounds read their runs one by one and the list is tried again after a
        backoff from one ``interval``, doubled, at most :data:`LIST_RETRY_MAX_INTERVALS` intervals.
        Any other error (a refused key, a 4xx) is the list's only: the runs are read one by one (each
        fails only on its own read) and the list is tried again after the longest backoff.
        """
        if isinstance(error, NoxusRateLimitedError):
            self.rate_limited(error, now, interval)
            return AfterListFailure.WAIT
        if not is_transient(error):
            self.failures = 0
            self.list_again_at = now + LIST_RETRY_MAX_INTERVALS * interval
            return AfterListFailure.READ_RUNS
        self.failures += 1
        beyond = self.failures - LIST_FAILURES_BEFORE_PER_RUN_READS
        if beyond < 0:
            return AfterListFailure.WAIT
        backoff = min(2 ** min(beyond, 16), LIST_RETRY_MAX_INTERVALS)
        self.list_again_at = now + backoff * interval
        return AfterListFailure.READ_RUNS


def page_budget(positions: Iterable[int | None], page_size: int) -> int:
    """Pages worth reading for due runs now at ``positions`` in the list (None: never seen there):
    enough for their number, and deeper only where the pages cost fewer requests than the per-run
    reads they spare."""
    positions = list(positions)
    least = math.ceil(len(positions) / page_size) + PAGE_MARGIN
    known_pages = sorted(position // page_size for position in positions if position is not None)

    def cost(pages: int) -> int:
        return pages + len(known_pages) - bisect.bisect_left(known_pages, pages)

    deeper = {page + 1 + PAGE_MARGIN for page in known_pages} - set(range(least + 1))
    return min([least, *deeper], key=lambda pages: (cost(pages), pages))


@dataclass
class PageWalk:
    """One round's walk down the run list, from its first page.

    Bounded by what the round needs: ``budget`` pages (:func:`page_budget`), plus one page per
    ``size`` runs the list grew by since its first page (the growth counted once, from the first page's
    ``total`` to the largest seen since, and never more pages than due runs are still unseen), or the
    rest of the list when it holds fewer pages than runs unseen; never beyond ``budget`` plus the due
    runs unseen after the first page (past that, reading them one by one costs less). A page that
    repeats the one before ends the walk.

    :param budget: pages worth reading, as the first page told (see :func:`page_budget`).
    :param needed: due runs unseen after the first page.
    :param first_total: the first page's ``total`` (None: not given).
    """

    budget: int
    needed: int
    first_total: int | None
    #: Pages read so far; after :attr:`Step.NEXT_PAGE`, the number of the page to read.
    pages_read: int = field(default=1, init=False)
    #: The largest ``total`` a page of the walk gave.
    largest_total: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.largest_total = self.first_total

    def after(self, page: RunPage, unseen: int, *, repeats: bool = False) -> Step:
        """What to do after ``page`` (the first one included), with ``unseen`` due runs not seen yet;
        ``repeats``: most of the page's runs were on the page before (the server ignores ``page``)."""
        if page.total is not None and (self.largest_total is None or page.total > self.largest_total):
            self.largest_total = page.total
        if unseen <= 0:
            return Step.DONE
        if page.last or repeats or page.page != self.pages_read:
            return Step.READ_RUNS  # the end of the list, or a server that ignores ``page``
        ceiling = self.budget + self.needed
        limit = self.budget + min(self._growth_pages(page.size), unseen)
        if page.pages is not None and page.pages - self.pages_read < unseen:
            limit = max(limit, page.pages)  # the rest of the list costs less than the runs unseen
        if self.pages_read < min(limit, ceiling):
            self.pages_read += 1
            return Step.NEXT_PAGE
        return Step.READ_RUNS

    def _growth_pages(self, size: int) -> int:
        if self.first_total is None or self.largest_total is None:
            return 0
        return -(-(self.largest_total - self.first_total) // max(size, 1))


__all__ = [
    "LIST_FAILURES_BEFORE_PER_RUN_READS",
    "LIST_RETRY_MAX_INTERVALS",
    "MAX_RATE_LIMIT_PAUSE_S",
    "PAGE_MARGIN",
    "PAGE_SIZE",
    "AfterListFailure",
    "ListHealth",
    "PageWalk",
    "Step",
    "page_budget",
]
