"""Statuses of a Noxus run, and which of them are final."""

from __future__ import annotations

from enum import Enum
from typing import Any


class NoxusRunStatus(str, Enum):
    """Statuses of a Noxus run (API reference, section 5)."""

    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_HUMAN_FEEDBACK = "awaiting_human_feedback"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"

    @classmethod
    def parse(cls, value: Any) -> NoxusRunStatus | None:
        """The status named by ``value``, or None for a status this provider does not know."""
        try:
            return cls(value)
        except ValueError:
            return None

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({NoxusRunStatus.COMPLETED, NoxusRunStatus.FAILED, NoxusRunStatus.STOPPED})
FAILURE_STATUSES = frozenset({NoxusRunStatus.FAILED, NoxusRunStatus.STOPPED})
