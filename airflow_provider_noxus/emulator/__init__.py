"""An emulator of the Noxus workflow-run API, for tests, demos and benchmarks.

Written from the API reference alone (it imports neither Airflow nor the rest of this provider), on
aiohttp's server in one asyncio loop. Start it with ``noxus-emulator --port 8765``, in-process with
:class:`EmulatorServer`, or through the pytest fixtures of :mod:`.pytest_plugin`. Extra workflows come
from a JSON/YAML file whose format :mod:`.workflows` documents; faults, counters and reset from the
``/_emulator`` control API (:class:`EmulatorControl`).
"""

from __future__ import annotations

from airflow_provider_noxus.emulator.app import DEFAULT_ADMIN_TOKEN, DEMO_API_KEY, EmulatorSettings
from airflow_provider_noxus.emulator.server import EmulatorControl, EmulatorServer

__all__ = ["DEFAULT_ADMIN_TOKEN", "DEMO_API_KEY", "EmulatorControl", "EmulatorServer", "EmulatorSettings"]
