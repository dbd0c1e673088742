"""Webhook delivery: POST the run object to ``callback_url`` when the run ends, up to 3 tries."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from airflow_provider_noxus.emulator.files import RefusedInput, check_url

MAX_ATTEMPTS = 3
#: Pause before the 2nd and 3rd tries.
RETRY_PAUSES = (0.2, 0.5)
ATTEMPT_TIMEOUT = aiohttp.ClientTimeout(total=10)


async def deliver_webhook(
    session: aiohttp.ClientSession, url: str, payload: dict[str, Any], allow_loopback: bool
) -> dict[str, Any]:
    """POST ``payload`` as JSON to ``url`` until a 2xx answer, at most :data:`MAX_ATTEMPTS` times.

    :param session: the emulator's HTTP client.
    :param url: the run's ``callback_url`` (checked again: its host may resolve elsewhere now).
    :param payload: the run object.
    :param allow_loopback: let loopback addresses through (tests).
    :return: the delivery record ``{"url", "run_id", "status", "attempts", "ok"}``.
    """
    record: dict[str, Any] = {"url": url, "run_id": payload["id"], "status": None, "attempts": 0, "ok": False}
    for attempt in range(MAX_ATTEMPTS):
        if attempt:
            await asyncio.sleep(RETRY_PAUSES[attempt - 1])
        record["attempts"] = attempt + 1
        try:
            await check_url(url, allow_loopback)
            async with session.post(url, json=payload, timeout=ATTEMPT_TIMEOUT) as response:
                record["status"] = response.status
                if 200 <= response.status < 300:
                    record["ok"] = True
                    return record
        except RefusedInput:
            record["status"] = "refused"
            return record
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            record["status"] = type(error).__name__
    return record
