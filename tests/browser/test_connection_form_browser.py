"""The Noxus connection in Airflow 3's UI, as a person sees it in a real (headless) browser.

Adds a Noxus connection through the connection form, checks what the form shows, saves it, presses
"Test Connection" against the emulator (success), then edits in a wrong API key (a clear failure).

Airflow <= 3.3.2's "Test Connection" button posts ``port: 0`` (JavaScript's ``Number(null)``) for a
connection without a port, and the API then refuses to reuse the stored, masked API key: the person sees
"Test Connection Failed: Bad Request" for every port-less connection, Noxus included
(apache/airflow#73298, fixed in the API after 3.3.2). The test checks that this is still what 3.3.2
does, then sends ``port: null`` instead, which is the request the fixed API accepts.

Screenshots go to ``artifacts/browser/``; with ``NOXUS_UPDATE_DOCS_IMAGES=1`` the good ones are also
copied to ``docs/images/`` for the README.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from packaging.version import Version

from airflow_provider_noxus.get_provider_info import get_provider_info

try:
    from playwright.sync_api import expect
except ImportError:  # the `chromium` fixture fails the test and says what to install
    expect = None
else:
    expect.set_options(timeout=20_000)

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page, Route
    from support.airflow_deployment import AirflowDeployment

    from airflow_provider_noxus.emulator.server import EmulatorServer

pytestmark = pytest.mark.browser

CONN_ID = "noxus_ui"
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
NOXUS_CONNECTION_TYPE = next(
    entry for entry in get_provider_info()["connection-types"] if entry["connection-type"] == "noxus"
)
EXTRA_FIELDS = NOXUS_CONNECTION_TYPE["conn-fields"]
#: apache/airflow#73298: the UI's Test button fails with "Bad Request" on connections without a port.
AIRFLOW_TEST_BUTTON_PORT_BUG = Version(version("apache-airflow")) <= Version("3.3.2")


def _publish(screenshot: Path, docs_name: str) -> None:
    """Copy a screenshot to docs/images when asked to (kept out of ordinary runs: they must not dirty git)."""
    if os.environ.get("NOXUS_UPDATE_DOCS_IMAGES") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, DOCS_IMAGES / docs_name)


def _dialog(page: Page, heading: str) -> Locator:
    """The open dialog whose heading is ``heading`` (Airflow's dialogs have no accessible name)."""
    dialog = page.get_by_role("dialog").filter(has=page.get_by_role("heading", name=heading, exact=True))
    expect(dialog).to_be_visible()
    return dialog


def _open_add_dialog(page: Page, airflow: AirflowDeployment) -> Locator:
    page.goto(f"{airflow.api_url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    return _dialog(page, "Add Connection")


def _choose_connection_type(page: Page, dialog: Locator, hook_name: str) -> None:
    combobox = dialog.get_by_role("combobox", name="Connection Type")
    combobox.click()
    combobox.fill(hook_name)
    page.get_by_role("option", name=hook_name, exact=True).click()


def _section(dialog: Locator, title: str) -> Locator:
    """An accordion section of the form (opened if closed)."""
    trigger = dialog.get_by_role("button", name=title, exact=True)
    if trigger.get_attribute("aria-expanded") != "true":
        trigger.click()
    # Found through the trigger: a section's own label breaks when its id holds a space ("Extra Fields").
    region = dialog.locator(f"[id='{trigger.get_attribute('aria-controls')}']")
    expect(region).to_be_visible()
    return region


def _extra_field(extras: Locator, name: str) -> tuple[Locator, Locator]:
    """One ``conn-fields`` extra's form field and its input, found by name (Airflow 3.3 does not tie
    a text extra's label to its input)."""
    selector = f"input[name='element_{name}']"
    field = extras.locator("[data-scope=field][data-part=root]").filter(has=extras.page.locator(selector))
    control = field.locator(selector)
    expect(control).to_be_visible()
    return field, control


def _row(page: Page, conn_id: str) -> Locator:
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=conn_id, exact=True))


def _press_test(page: Page, row: Locator, screenshot: Path) -> tuple[str, str, Locator]:
    """Press the row's "Test Connection"; screenshot the page with the result; return the result's
    title, message and notice."""
    toasts = page.get_by_role("status")
    expect(toasts).to_have_count(0)  # earlier notices gone (they fade after 5 s): one result on screen
    row.get_by_role("button", name="Test Connection").click()
    toast = toasts.filter(has_text=re.compile(r"^Test Connection (Successful|Failed)"))
    expect(toast).to_be_visible()
    toast.evaluate("toast => Promise.all(toast.getAnimations().map(animation => animation.finished))")
    page.screenshot(path=screenshot)
    title = toast.locator("[data-part=title]").inner_text()
    return title, toast.locator("[data-part=description]").inner_text(), toast


def _send_unset_port_as_null(route: Route) -> None:
    """Rewrite the Test button's ``port: 0`` (from ``Number(null)``) to ``null``, as Airflow meant it."""
    body = route.request.post_data_json
    if body.get("port") == 0:
        body["port"] = None
    route.continue_(post_data=json.dumps(body))


