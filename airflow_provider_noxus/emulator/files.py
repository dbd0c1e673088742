"""Stored files, the three shapes of a file input (URL, data URI, ``spot://``), and the address rules.

Public URLs are fetched by the server, so both file URLs and webhook URLs are checked: an address that is
private, loopback, link-local, reserved or a cloud-metadata one is refused (``allow_loopback`` lets loopback
through, for tests). Every address a host name resolves to is checked, and so is every redirect hop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import aiohttp

from airflow_provider_noxus.emulator.runs import utc_timestamp

#: Cap on uploads, data URIs and downloads.
MAX_FILE_BYTES = 25 * 1024 * 1024
MAX_REDIRECTS = 5
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog"})
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)


class RefusedInput(ValueError):
    """A file input or callback URL the server will not use; the message says why."""


@dataclass
class StoredFile:
    """A file kept by the emulator (uploaded, or received as a run input)."""

    group_id: str
    filename: str
    content_type: str
    data: bytes
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=utc_timestamp)

    @property
    def uri(self) -> str:
        """The ``spot://`` URI that passes this file as a run input."""
        return f"spot://{self.id}"

    def upload_json(self) -> dict[str, Any]:
        """The answer of ``POST /v1/file``."""
        return {
            "id": self.id,
            "uri": self.uri,
            "size": float(len(self.data)),
            "group_id": self.group_id,
            "filename": self.filename,
            "content_type": self.content_type,
            "source_type": "Document",
            "source_metadata": None,
            "created_at": self.created_at,
        }

    def info(self, source: str) -> dict[str, Any]:
        """What a run sees of this file input (``<label>.name``, ``.size``... in templates).

        :param source: how the run received it: ``url``, ``data_uri`` or ``spot``.
        """
        return {
            "name": self.filename,
            "size": len(self.data),
            "sha256": hashlib.sha256(self.data).hexdigest(),
            "content_type": self.content_type,
            "source": source,
            "file_id": self.id,
        }


async def check_url(url: str, allow_loopback: bool) -> None:
    """Refuse a URL the server must not fetch or call (raises :class:`RefusedInput`).

    :param url: an http(s) URL.
    :param allow_loopback: let loopback addresses through (tests); other private ones stay refused.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedInput(f"{url!r} is not an http(s) URL")
    host = parts.hostname.rstrip(".").lower()
    if host in METADATA_HOSTS:
        raise RefusedInput(f"host {host!r} is a cloud-metadata address")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, parts.port or 443, type=socket.SOCK_STREAM
            )
        except OSError as error:
            raise RefusedInput(f"host {host!r} cannot be resolved ({error})") from error
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        if address in METADATA_ADDRESSES:
            raise RefusedInput(f"host {host!r} is a cloud-metadata address ({address})")
        if address.is_loopback and allow_loopback:
            continue
        if not address.is_global or address.is_multicast:
            raise RefusedInput(
                f"host {host!r} resolves to {address}, a private, loopback, link-local or reserved address"
            )


async def download(session: aiohttp.ClientSession, url: str, allow_loopback: bool) -> tuple[bytes, str]:
    """Fetch a public URL (address rules on every hop, 25 MB cap); ``RefusedInput`` says what failed.

    :return: the body and its content type.
    """
    for _ in range(MAX_REDIRECTS + 1):
        await check_url(url, allow_loopback)
        try:
            async with session.get(url, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    url = urljoin(url, response.headers["Location"])
                    continue
                if response.status != 200:
                    raise RefusedInput(f"downloading {url!r} answered HTTP {response.status}")
                body = bytearray()
                async for chunk in response.content.iter_chunked(256 * 1024):
                    body += chunk
                    if len(body) > MAX_FILE_BYTES:
                        raise RefusedInput(f"{url!r} is larger than the {MAX_FILE_BYTES} bytes cap")
                return bytes(body), response.content_type or "application/octet-stream"
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise RefusedInput(f"downloading {url!r} failed ({type(error).__name__}: {error})") from error
    raise RefusedInput(f"{url!r} redirects more than {MAX_REDIRECTS} times")


def decode_data_uri(uri: str) -> tuple[bytes, str]:
    """Decode ``data:<mime>[;base64],<data>`` (25 MB cap); ``RefusedInput`` says what is wrong.

    :return: the bytes and the media type.
    """
    header, comma, payload = uri[len("data:") :].partition(",")
    if not comma:
        raise RefusedInput("a data URI needs a ',' between its header and its data")
    params = header.split(";")
    media_type = params[0] or "text/plain"
    if "base64" in params[1:]:
        if len(payload) > (MAX_FILE_BYTES // 3 + 1) * 4 + 8:
            raise RefusedInput(f"the data URI is larger than the {MAX_FILE_BYTES} bytes cap")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as error:
            raise RefusedInput(f"the data URI is not valid base64 ({error})") from error
    else:
        data = unquote_to_bytes(payload)
    if len(data) > MAX_FILE_BYTES:
        raise RefusedInput(f"the data URI is larger than the {MAX_FILE_BYTES} bytes cap")
    return data, media_type


class FileStore:
    """Files by id, each in one workspace.

    :param allow_loopback: let loopback URLs through (tests).
    """

    def __init__(self, allow_loopback: bool) -> None:
        self.allow_loopback = allow_loopback
        self.files: dict[str, StoredFile] = {}

    def add(self, stored: StoredFile) -> StoredFile:
        """Keep a file and return it."""
        self.files[stored.id] = stored
        return stored

    def get(self, file_id: str, group_id: str) -> StoredFile | None:
        """The file with this id in this workspace, or None."""
        stored = self.files.get(file_id)
        return stored if stored is not None and stored.group_id == group_id else None

    async def receive_input(
        self, session: aiohttp.ClientSession, value: dict[str, Any], group_id: str
    ) -> dict[str, Any]:
        """Turn a file input ``{"uri", "name"}`` into a stored file's info; ``RefusedInput`` says why not.

        :param session: HTTP client for public URLs.
        :param value: the input object.
        :param group_id: the run's workspace.
        """
        uri: str = value["uri"]
        name = value.get("name")
        scheme = uri.split(":", 1)[0].lower()
        if scheme == "spot":
            file_id = uri[len("spot://") :] if uri.startswith("spot://") else ""
            stored = self.get(file_id, group_id)
            if stored is None:
                raise RefusedInput(
                    f"no uploaded file {file_id!r} in this workspace (upload it with POST /v1/file)"
                )
            return stored.info("spot")
        if scheme == "data":
            data, content_type = decode_data_uri(uri)
            source = "data_uri"
            default_name = "file"
        elif scheme in ("http", "https"):
            data, content_type = await download(session, uri, self.allow_loopback)
            source = "url"
            default_name = urlsplit(uri).path.rsplit("/", 1)[-1] or "download"
        else:
            raise RefusedInput(
                f"unsupported URI scheme {scheme!r}: use https://..., data:... or spot://<file id>"
            )
        filename = name if isinstance(name, str) and name else default_name
        return self.add(StoredFile(group_id, filename, content_type, data)).info(source)
