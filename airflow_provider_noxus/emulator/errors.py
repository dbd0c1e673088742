"""Errors the emulator answers with, in the shapes of the reference (FastAPI's ``{"detail": ...}``)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered as ``{"detail": <detail>}`` (plus any extra body fields) with an HTTP status.

    :param status: HTTP status code.
    :param detail: the human-readable ``detail``.
    :param headers: extra response headers (e.g. ``Retry-After``).
    :param extra: extra body fields next to ``detail`` (e.g. ``run_id`` on a sync 504).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {"detail": self.detail, **self.extra}


def validation_issue(loc: list[str | int], msg: str, error_type: str, value: Any = None) -> dict[str, Any]:
    """One entry of a FastAPI-style 422 ``detail`` list.

    :param loc: where the bad value is, e.g. ``["body", "input", "text"]``.
    :param msg: what is wrong and what to do.
    :param error_type: a pydantic-like error type (``missing``, ``dict_type``, ``value_error``...).
    :param value: the offending value, echoed as ``input`` like FastAPI does.
    """
    return {"type": error_type, "loc": loc, "msg": msg, "input": value}


class ValidationFailed(ApiError):
    """A 422 whose ``detail`` is FastAPI's list of ``{"type", "loc", "msg", "input"}`` entries.

    :param issues: entries made with :func:`validation_issue`.
    """

    def __init__(self, issues: list[dict[str, Any]]) -> None:
        super().__init__(422, "; ".join(str(issue["msg"]) for issue in issues))
        self.issues = issues

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"detail": [issues...]}``."""
        return {"detail": self.issues}


def invalid(
    loc: list[str | int], msg: str, error_type: str = "value_error", value: Any = None
) -> ValidationFailed:
    """A 422 with a single validation issue (see :func:`validation_issue`)."""
    return ValidationFailed([validation_issue(loc, msg, error_type, value)])
