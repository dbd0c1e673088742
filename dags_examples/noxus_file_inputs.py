"""Give a file to a Noxus workflow three ways: a public URL, a local file, an uploaded ``spot://`` file.

Recipe "file inputs": a File input takes ``NoxusFile`` values inside ``inputs``; the operator turns
each into the ``{"uri", "name"}`` object the API expects when the task starts (never at parse time):

- ``NoxusFile.from_url(url)``: the Noxus server downloads the file. It must be public: the server
  refuses private and loopback addresses, and so does the operator before sending (set
  ``NOXUS_ALLOW_PRIVATE_FILE_URLS=1`` on the worker only to test against a local file server).
- ``NoxusFile.from_path(path)``: a file on the worker, sent inline (larger files are uploaded first).
- ``NoxusFile.from_spot(uri)``: a file uploaded earlier with ``NoxusHook.upload_file``, reused by URI.

The default workflow is the emulator's ``file_info``, which reports the name, size and SHA-256 of
what it received, so the three results can be compared.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import Param, dag, task

from airflow_provider_noxus.files import NoxusFile
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.operators.noxus import NoxusRunOperator

REPORT = Path(__file__).parent / "data" / "quarterly_report.txt"


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["noxus", "example"],
    doc_md=__doc__,
    # Retries absorb transient failures; a retried Noxus task reattaches to the run it started.
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
    params={
        "workflow_id": Param("d96abce2-0792-5d95-92ac-c5409382f098", type="string"),
        "document_url": Param("https://www.rfc-editor.org/rfc/rfc9110.txt", type="string"),
    },
)
def noxus_file_inputs() -> None:
    from_url = NoxusRunOperator(
        task_id="from_url",
        workflow_id="{{ params.workflow_id }}",
        inputs={"document": NoxusFile.from_url("{{ params.document_url }}")},
    )
    from_path = NoxusRunOperator(
        task_id="from_path",
        workflow_id="{{ params.workflow_id }}",
        inputs={"document": NoxusFile.from_path(REPORT)},
    )

    @task
    def upload_report() -> str:
        """Upload once; the returned ``spot://`` URI can feed any number of runs."""
        uploaded = NoxusHook("noxus_default").upload_file(REPORT, filename=REPORT.name)
        return str(uploaded["uri"])

    from_spot = NoxusRunOperator(
        task_id="from_spot",
        workflow_id="{{ params.workflow_id }}",
        inputs={"document": NoxusFile.from_spot("{{ ti.xcom_pull(task_ids='upload_report') }}")},
    )

    @task
    def compare(url_info: dict, path_info: dict, spot_info: dict) -> dict:
        """The local file and its upload are the same bytes, whatever route they took."""
        for route, info in (("url", url_info), ("path", path_info), ("spot", spot_info)):
            print(f"{route:>4}: {info['name']}, {info['size']} bytes, sha256 {info['sha256'][:12]}")
        if path_info["sha256"] != spot_info["sha256"]:
            raise ValueError("The inline and uploaded copies of the report differ.")
        return {"url": url_info["size"], "path": path_info["size"], "spot": spot_info["size"]}

    upload_report() >> from_spot
    compare(from_url.output, from_path.output, from_spot.output)


noxus_file_inputs()
