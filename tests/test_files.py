"""File inputs: every shape reaches the emulator's ``file_info`` workflow; bad inputs fail early."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.loopback import serving
from support.noxus_tasks import make_context, run_task, use_fast_connection

from airflow_provider_noxus import files
from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_noxus.exceptions import NoxusFileInputError
from airflow_provider_noxus.files import NoxusFile, check_public_url, resolve_file_inputs
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.operators.noxus import NoxusRunOperator

CONTENT = b"%PDF-1.4 a small document\n" * 10
DIGEST = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
def emu(noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    use_fast_connection(monkeypatch, noxus_emulator)
    return noxus_emulator


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server for ``report.pdf`` (stopped after the test)."""
    (tmp_path / "report.pdf").write_bytes(CONTENT)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler) as url:
        yield f"{url}/report.pdf"


def run_file_info(emu: Any, document: NoxusFile, **kwargs: Any) -> dict[str, Any]:
    task = NoxusRunOperator(
        task_id="file_info",
        workflow_id=emu.control.workflow_id("file_info"),
        inputs={"document": document},
        poll_interval=0.05,
        **kwargs,
    )
    return run_task(task, make_context())


def test_local_path_is_sent_inline(emu: Any, tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(CONTENT)
    info = run_file_info(emu, NoxusFile.from_path(path))
    assert (info["source"], info["name"], info["sha256"]) == ("data_uri", "report.pdf", DIGEST)
    assert info["content_type"] == "application/pdf"


def test_bytes_are_sent_inline_under_their_name(emu: Any) -> None:
    info = run_file_info(emu, NoxusFile.from_bytes(CONTENT, name="notes.txt"))
    assert (info["source"], info["name"], info["sha256"]) == ("data_uri", "notes.txt", DIGEST)


def test_large_file_is_uploaded_and_sent_as_spot(
    emu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "MAX_INLINE_FILE_BYTES", 100)
    path = tmp_path / "big.pdf"
    path.write_bytes(CONTENT)
    info = run_file_info(emu, NoxusFile.from_path(path))
    assert (info["source"], info["sha256"]) == ("spot", DIGEST)
    assert emu.control.counters()["requests"]["upload_file"] == {"200": 1}


def test_spot_id_is_passed_through(emu: Any) -> None:
    uploaded = NoxusHook().upload_file(CONTENT, filename="kept.pdf")
    info = run_file_info(emu, NoxusFile.from_spot(uploaded["uri"]))
    assert (info["source"], info["sha256"]) == ("spot", DIGEST)
    bare = NoxusFile.from_spot(uploaded["id"], name="kept.pdf")
    assert run_file_info(emu, bare)["sha256"] == DIGEST


def test_url_is_downloaded_by_the_server(emu: Any, file_server: str) -> None:
    info = run_file_info(emu, NoxusFile.from_url(file_server), allow_private_file_urls=True)
    assert (info["source"], info["name"], info["sha256"]) == ("url", "report.pdf", DIGEST)


def test_private_url_is_refused_at_task_start_naming_the_input(emu: Any, file_server: str) -> None:
    with pytest.raises(NoxusFileInputError, match=r"'document'.*127\.0\.0\.1"):
        run_file_info(emu, NoxusFile.from_url(file_server))
    assert emu.control.counters()["runs_created_total"] == 0


def test_env_var_allows_private_urls(emu: Any, file_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(files.ALLOW_PRIVATE_URLS_ENV, "1")
    assert run_file_info(emu, NoxusFile.from_url(file_server))["source"] == "url"


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/x.pdf",
        "http://10.1.2.3/x.pdf",
        "http://192.168.0.1/x.pdf",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[::1]/x.pdf",
        "http://[fe80::1]/x.pdf",
        "file:///etc/passwd",
        # Read as 127.0.0.1 by WHATWG parsers, as example.com by urllib.
        "http://127.0.0.1\\@example.com/",
        "http://127.0.0.1 @example.com/",
        # IPv4 inside IPv6: NAT64, mapped, 6to4 of the metadata address.
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[2002:a9fe:a9fe::1]/",
        # A zone id: getaddrinfo does not resolve it, it is still link-local.
        "http://[fe80::1%25eth0]/x.pdf",
        "http://example.com:99999/x.pdf",
    ],
)
def test_non_public_urls_are_refused(url: str) -> None:
    with pytest.raises(NoxusFileInputError, match="'doc'"):
        check_public_url(url, input_name="doc")


def test_public_address_is_accepted() -> None:
    check_public_url("https://93.184.215.14/report.pdf", input_name="doc")


def test_missing_file_is_refused_at_task_start_naming_the_input(emu: Any, tmp_path: Path) -> None:
    with pytest.raises(NoxusFileInputError, match=r"'document'.*missing\.pdf"):
        run_file_info(emu, NoxusFile.from_path(tmp_path / "missing.pdf"))
    assert emu.control.counters()["runs_created_total"] == 0


