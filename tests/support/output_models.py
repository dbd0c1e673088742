"""Output models importable by path, as a model in a package both the worker and the triggerer import."""

from __future__ import annotations

from pydantic import BaseModel


class EchoedText(BaseModel):
    """The ``echo`` workflow's output."""

    text: str


class EchoedNumber(BaseModel):
    """An output the ``echo`` workflow's text does not fit."""

    text: int
