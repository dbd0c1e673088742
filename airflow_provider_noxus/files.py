"""File inputs of a Noxus run: a public URL, a local path, bytes, or a file already uploaded.

A Noxus File, Image or Audio input takes ``{"uri": ..., "name": ...}`` where ``uri`` is an
``https://`` URL, a ``data:`` URI or ``spot://<file id>`` (API reference, section 3). Put
:class:`NoxusFile` values inside an operator's ``inputs``; they are turned into that shape on the
worker when the task starts (:func:`resolve_file_inputs`), never while the DAG file is parsed.

This module is also the one home of the rules of a file's content: the server's size cap, the MIME
type guessed from a name, and the multipart part of an upload (:func:`upload_part`, which
:meth:`NoxusHook.upload_file <airflow_provider_noxus.hooks.noxus.NoxusHook.upload_file>` sends).
It runs over 400 lines: the URL checks (addresses hidden in IPv6, metadata hosts, secrets kept out of
messages) stay with the inputs they guard rather than in a module of their own.
"""

from __future__ import annotations

import base64
import ipaddress
import mimetypes
import os
import socket
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit

from airflow_provider_noxus.exceptions import NoxusFileInputError, NoxusPayloadTooLargeError
from airflow_provider_noxus.protocol import MAX_FILE_BYTES, spot_file_id, spot_uri

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
#: Name of an upload given as bytes without a name.
DEFAULT_UPLOAD_NAME = "upload.bin"


def is_templated(value: object) -> bool:
    """Whether ``value`` is a Jinja template, checked only once rendered (at task start)."""
    return isinstance(value, str) and "{{" in value


def content_type_for(name: str, content_type: str | None = None) -> str:
    """``content_type``, else the MIME type guessed from the file ``name``, else a generic binary one."""
    return content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"