def test_file_over_the_server_cap_names_the_input(emu: Any, tmp_path: Path) -> None:
    path = tmp_path / "huge.bin"
    with path.open("wb") as handle:
        handle.truncate(26 * 1024 * 1024)
    with pytest.raises(NoxusFileInputError, match=r"'document'.*huge\.bin.*upload cap"):
        run_file_info(emu, NoxusFile.from_path(path))
    assert emu.control.counters()["requests"].get("upload_file") is None


@pytest.mark.skipif(not Path("/proc/self/pagemap").exists(), reason="needs Linux /proc")
def test_a_file_whose_size_reads_as_zero_is_read_under_the_cap() -> None:
    """/proc/self/pagemap says 0 bytes and reads as hundreds of gigabytes: never read in full."""
    pagemap = Path("/proc/self/pagemap")
    assert pagemap.stat().st_size == 0
    outcome: list[BaseException] = []

    def resolve() -> None:
        try:
            # The hook is never used: a file over the cap is refused before any upload.
            resolve_file_inputs({"document": NoxusFile.from_path(pagemap)}, hook=NoxusHook("unused"))
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the file was read without a bound"
    assert isinstance(outcome[0], NoxusFileInputError)
    assert "upload cap" in str(outcome[0]) and "'document'" in str(outcome[0])


def test_a_small_proc_file_is_sent_with_its_real_content(emu: Any) -> None:
    info = run_file_info(emu, NoxusFile.from_path("/proc/self/cmdline", name="cmdline.txt"))
    assert info["size"] > 0


