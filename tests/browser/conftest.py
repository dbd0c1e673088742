"""Fixtures for the UI tests: headless Chromium driven by Playwright, and an Airflow 3 api-server.

Chromium is Debian's ``/usr/bin/chromium`` (``bash scripts/browser-deps.sh`` installs it); Playwright
never downloads a browser here. When the browser or Playwright is missing, or Chromium cannot start,
the tests fail with a message that says what to install: a UI test never passes by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.airflow_deployment import AirflowDeployment

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Screenshots and browser logs of the UI tests (git-ignored).
ARTIFACTS_DIR = REPO_ROOT / "artifacts" / "browser"
CHROMIUM = os.environ.get("NOXUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
INSTALL_HINT = (
    "install Debian's chromium with `bash scripts/browser-deps.sh` and the Python package `playwright` "
    "(the provider's [test] extra); never `playwright install`, browsers cannot be downloaded here"
)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where the UI tests leave their screenshots."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS_DIR


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Headless Debian Chromium under Playwright for one module; fails loudly if it cannot start.

    Module scope, not session: Playwright's sync API keeps an asyncio loop running in the main
    thread while it is open, and the async tests that follow could not start their own.
    """
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        pytest.fail(f"the UI tests need Playwright ({error}): {INSTALL_HINT}", pytrace=False)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: {INSTALL_HINT}", pytrace=False)
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        except PlaywrightError as error:
            pytest.fail(f"Chromium at {CHROMIUM} did not start: {error}\n{INSTALL_HINT}", pytrace=False)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh browser page (own cookies and storage), 1280x1200 so that whole dialogs fit."""
    context = chromium.new_context(viewport={"width": 1280, "height": 1200})
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowDeployment]:
    """An Airflow 3 api-server (UI + REST API, everyone admin) with connection testing enabled."""
    try:
        airflow_version = version("apache-airflow")
    except PackageNotFoundError:
        pytest.fail("the UI tests need apache-airflow installed", pytrace=False)
    if int(airflow_version.split(".")[0]) < 3:
        pytest.fail(
            f"the UI tests drive Airflow 3's React UI; this is Airflow {airflow_version}: "
            "deselect them with -m 'not browser'",
            pytrace=False,
        )
    home = tmp_path_factory.mktemp("airflow-ui-home")
    dags_folder = home / "dags"
    dags_folder.mkdir()
    with AirflowDeployment(
        home, dags_folder, env={"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"}, components=("api-server",)
    ) as airflow:
        yield airflow
