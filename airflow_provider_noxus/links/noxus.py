"""NoxusRunLink: the "Noxus run" button of a task, pointing at the run in the Noxus app."""

from __future__ import annotations

from typing import Any

from airflow_provider_noxus._compat import BaseOperatorLink, XCom

#: XCom keys pushed by the operator before it waits.
XCOM_RUN_ID_KEY = "run_id"
XCOM_RUN_URL_KEY = "run_url"


class NoxusRunLink(BaseOperatorLink):
    """Link to the task's Noxus run, read from the ``run_url`` XCom (no connection is read)."""

    name = "Noxus run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        url = XCom.get_value(ti_key=ti_key, key=XCOM_RUN_URL_KEY)
        return url if isinstance(url, str) else ""