def test_noxus_connection_form_save_and_test(
    page: Page,
    airflow_ui: AirflowDeployment,
    noxus_emulator: EmulatorServer,
    artifacts_dir: Path,
) -> None:
    behaviour = NOXUS_CONNECTION_TYPE["ui-field-behaviour"]
    dialog = _open_add_dialog(page, airflow_ui)
    dialog.get_by_label("Connection ID").fill(CONN_ID)
    _choose_connection_type(page, dialog, NOXUS_CONNECTION_TYPE["hook-name"])

    # Standard fields: only Description, Base URL and the API key; no Host/Login/Schema/Port/Password/Extra.
    standard = _section(dialog, "Standard Fields")
    visible_labels = [text.strip() for text in standard.locator("label:visible").all_inner_texts()]
    assert visible_labels == ["Description", "Base URL", "API key"]
    base_url = standard.get_by_label("Base URL", exact=True)
    api_key = standard.get_by_label("API key", exact=True)
    expect(base_url).to_have_attribute("placeholder", behaviour["placeholders"]["host"])
    expect(api_key).to_have_attribute("placeholder", behaviour["placeholders"]["password"])
    expect(api_key).to_have_attribute("type", "password")

    # Extras: each its own field, with its label, help text and default (not raw JSON).
    extras = _section(dialog, "Extra Fields")
    expect(standard).to_be_hidden()
    for name, field in EXTRA_FIELDS.items():
        field_root, control = _extra_field(extras, name)
        expect(field_root.locator("[data-part=label]")).to_have_text(field["label"])
        expect(field_root.locator("[data-part=helper-text]")).to_have_text(field["description"])
        default = field["schema"].get("default")
        if isinstance(default, bool):
            (expect(control).to_be_checked if default else expect(control).not_to_be_checked)()
        else:
            expect(control).to_have_value("" if default is None else str(default))
    _extra_field(extras, "timeout")[1].fill("12")
    extras_shot = artifacts_dir / "connection-form-extras.png"
    dialog.screenshot(path=extras_shot)
    _publish(extras_shot, "connection-form-extras.png")
    # The raw JSON editor (always present in Airflow 3.3's form) stays folded away.
    expect(dialog.get_by_role("button", name="Extra Fields JSON", exact=True)).to_have_attribute(
        "aria-expanded", "false"
    )

    standard = _section(dialog, "Standard Fields")
    standard.get_by_label("Description").fill("Noxus emulator (UI test)")
    base_url.fill(noxus_emulator.url)
    api_key.fill(noxus_emulator.api_key)
    expect(api_key).to_have_attribute("type", "password")
    form_shot = artifacts_dir / "connection-form-filled.png"
    dialog.screenshot(path=form_shot)
    _publish(form_shot, "connection-form.png")

    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    row = _row(page, CONN_ID)
    expect(row).to_contain_text("noxus")
    expect(row).to_contain_text(noxus_emulator.url)
    saved = airflow_ui.api("GET", f"/api/v2/connections/{CONN_ID}")
    assert (saved["conn_type"], saved["host"], saved["password"]) == ("noxus", noxus_emulator.url, "***")
    defaults = {name: field["schema"].get("default") for name, field in EXTRA_FIELDS.items()}
    assert json.loads(saved["extra"]) == {**defaults, "timeout": 12}

    if AIRFLOW_TEST_BUTTON_PORT_BUG:
        bug_shot = artifacts_dir / "connection-test-airflow-port-bug.png"
        title, message, _ = _press_test(page, row, bug_shot)
        assert (title, message) == ("Test Connection Failed", "Bad Request"), (
            "Airflow's Test button no longer fails on port-less connections: drop the port work-around"
        )
        page.route("**/api/v2/connections/test", _send_unset_port_as_null)

    # Test: the api-server's hook reaches the emulator with the saved key.
    success_shot = artifacts_dir / "connection-test-success.png"
    title, message, toast = _press_test(page, row, success_shot)
    assert title == "Test Connection Successful", f"{title}: {message}"
    assert noxus_emulator.url in message
    assert noxus_emulator.api_key not in message
    toast_shot = artifacts_dir / "connection-test-success-notice.png"
    toast.screenshot(path=toast_shot)
    _publish(toast_shot, "connection-test-success.png")

    # A wrong key: a clear failure that does not echo the key.
    wrong_key = "not-a-valid-noxus-key"
    row.get_by_role("button", name="Edit Connection").click()
    edit = _dialog(page, "Edit Connection")
    edit_key = _section(edit, "Standard Fields").get_by_label("API key", exact=True)
    expect(edit_key).to_have_attribute("type", "password")
    edit_key.fill(wrong_key)
    edit.get_by_role("button", name="Save").click()
    expect(edit).to_be_hidden()
    title, message, _ = _press_test(page, row, artifacts_dir / "connection-test-failure.png")
    assert title == "Test Connection Failed", f"{title}: {message}"
    assert "API key" in message and noxus_emulator.url in message, message
    assert wrong_key not in message
    assert noxus_emulator.control.counters()["requests"]["me"] == {"200": 1, "401": 1}