def test_nested_files_are_resolved_with_their_place_in_errors(tmp_path: Path) -> None:
    inputs = {
        "docs": [NoxusFile.from_bytes(b"a", name="a.txt"), {"inner": NoxusFile.from_path(tmp_path / "no")}]
    }
    with pytest.raises(NoxusFileInputError, match=r"docs\[1\]\.inner"):
        resolve_file_inputs(inputs, hook=NoxusHook())
    resolved = resolve_file_inputs({"docs": [inputs["docs"][0]], "n": 1}, hook=NoxusHook())
    assert resolved == {"docs": [{"uri": "data:text/plain;base64,YQ==", "name": "a.txt"}], "n": 1}


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: NoxusFile.from_url("ftp://example.org/a.pdf"), ValueError),
        (lambda: NoxusFile.from_bytes("text", name="a.txt"), TypeError),
        (lambda: NoxusFile.from_spot(""), ValueError),
    ],
)
def test_bad_file_values_fail_at_parse(build: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build()


def test_templated_values_are_checked_after_rendering(emu: Any) -> None:
    inputs = {
        "spot": NoxusFile.from_spot("{{ file_id }}"),
        "url": NoxusFile.from_url("{{ url }}"),
    }
    task = NoxusRunOperator(task_id="t", workflow_id="wf", inputs=inputs)
    task.render_template_fields({"file_id": "abc123", "url": "gopher://example.org/a"})  # type: ignore[arg-type]
    assert (
        resolve_file_inputs({"spot": task.inputs["spot"]}, hook=NoxusHook())["spot"]["uri"] == "spot://abc123"
    )
    with pytest.raises(NoxusFileInputError, match=r"'url'.*not an http"):
        resolve_file_inputs(task.inputs, hook=NoxusHook(), allow_private_urls=True)


def test_path_is_templated_and_not_checked_at_parse() -> None:
    task = NoxusRunOperator(
        task_id="t", workflow_id="wf", inputs={"document": NoxusFile.from_path("/data/{{ ds }}.pdf")}
    )
    task.render_template_fields({"ds": "2026-11-28"})  # type: ignore[arg-type]
    assert task.inputs["document"] == NoxusFile.from_path("/data/2026-11-28.pdf")


def test_dag_with_file_inputs_serializes() -> None:
    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk import DAG
        from airflow.serialization.serialized_objects import DagSerialization as Serializer
    else:
        from airflow.models.dag import DAG  # type: ignore[assignment]
        from airflow.serialization.serialized_objects import SerializedDAG as Serializer  # type: ignore[no-redef]

    with DAG(dag_id="noxus_files", schedule=None) as dag:
        NoxusRunOperator(
            task_id="t",
            workflow_id="wf",
            inputs={
                "document": NoxusFile.from_path("/data/report.pdf"),
                "blob": NoxusFile.from_bytes(b"x" * 5000, name="blob.bin"),
                "urls": [NoxusFile.from_url("https://example.org/a.pdf")],
            },
        )
    data = Serializer.to_dict(dag)
    task = Serializer.from_dict(data).get_task("t")
    text = str(data)
    assert "/data/report.pdf" in text and "<5000 bytes>" in text and "https://example.org/a.pdf" in text
    assert "x" * 100 not in text
    assert task.task_id == "t"


@pytest.mark.parametrize(
    ("template", "rendered", "message"),
    [
        ("{{ url }}", "file_server", r"'document'.*127\.0\.0\.1.*non-public"),
        ("{{ url }}", "http://metadata.google.internal/computeMetadata/v1/", r"'document'.*metadata host"),
        ("{{ url }}", "file:///etc/passwd", r"'document'.*not an http"),
        ("{{ path }}", "missing", r"'document'.*missing\.pdf.*does not exist"),
    ],
)
def test_a_templated_input_is_checked_once_rendered_before_anything_is_sent(
    emu: Any,
    tmp_path: Path,
    file_server: str,
    monkeypatch: pytest.MonkeyPatch,
    template: str,
    rendered: str,
    message: str,
) -> None:
    """Not checkable while the DAG is parsed, the rendered value is checked at task start, before the
    large file listed first is uploaded and before any run is created: nothing reaches Noxus."""
    monkeypatch.setattr(files, "MAX_INLINE_FILE_BYTES", 100)
    appendix = tmp_path / "appendix.pdf"
    appendix.write_bytes(CONTENT)  # over the inline size: would be uploaded
    document = NoxusFile.from_path(template) if "path" in template else NoxusFile.from_url(template)
    task = NoxusRunOperator(
        task_id="files",
        workflow_id=emu.control.workflow_id("file_info"),
        inputs={"appendix": NoxusFile.from_path(appendix), "document": document},
    )
    value = {"file_server": file_server, "missing": str(tmp_path / "missing.pdf")}.get(rendered, rendered)
    task.render_template_fields({"url": value, "path": value})  # type: ignore[arg-type]

    with pytest.raises(NoxusFileInputError, match=message):
        run_task(task, make_context())
    assert emu.control.counters()["requests"] == {}


def test_spot_references_are_read_one_way(emu: Any) -> None:
    """A stored file's URI, its bare id, and spaced, slashed or upper-case forms send the same file."""
    uploaded = NoxusHook().upload_file(CONTENT, filename="kept.pdf")
    file_id = uploaded["id"]
    for given in (uploaded["uri"], file_id, f" {uploaded['uri']}/ ", f"SPOT://{file_id}"):
        resolved = resolve_file_inputs({"doc": NoxusFile.from_spot(given)}, hook=NoxusHook())
        assert resolved["doc"] == {"uri": uploaded["uri"], "name": file_id}
    info = run_file_info(emu, NoxusFile.from_spot(f" SPOT://{file_id}/ "))
    assert (info["source"], info["sha256"]) == ("spot", DIGEST)


@pytest.mark.parametrize("source", ["spot://", " ", "spot:///"])
def test_an_empty_spot_id_fails_at_parse(source: str) -> None:
    with pytest.raises(ValueError, match="file id"):
        NoxusFile.from_spot(source)


def test_a_url_parsers_disagree_on_fails_at_parse() -> None:
    with pytest.raises(ValueError, match="backslash"):
        NoxusFile.from_url("http://127.0.0.1\\@example.com/a.pdf")
    assert NoxusFile.from_url("{{ var.value.base }}/a b.pdf").source == "{{ var.value.base }}/a b.pdf"


def test_upload_part_is_the_one_rule_of_an_upload(tmp_path: Path) -> None:
    """The hook's upload and a large file input share name, MIME type and cap."""
    path = tmp_path / "scan.png"
    path.write_bytes(b"png")
    assert files.upload_part(path) == ("scan.png", b"png", "image/png")
    assert files.upload_part(b"x") == (files.DEFAULT_UPLOAD_NAME, b"x", "application/octet-stream")
    assert files.upload_part(b"x", "a.csv", "text/plain") == ("a.csv", b"x", "text/plain")
    huge = b"\0" * (files.MAX_FILE_BYTES + 1)
    with pytest.raises(NoxusFileInputError, match=r"File upload: 'upload\.bin'.*upload cap"):
        files.upload_part(huge)
    with pytest.raises(NoxusFileInputError, match=r"File input 'doc'.*'big\.bin'.*upload cap"):
        files.upload_part(huge, "big.bin", input_name="doc")


def test_an_upload_over_the_cap_sends_nothing(emu: Any, tmp_path: Path) -> None:
    path = tmp_path / "huge.bin"
    with path.open("wb") as handle:
        handle.truncate(files.MAX_FILE_BYTES + 1)
    with pytest.raises(NoxusFileInputError, match=r"huge\.bin.*upload cap"):
        NoxusHook().upload_file(path)
    assert emu.control.counters()["requests"] == {}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "ftp://reader:pw-5f2c@files.example.com/a.pdf?sig=s-93d1#t",
            "ftp://reader:***@files.example.com/a.pdf?***#***",
        ),
        ("http://[::1/a.pdf?sig=s-93d1", "http://[::1/a.pdf?***"),  # cannot be parsed
        ("http://files.example.com/a b.pdf#token=s-93d1", "http://files.example.com/a b.pdf#***"),
    ],
)
def test_a_refused_url_is_named_without_its_secrets(url: str, shown: str) -> None:
    with pytest.raises(NoxusFileInputError, match="'doc'") as refused:
        check_public_url(url, input_name="doc")
    assert repr(shown) in str(refused.value) and "5f2c" not in str(refused.value)
    assert "93d1" not in str(refused.value)
