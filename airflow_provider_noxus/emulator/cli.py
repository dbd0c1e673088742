"""Command line of the emulator: ``noxus-emulator`` / ``python -m airflow_provider_noxus.emulator``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from airflow_provider_noxus.emulator.app import DEFAULT_ADMIN_TOKEN, DEMO_API_KEY, EmulatorSettings
from airflow_provider_noxus.emulator.faults import FAULT_SPEC_HELP, parse_fault_spec
from airflow_provider_noxus.emulator.server import start_emulator
from airflow_provider_noxus.emulator.workflows import load_workflows_file

API_KEYS_ENV = "NOXUS_EMULATOR_API_KEYS"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its ``--help`` documents every option)."""
    parser = argparse.ArgumentParser(
        prog="noxus-emulator",
        description="Serve an emulator of the Noxus workflow-run API for tests and demos.",
        epilog=FAULT_SPEC_HELP + "\nWorkflows file format: see the docstring of "
        "airflow_provider_noxus.emulator.workflows (JSON, or YAML with PyYAML).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default 8765; 0 = any free)")
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        help=f"accepted X-API-Key, one workspace each; repeatable; also ${API_KEYS_ENV} (comma separated). "
        f"With none, the demo key {DEMO_API_KEY!r}",
    )
    parser.add_argument(
        "--admin-token", default=DEFAULT_ADMIN_TOKEN, help="token of the /_emulator control API"
    )
    parser.add_argument(
        "--allow-loopback-urls",
        action="store_true",
        help="let file-input URLs and webhooks use loopback addresses (other private ones stay refused)",
    )
    parser.add_argument(
        "--sync-hold-seconds",
        type=float,
        default=120.0,
        help="sync create holds this long, then 504 (default 120)",
    )
    parser.add_argument("--workflows", help="JSON/YAML file of workflows to add to the built-ins")
    parser.add_argument(
        "--feedback-delay", type=float, default=1.0, help="default human-review pause in seconds (default 1)"
    )
    parser.add_argument(
        "--keep-alive-seconds",
        type=float,
        default=15.0,
        help="idle time between SSE keep-alive comments (default 15)",
    )
    parser.add_argument(
        "--fault", action="append", default=[], help="fault active from the start (see below)"
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    """Settings from parsed arguments and ``$NOXUS_EMULATOR_API_KEYS``; ``ValueError`` if one is bad."""
    env_keys = [key.strip() for key in os.environ.get(API_KEYS_ENV, "").split(",") if key.strip()]
    return EmulatorSettings(
        api_keys=list(args.api_key) + env_keys,
        admin_token=args.admin_token,
        allow_loopback_urls=args.allow_loopback_urls,
        sync_hold_seconds=args.sync_hold_seconds,
        feedback_delay=args.feedback_delay,
        keep_alive_seconds=args.keep_alive_seconds,
        workflows=load_workflows_file(args.workflows) if args.workflows else [],
        faults=[parse_fault_spec(spec) for spec in args.fault],
    )


async def serve(settings: EmulatorSettings, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    runner, bound_port = await start_emulator(settings, host, port)
    if settings.api_keys:
        keys = f"{len(settings.effective_api_keys)} configured API key(s)"
    else:
        keys = f"demo API key: {DEMO_API_KEY}"
    print(f"Noxus API emulator on http://{host}:{bound_port} ({keys})", flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stopped.set)
    try:
        await stopped.wait()
    finally:
        await runner.cleanup()


def run_in_fast_loop(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` in uvloop when it is installed, else in asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
        return
    uvloop.run(coroutine)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``noxus-emulator``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    try:
        run_in_fast_loop(serve(settings, args.host, args.port))
    except OSError as error:
        print(f"noxus-emulator: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
        sys.exit(1)
