"""File inputs of a Noxus run: a public URL, a local path, bytes, or a file already uploaded.

A Noxus File, Image or Audio input takes ``{"uri": ..., "name": ...}`` where ``uri`` is an
``https://`` URL, a ``data:`` URI or ``spot://<file id>`` (API reference, section 3). Put
:class:`NoxusFile` values inside an operator's ``inputs``; they are turned into that shape on the
worker when the task starts (:func:`resolve_file_inputs`), never while the DAG file is parsed.
"""

from __future__ import annotations

import base64
import ipaddress
import mimetypes
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_noxus.exceptions import NoxusFileInputError, NoxusPayloadTooLargeError
from airflow_provider_noxus.protocol import MAX_FILE_BYTES, SPOT_SCHEME, spot_file_id

if TYPE_CHECKING:
    from airflow_provider_noxus.hooks.noxus import NoxusHook

#: Files up to this size are sent inline as a ``data:`` URI inside the run creation request; larger
#: ones (up to the server's 25 MB cap, :data:`MAX_FILE_BYTES`) are uploaded first and sent as
#: ``spot://``. Inline data grows by a third in base64 and rides in a request that is never retried
#: when it may have created a run, so it is kept small.
MAX_INLINE_FILE_BYTES = 5 * 1024 * 1024
#: Set to ``1`` to allow private, loopback and link-local file URLs (tests against a local server).
ALLOW_PRIVATE_URLS_ENV = "NOXUS_ALLOW_PRIVATE_FILE_URLS"
#: Host names of cloud metadata services, refused whatever they resolve to.
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data"})
#: Bytes of a local file read at once (a multiple of 8, as some ``/proc`` files require).
READ_CHUNK_BYTES = 1024 * 1024

FILE_KINDS = ("url", "path", "bytes", "spot")


def _is_templated(value: object) -> bool:
    return isinstance(value, str) and "{{" in value


class NoxusFile:
    """A file given to a Noxus run input. Build it with one of the ``from_*`` class methods.

    ``source`` and ``name`` are Airflow template fields: ``NoxusFile.from_path("/data/{{ ds }}.pdf")``
    is rendered with the task's other templates.

    :param kind: ``url``, ``path``, ``bytes`` or ``spot``.
    :param source: the URL, the local path, the content, or the ``spot://`` URI.
    :param name: file name shown to the workflow; defaults to the last part of the URL or path.
    :param content_type: MIME type of an inline file; guessed from the name when not given.
    """

    template_fields = ("source", "name")

    def __init__(
        self, kind: str, source: str | bytes, *, name: str | None = None, content_type: str | None = None
    ) -> None:
        if kind not in FILE_KINDS:
            raise ValueError(f"NoxusFile kind must be one of {FILE_KINDS}, got {kind!r}.")
        if (kind == "bytes") != isinstance(source, bytes):
            raise TypeError(
                f"NoxusFile of kind {kind!r} needs a {'bytes' if kind == 'bytes' else 'str'} source."
            )
        self.kind = kind
        self.source = source
        self.name = name
        self.content_type = content_type

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None) -> NoxusFile:
        """A public ``http(s)://`` URL; the Noxus server downloads it."""
        if not _is_templated(url) and urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"NoxusFile.from_url needs an http(s) URL, got {url!r}.")
        return cls("url", url, name=name)

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], *, name: str | None = None, content_type: str | None = None
    ) -> NoxusFile:
        """A file on the worker; it must exist when the task starts (not when the DAG is parsed)."""
        return cls("path", os.fspath(path), name=name, content_type=content_type)

    @classmethod
    def from_bytes(cls, content: bytes, *, name: str, content_type: str | None = None) -> NoxusFile:
        """Content held in memory, sent under ``name``."""
        if not isinstance(content, bytes):
            raise TypeError("NoxusFile.from_bytes needs bytes.")
        return cls("bytes", content, name=name, content_type=content_type)

    @classmethod
    def from_spot(cls, uri: str, *, name: str | None = None) -> NoxusFile:
        """A file already uploaded to Noxus: ``spot://<file id>`` or the bare id."""
        if not uri:
            raise ValueError("NoxusFile.from_spot needs a file id or spot:// URI.")
        return cls("spot", uri, name=name)

    def serialize(self) -> dict[str, Any]:
        """Plain description shown in Airflow's rendered templates (never the content of bytes)."""
        source = f"<{len(self.source)} bytes>" if isinstance(self.source, bytes) else self.source
        return {"noxus_file": self.kind, "source": source, "name": self.name}

    def __repr__(self) -> str:
        source = f"<{len(self.source)} bytes>" if isinstance(self.source, bytes) else repr(self.source)
        return f"NoxusFile.from_{self.kind}({source}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NoxusFile):
            return NotImplemented
        return (self.kind, self.source, self.name, self.content_type) == (
            other.kind,
            other.source,
            other.name,
            other.content_type,
        )

    __hash__ = None  # type: ignore[assignment]

    def default_name(self) -> str:
        """The name sent with the file: ``name``, else the last part of the URL, path or spot id."""
        if self.name:
            return self.name
        if self.kind == "url":
            tail = unquote(urlsplit(str(self.source)).path.rsplit("/", 1)[-1])
            return tail or "file"
        if self.kind == "path":
            return Path(str(self.source)).name
        return spot_file_id(str(self.source))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, Teredo), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


