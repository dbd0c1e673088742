"""Files: upload and download, and file inputs as public URL, data URI and ``spot://`` id."""

from __future__ import annotations

import base64
import hashlib

import pytest

from airflow_provider_noxus.emulator import EmulatorServer
from airflow_provider_noxus.emulator.files import MAX_FILE_BYTES
from emulator.helpers import KEY_B, Api, LocalWebServer


def test_upload_then_download(api: Api) -> None:
    response = api.session.post(
        api.url("/v1/file"), files={"file": ("report.pdf", b"%PDF-1.4 body", "application/pdf")}
    )

    assert response.status_code == 200
    uploaded = response.json()
    assert set(uploaded) == {
        "id",
        "uri",
        "size",
        "group_id",
        "filename",
        "content_type",
        "source_type",
        "source_metadata",
        "created_at",
    }
    assert uploaded["uri"] == f"spot://{uploaded['id']}"
    assert (uploaded["filename"], uploaded["content_type"], uploaded["size"]) == (
        "report.pdf",
        "application/pdf",
        13.0,
    )
    download = api.session.get(api.url(f"/v1/file/{uploaded['id']}"))
    assert download.status_code == 200
    assert download.content == b"%PDF-1.4 body"
    assert download.headers["Content-Type"] == "application/pdf"


def test_upload_over_25_mb_is_a_413(api: Api) -> None:
    response = api.session.post(api.url("/v1/file"), files={"file": ("big.bin", b"x" * (MAX_FILE_BYTES + 1))})

    assert response.status_code == 413
    assert "25" in response.json()["detail"] or str(MAX_FILE_BYTES) in response.json()["detail"]


@pytest.mark.parametrize(
    "kwargs",
    [{"files": {"other": ("a.txt", b"a")}}, {"data": b"raw", "headers": {"Content-Type": "text/plain"}}],
)
def test_upload_without_a_file_part_is_a_422(api: Api, kwargs: dict) -> None:
    response = api.session.post(api.url("/v1/file"), **kwargs)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


def test_another_workspaces_file_is_a_404(api: Api) -> None:
    file_id = api.session.post(api.url("/v1/file"), files={"file": ("a.txt", b"a")}).json()["id"]

    response = api.session.get(api.url(f"/v1/file/{file_id}"), headers={"X-API-Key": KEY_B})

    assert response.status_code == 404


def test_spot_file_input(api: Api) -> None:
    uploaded = api.session.post(
        api.url("/v1/file"), files={"file": ("notes.txt", b"some notes", "text/plain")}
    ).json()

    final = api.wait_final(
        api.create_ok("file_info", {"document": {"uri": uploaded["uri"], "name": "notes.txt"}})
    )

    assert final["output"] == {
        "name": "notes.txt",
        "size": 10,
        "sha256": hashlib.sha256(b"some notes").hexdigest(),
        "content_type": "text/plain",
        "source": "spot",
    }


def test_unknown_spot_id_is_a_422_naming_the_input(api: Api) -> None:
    response = api.create("file_info", {"document": {"uri": "spot://nope", "name": "x"}})

    assert response.status_code == 422
    [issue] = response.json()["detail"]
    assert issue["loc"] == ["body", "input", "document"]
    assert "'document'" in issue["msg"]


def test_data_uri_input_is_decoded_and_echoed_as_its_stored_copy(api: Api) -> None:
    data = b"\x00\x01binary"
    uri = "data:application/octet-stream;base64," + base64.b64encode(data).decode()

    run = api.create_ok("file_info", {"document": {"uri": uri, "name": "blob.bin"}})
    final = api.wait_final(run)

    assert final["output"]["source"] == "data_uri"
    assert final["output"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert final["output"]["content_type"] == "application/octet-stream"
    assert run["input"]["document"]["uri"].startswith("spot://")


@pytest.mark.parametrize(
    "uri",
    [
        "data:text/plain;base64,@@@not-base64",
        "data:text/plain;base64",
        "data:text/plain;base64," + "A" * ((MAX_FILE_BYTES // 3 + 2) * 4),
        "ftp://example.com/file.txt",
    ],
)
def test_bad_file_uris_are_a_422_naming_the_input(api: Api, uri: str) -> None:
    response = api.create("file_info", {"document": {"uri": uri, "name": "x"}})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "input", "document"]


def test_file_input_that_is_not_an_object_is_a_422(api: Api) -> None:
    response = api.create("file_info", {"document": "https://example.com/a.pdf"})

    assert response.status_code == 422
    assert "file object" in response.json()["detail"][0]["msg"]


def test_url_input_is_downloaded(api: Api, web_server: LocalWebServer) -> None:
    final = api.wait_final(api.create_ok("file_info", {"document": {"uri": f"{web_server.url}/file.txt"}}))

    assert final["output"]["source"] == "url"
    assert final["output"]["name"] == "file.txt"
    assert final["output"]["sha256"] == hashlib.sha256(web_server.body).hexdigest()
    assert final["output"]["content_type"] == "text/plain"


def test_url_input_follows_redirects(api: Api, web_server: LocalWebServer) -> None:
    final = api.wait_final(api.create_ok("file_info", {"document": {"uri": f"{web_server.url}/redirect"}}))

    assert final["output"]["size"] == len(web_server.body)


@pytest.mark.parametrize(
    "uri",
    [
        "http://10.1.2.3/a.pdf",
        "http://192.168.0.10/a.pdf",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fd00:ec2::254]/latest/",
        "http://[::ffff:10.0.0.1]/a.pdf",
        "http://0.0.0.0/a.pdf",
    ],
)
def test_private_and_metadata_urls_are_refused(api: Api, uri: str) -> None:
    response = api.create("file_info", {"document": {"uri": uri, "name": "x"}})

    assert response.status_code == 422
    [issue] = response.json()["detail"]
    assert issue["loc"] == ["body", "input", "document"]
    assert "refused" in issue["msg"]


def test_loopback_urls_are_refused_without_the_switch(web_server: LocalWebServer) -> None:
    with EmulatorServer() as strict:
        response = __import__("requests").post(
            f"{strict.url}/v1/workflows/{strict.control.workflow_id('file_info')}/runs",
            json={"input": {"document": {"uri": f"{web_server.url}/file.txt"}}},
            headers={"X-API-Key": strict.api_key},
        )

    assert response.status_code == 422
    assert "loopback" in response.json()["detail"][0]["msg"]


def test_url_that_answers_an_error_is_a_422(api: Api, web_server: LocalWebServer) -> None:
    response = api.create("file_info", {"document": {"uri": "http://127.0.0.1:9/nothing-listens-here"}})

    assert response.status_code == 422
    assert "failed" in response.json()["detail"][0]["msg"]
