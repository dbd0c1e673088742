"""Waiting in tests for something that happens elsewhere (a server, a triggerer, a webhook)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_until(
    condition: Callable[[], Any], timeout: float = 10.0, what: str = "the condition", interval: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); fail the test after ``timeout`` s.

    :param what: named in the failure message.
    :param interval: seconds between two polls.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