#: Well-known NAT64 prefix (RFC 6052): ``64:ff9b::a9fe:a9fe`` is 169.254.169.254.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if not ip.is_global or ip.is_multicast:
        return False
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    return embedded is None or _is_public(embedded)


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address written in ``host`` (an IPv6 zone, ``%25eth0``, is dropped), or None for a name."""
    try:
        return ipaddress.ip_address(unquote(host).split("%", 1)[0])
    except ValueError:
        return None


def check_public_url(url: str, *, input_name: str) -> None:
    """Refuse a URL the Noxus server would refuse: not http(s), or a private/loopback/link-local host.

    A first check only (the server decides): an address written in the URL is checked as it is, a
    name is resolved and every address it resolves to must be public; a name that does not resolve
    here is left to the server to judge. Backslashes, spaces and control characters are refused:
    URL parsers disagree on them (``http://127.0.0.1\\@example.com/`` is 127.0.0.1 to some).

    :raises NoxusFileInputError: naming the input.
    """
    if any(char == "\\" or char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        raise NoxusFileInputError(
            f"File input {input_name!r}: {url!r} holds a backslash, a space or a control character; "
            "percent-encode them (URL parsers read them differently)."
        )
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise NoxusFileInputError(f"File input {input_name!r}: {url!r} is not an http(s) URL.")
    try:
        port = parts.port
    except ValueError:
        raise NoxusFileInputError(
            f"File input {input_name!r}: {url!r} has a port that is not a number within 0..65535."
        ) from None
    if host in METADATA_HOSTS:
        raise NoxusFileInputError(f"File input {input_name!r}: {host!r} is a cloud metadata host; refused.")
    literal = _ip_literal(host)
    if literal is not None:
        addresses = {literal}
    else:
        try:
            infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            return
        addresses = {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
    for ip in addresses:
        if not _is_public(ip):
            raise NoxusFileInputError(
                f"File input {input_name!r}: host {host!r} is or resolves to the non-public address {ip}; "
                "the Noxus server refuses private, loopback, link-local and metadata addresses. Use a "
                "public URL, or NoxusFile.from_path/from_bytes to send the content itself. (Tests against "
                f"a local server: set {ALLOW_PRIVATE_URLS_ENV}=1.)"
            )


def _data_uri(content: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(content).decode('ascii')}"


def _read_path(path: str, *, input_name: str) -> tuple[int, Path]:
    file = Path(path)
    if not file.is_file():
        raise NoxusFileInputError(
            f"File input {input_name!r}: {path!r} does not exist on this worker or is not a file."
        )
    return file.stat().st_size, file


def _read_capped(file: Path, *, input_name: str) -> bytes:
    """The file's content, read up to one byte past :data:`MAX_FILE_BYTES` whatever its size says
    (files of ``/proc`` say 0)."""
    chunks: list[bytes] = []
    size = 0
    try:
        with open(file, "rb", buffering=0) as handle:
            while size <= MAX_FILE_BYTES:
                chunk = handle.read(READ_CHUNK_BYTES)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except OSError as error:
        raise NoxusFileInputError(
            f"File input {input_name!r}: cannot read {str(file)!r}: {error.strerror}."
        ) from None
    return b"".join(chunks)


def file_to_input(
    file: NoxusFile, *, input_name: str, hook: NoxusHook, allow_private_urls: bool = False
) -> dict[str, str]:
    """Turn one :class:`NoxusFile` into the ``{"uri", "name"}`` object of a run input.

    :param file: the file.
    :param input_name: where it sits in ``inputs`` (for error messages), e.g. ``document``.
    :param hook: used to upload files larger than :data:`MAX_INLINE_FILE_BYTES`.
    :param allow_private_urls: skip the public-address check of URLs.
    :raises NoxusFileInputError: missing file, file over the server's cap, refused URL.
    """
    name = file.default_name()
    if file.kind == "url":
        url = str(file.source)
        if urlsplit(url).scheme not in ("http", "https"):
            raise NoxusFileInputError(f"File input {input_name!r}: {url!r} is not an http(s) URL.")
        if not allow_private_urls:
            check_public_url(url, input_name=input_name)
        return {"uri": url, "name": name}
    if file.kind == "spot":
        file_id = spot_file_id(str(file.source))
        if not file_id:
            raise NoxusFileInputError(f"File input {input_name!r}: the spot:// file id is empty.")
        return {"uri": SPOT_SCHEME + file_id, "name": name}
    content_type = file.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    upload_source: bytes | Path
    if isinstance(file.source, bytes):
        size, upload_source = len(file.source), file.source
    else:
        size, upload_source = _read_path(file.source, input_name=input_name)
        if size <= MAX_INLINE_FILE_BYTES:
            # Read now, under the cap: the size a file system reports may be wrong (0 in /proc).
            upload_source = _read_capped(upload_source, input_name=input_name)
            size = len(upload_source)
    if size > MAX_FILE_BYTES:
        raise NoxusFileInputError(
            f"File input {input_name!r}: {name!r} is {size} bytes, over the Noxus server's "
            f"{MAX_FILE_BYTES // (1024 * 1024)} MB upload cap. Send a smaller file, or a public URL the "
            "server can download."
        )
    if size <= MAX_INLINE_FILE_BYTES and isinstance(upload_source, bytes):
        return {"uri": _data_uri(upload_source, content_type), "name": name}
    try:
        uploaded = hook.upload_file(upload_source, filename=name, content_type=content_type)
    except NoxusPayloadTooLargeError as error:
        raise NoxusFileInputError(
            f"File input {input_name!r}: {name!r} ({size} bytes) was refused by the Noxus server as too "
            "large. Send a smaller file, or a public URL the server can download."
        ) from error
    return {"uri": str(uploaded["uri"]), "name": name}


def resolve_file_inputs(
    inputs: Mapping[str, Any], *, hook: NoxusHook, allow_private_urls: bool | None = None
) -> dict[str, Any]:
    """Copy of ``inputs`` with every :class:`NoxusFile` (at any depth) replaced by its input object.

    :param inputs: the run's inputs, already rendered.
    :param hook: the hook that uploads large files.
    :param allow_private_urls: None reads the ``NOXUS_ALLOW_PRIVATE_FILE_URLS`` environment variable.
    """
    if allow_private_urls is None:
        allow_private_urls = os.environ.get(ALLOW_PRIVATE_URLS_ENV, "").lower() in ("1", "true", "yes")

    def convert(value: Any, where: str) -> Any:
        if isinstance(value, NoxusFile):
            return file_to_input(
                value, input_name=where, hook=hook, allow_private_urls=bool(allow_private_urls)
            )
        if isinstance(value, Mapping):
            return {
                key: convert(item, f"{where}.{key}" if where else str(key)) for key, item in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [convert(item, f"{where}[{index}]") for index, item in enumerate(value)]
        return value

    return convert(dict(inputs), "")