def check_http_url(url: str, *, what: str, error: type[Exception] = NoxusFileInputError) -> SplitResult:
    """Refuse a URL that is not ``http(s)://<host>[:port]``, or that URL parsers read differently.

    Backslashes, spaces and control characters are refused: parsers disagree on them
    (``http://127.0.0.1\\@example.com/`` is 127.0.0.1 to some, example.com to others).

    :param url: the URL.
    :param what: what the URL is, for the message: ``File input 'document'``, ``Task 't': callback_url``.
    :param error: the exception raised (a ``ValueError`` while a DAG is parsed). Its message shows the
        URL without a password or query (:func:`_shown_url`).
    :return: the URL's parts.
    """
    shown = _shown_url(url)
    if any(char == "\\" or char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        raise error(
            f"{what}: {shown!r} holds a backslash, a space or a control character; percent-encode them "
            "(URL parsers read them differently)."
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise error(f"{what}: {shown!r} has a host or port that cannot be read (port: 0..65535).") from None
    if parts.scheme not in ("http", "https") or not (parts.hostname or "").rstrip("."):
        raise error(f"{what}: {shown!r} is not an http(s) URL.")
    return parts


def _shown_url(url: str) -> str:
    """``url`` as an error message shows it: a password, a query and a fragment (where tokens and
    signatures live) replaced by ``***``."""
    rest, fragment, _ = url.partition("#")
    rest, query, _ = rest.partition("?")
    scheme, sep, after = rest.partition("://")
    authority, slash, path = after.partition("/")
    user, at, host = authority.rpartition("@")
    if at and ":" in user:
        authority = f"{user.split(':', 1)[0]}:***@{host}"
    shown = f"{scheme}{sep}{authority}{slash}{path}" if sep else rest
    return shown + ("?***" if query else "") + ("#***" if fragment else "")


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
        if not is_templated(url):
            check_http_url(url, what="NoxusFile.from_url", error=ValueError)
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
        if not is_templated(uri) and not spot_file_id(uri):
            raise ValueError(f"NoxusFile.from_spot needs a file id or spot:// URI, got {uri!r}.")
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
    """Refuse a URL the Noxus server would refuse: not http(s) (:func:`check_http_url`), or a
    private/loopback/link-local host.

    A first check only (the server decides): an address written in the URL is checked as it is, a
    name is resolved and every address it resolves to must be public; a name that does not resolve
    here is left to the server to judge.

    :raises NoxusFileInputError: naming the input.
    """
    parts = check_http_url(url, what=f"File input {input_name!r}")
    host = (parts.hostname or "").rstrip(".").lower()
    port = parts.port
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


def _subject(input_name: str | None) -> str:
    """How an error names the file: by its place in the inputs, or as a plain upload."""
    return f"File input {input_name!r}" if input_name else "File upload"


def _check_size(size: int, name: str, *, input_name: str | None) -> None:
    """Refuse a file over the server's cap (:data:`MAX_FILE_BYTES`)."""
    if size > MAX_FILE_BYTES:
        raise NoxusFileInputError(
            f"{_subject(input_name)}: {name!r} is at least {size} bytes, over the Noxus server's "
            f"{MAX_FILE_BYTES // (1024 * 1024)} MB upload cap. Send a smaller file, or a public URL the "
            "server can download."
        )


def _stat_path(path: str, *, input_name: str | None) -> int:
    """The size the file system reports for a local file (0 for files of ``/proc``)."""
    try:
        status = os.stat(path)
    except OSError:
        status = None
    if status is None or not stat.S_ISREG(status.st_mode):
        raise NoxusFileInputError(
            f"{_subject(input_name)}: {path!r} does not exist on this worker or is not a file."
        )
    return status.st_size


def _read_capped(path: str, *, input_name: str | None) -> bytes:
    """The file's content, read up to one chunk past :data:`MAX_FILE_BYTES` whatever its size says
    (files of ``/proc`` say 0)."""
    chunks: list[bytes] = []
    size = 0
    try:
        with open(path, "rb", buffering=0) as handle:
            while size <= MAX_FILE_BYTES:
                chunk = handle.read(READ_CHUNK_BYTES)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except OSError as error:
        raise NoxusFileInputError(
            f"{_subject(input_name)}: cannot read {path!r}: {error.strerror}."
        ) from None
    return b"".join(chunks)


def upload_part(
    content: bytes | str | os.PathLike[str],
    filename: str | None = None,
    content_type: str | None = None,
    *,
    input_name: str | None = None,
) -> tuple[str, bytes, str]:
    """``(file name, bytes, MIME type)``: the multipart part ``file`` of an upload (``POST /v1/file``).

    :param content: the bytes, or the path of a local file (``str`` is a path).
    :param filename: the name; default the path's base name, or :data:`DEFAULT_UPLOAD_NAME` for bytes.
    :param content_type: the MIME type; default guessed from the name (:func:`content_type_for`).
    :param input_name: the run input the file is for, named by errors.
    :raises NoxusFileInputError: the file cannot be read, or is over the server's cap.
    """
    if isinstance(content, bytes):
        data, name = content, filename or DEFAULT_UPLOAD_NAME
    else:
        path = os.fspath(content)
        data, name = _read_capped(path, input_name=input_name), filename or os.path.basename(path)
    _check_size(len(data), name, input_name=input_name)
    return name, data, content_type_for(name, content_type)


def _check_file(file: NoxusFile, *, input_name: str, allow_private_urls: bool) -> None:
    """Refuse a file input that cannot be sent, before anything is sent: a refused URL, an empty
    ``spot://`` id, a missing local file, a file over the server's cap."""
    if file.kind == "url":
        if allow_private_urls:
            check_http_url(str(file.source), what=f"File input {input_name!r}")
        else:
            check_public_url(str(file.source), input_name=input_name)
    elif file.kind == "spot":
        if not spot_file_id(str(file.source)):
            raise NoxusFileInputError(f"File input {input_name!r}: the spot:// file id is empty.")
    else:
        source = file.source
        size = len(source) if isinstance(source, bytes) else _stat_path(source, input_name=input_name)
        _check_size(size, file.default_name(), input_name=input_name)


def _to_input(file: NoxusFile, *, input_name: str, hook: NoxusHook) -> dict[str, str]:
    """The ``{"uri", "name"}`` object of a file input that passed :func:`_check_file`."""
    name = file.default_name()
    if file.kind == "url":
        return {"uri": str(file.source), "name": name}
    if file.kind == "spot":
        return {"uri": spot_uri(str(file.source)), "name": name}
    content_type = content_type_for(name, file.content_type)
    content: bytes | str = file.source
    if isinstance(content, str) and _stat_path(content, input_name=input_name) <= MAX_INLINE_FILE_BYTES:
        # Read now, under the cap: the size a file system reports may be wrong (0 in /proc); a file
        # that reads larger than it said is uploaded, or refused by upload_part.
        content = _read_capped(content, input_name=input_name)
    if isinstance(content, bytes) and len(content) <= MAX_INLINE_FILE_BYTES:
        return {"uri": _data_uri(content, content_type), "name": name}
    name, data, content_type = upload_part(content, name, content_type, input_name=input_name)
    try:
        uploaded = hook.upload_file(data, filename=name, content_type=content_type)
    except NoxusPayloadTooLargeError as error:
        raise NoxusFileInputError(
            f"File input {input_name!r}: {name!r} ({len(data)} bytes) was refused by the Noxus server "
            "as too large. Send a smaller file, or a public URL the server can download."
        ) from error
    return {"uri": str(uploaded["uri"]), "name": name}


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
    _check_file(file, input_name=input_name, allow_private_urls=allow_private_urls)
    return _to_input(file, input_name=input_name, hook=hook)


def _map_files(value: Any, where: str, convert: Callable[[NoxusFile, str], Any]) -> Any:
    """Copy of ``value`` with every :class:`NoxusFile` (at any depth) replaced by ``convert(file, where)``,
    ``where`` its place: ``document``, ``docs[1].inner``."""
    if isinstance(value, NoxusFile):
        return convert(value, where)
    if isinstance(value, Mapping):
        return {
            key: _map_files(item, f"{where}.{key}" if where else str(key), convert)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_map_files(item, f"{where}[{index}]", convert) for index, item in enumerate(value)]
    return value


def resolve_file_inputs(
    inputs: Mapping[str, Any], *, hook: NoxusHook, allow_private_urls: bool | None = None
) -> dict[str, Any]:
    """Copy of ``inputs`` with every :class:`NoxusFile` (at any depth) replaced by its input object.

    Every file is checked before any is read in full or uploaded: one refused input (a private URL,
    a missing file) fails the task before anything is sent to Noxus.

    :param inputs: the run's inputs, already rendered.
    :param hook: the hook that uploads large files.
    :param allow_private_urls: None reads the ``NOXUS_ALLOW_PRIVATE_FILE_URLS`` environment variable.
    """
    if allow_private_urls is None:
        allow_private_urls = os.environ.get(ALLOW_PRIVATE_URLS_ENV, "").lower() in ("1", "true", "yes")
    allow = bool(allow_private_urls)
    _map_files(
        inputs, "", lambda file, where: _check_file(file, input_name=where, allow_private_urls=allow)
    )
    resolved: dict[str, Any] = _map_files(
        dict(inputs), "", lambda file, where: _to_input(file, input_name=where, hook=hook)
    )
    return resolved
