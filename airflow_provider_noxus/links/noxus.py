"""NoxusRunLink: the "Noxus run" button of a task, pointing at the run in the Noxus app."""

from __future__ import annotations

from typing import Any

from airflow_provider_noxus._compat import BaseOperatorLink, XCom

#: XCom keys pushed by the operator before it waits.
XCOM_RUN_ID_KEY = "run_id"
XCOM_RUN_URL_KEY = "run_url"


#: Attribute in which the task that found or made the run keeps its URL for this link.
RUN_URL_ATTRIBUTE = "noxus_run_url"


class NoxusRunLink(BaseOperatorLink):
    """Link to the task's Noxus run (no connection is read).

    On the worker, Airflow asks for the link right after the task ran (or deferred) and stores it: the
    task's own copy of the URL is used then, sparing a read of the ``run_url`` XCom through the API
    server. Anywhere else (Airflow 2's webserver, a resumed task that did not find the run) the XCom is
    read.
    """

    name = "Noxus run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        url = getattr(operator, RUN_URL_ATTRIBUTE, None)
        if not isinstance(url, str):
            url = XCom.get_value(ti_key=ti_key, key=XCOM_RUN_URL_KEY)
        return url if isinstance(url, str) else ""


def run_link_xcoms(run_id: str, run_url: str) -> dict[str, str]:
    """The XComs a task that never ran on a worker (a sensor started in the triggerer) ends with, for
    its run: ``run_id``, ``run_url`` and, on Airflow 3 (which stores each link as an XCom on the worker,
    after the task ran), the "Noxus run" link itself."""
    xcoms = {XCOM_RUN_ID_KEY: run_id, XCOM_RUN_URL_KEY: run_url}
    link_key = getattr(NoxusRunLink(), "xcom_key", None)  # Airflow 2 builds links in its webserver
    if isinstance(link_key, str):
        xcoms[link_key] = run_url
    return xcoms
