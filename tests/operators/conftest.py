"""Fixtures of the operator tests: the emulator behind ``noxus_default``, with short retries."""

from __future__ import annotations

from typing import Any

import pytest
from support.noxus_tasks import use_fast_connection


@pytest.fixture
def emu(noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    use_fast_connection(monkeypatch, noxus_emulator)
    return noxus_emulator
