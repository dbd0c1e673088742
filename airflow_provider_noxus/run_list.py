"""A workflow's run list and run timestamps as the Noxus API returns them, read without trusting them.

``GET /v1/workflows/{id}/runs`` answers ``{"items": [...], "total": n, "page": p, "size": s, "pages": k}``,
newest run first. Everything that reads it (the shared status checks, the look-up of a run whose create
answer was lost, the event trigger) reads it through :func:`parse_run_page`: integers the server sends
are clamped (``total: 10**400`` is no number of runs), items that are not run objects of the workflow
asked for are dropped, and timestamps without a zone are UTC, whatever the worker's local time.

No I/O here; the transports fetch the page, this module says what it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_provider_noxus.exceptions import NoxusProtocolError

#: Largest count a list envelope may claim (runs, pages, a page number) before it is taken as no count.
MAX_LISTED_COUNT = 10**9
#: Largest page size the API serves (``size`` is 1..100).
MAX_PAGE_SIZE = 100


def _count(value: Any, *, least: int = 0) -> int | None:
    """A server integer as a count: an int (not a bool) from ``least`` to :data:`MAX_LISTED_COUNT`."""
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_LISTED_COUNT:
        return None
    return value


def parse_timestamp(value: Any) -> float | None:
    """An ISO 8601 timestamp from the server as epoch seconds; one without a zone is UTC. None when
    ``value`` is not such a timestamp."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def run_created_at(run: Mapping[str, Any]) -> float | None:
    """When the server says ``run`` was created (epoch seconds), or None."""
    return parse_timestamp(run.get("created_at"))


def run_finished_at(run: Mapping[str, Any]) -> float | None:
    """When the server says ``run`` ended (epoch seconds), or None while it runs or when it does not say."""
    return parse_timestamp(run.get("finished_at"))


@dataclass(frozen=True)
class RunPage:
    """One page of a workflow's run list, as far as it can be believed.

    :param items: the run objects of the page, newest first: mappings with a string ``id`` whose
        ``workflow_id``, when present, is the workflow asked for.
    :param dropped: items left out (not a run object, no id, another workflow's run).
    :param total: runs in the whole list, or None when the server gave no believable count.
    :param page: the page number the server says this is (the one asked for when it does not say).
    :param size: the page size the server used (the one asked for when it does not say).
    :param pages: pages in the whole list, or None when not given or not believable.
    """

    items: tuple[Mapping[str, Any], ...]
    dropped: int
    total: int | None
    page: int
    size: int
    pages: int | None

    @property
    def last(self) -> bool:
        """Whether the server says no page follows this one (an empty page is the last too)."""
        return not self.items or (self.pages is not None and self.page >= self.pages)


def parse_run_page(envelope: Any, *, workflow_id: str, page: int, size: int) -> RunPage:
    """Read one answer of ``GET /v1/workflows/{workflow_id}/runs?page=&size=``.

    :param envelope: the decoded JSON body.
    :param workflow_id: the workflow asked for.
    :param page: the page asked for.
    :param size: the page size asked for.
    :raises NoxusProtocolError: the answer is not a list envelope (no ``items`` list).
    """
    items = envelope.get("items") if isinstance(envelope, Mapping) else None
    if not isinstance(items, list):
        raise NoxusProtocolError(
            "The Noxus API answered the run list without an items list.", workflow_id=workflow_id
        )
    runs = tuple(
        item
        for item in items
        # JSON objects decode to dicts: the plain type check spares the Mapping ABC's slower one.
        if (type(item) is dict or isinstance(item, Mapping))
        and isinstance(item.get("id"), str)
        and item["id"]
        and item.get("workflow_id") in (None, workflow_id)
    )
    return RunPage(
        items=runs,
        dropped=len(items) - len(runs),
        total=_count(envelope.get("total")),
        page=_count(envelope.get("page"), least=1) or page,
        size=min(_count(envelope.get("size"), least=1) or size, MAX_PAGE_SIZE),
        pages=_count(envelope.get("pages")),
    )


__all__ = [
    "MAX_LISTED_COUNT",
    "RunPage",
    "parse_run_page",
    "parse_timestamp",
    "run_created_at",
    "run_finished_at",
]
