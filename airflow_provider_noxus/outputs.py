"""A run's output checked against a pydantic model (``output_model``), and how to find the model again.

Pure (no Airflow call, no I/O), so a task validates the same way wherever its run's end is read: on
the worker after a blocking or deferred wait, or in the triggerer for a task that ends there. The
triggerer cannot receive a class, only an import path: :func:`model_import_path` gives it, or None
when the class cannot be imported by path there (a class defined in a DAG file or in a function);
such a task must end on the worker.

A completed run's output does not change: the error of an output that does not fit is an
``AirflowFailException`` (the task fails at once; a retry would reattach to the same completed run
and read the same output). Clearing the task makes a new run.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from airflow_provider_noxus.exceptions import NoxusOutputValidationError, shorten

#: Fields named, at most, in the error of an output that does not fit.
MAX_FIELDS_NAMED = 10
#: Longest rendering of an offending value in that error.
MAX_VALUE_CHARS = 80


def check_output_model(model: Any, where: str) -> type[BaseModel] | None:
    """``model`` when it is None or a pydantic ``BaseModel`` subclass; else a ``TypeError`` (DAG parse).

    :param where: who is asking, for the message (``Task 'ask'``).
    """
    if model is None or (isinstance(model, type) and issubclass(model, BaseModel)):
        return model
    raise TypeError(
        f"{where}: output_model must be a pydantic model class (a subclass of pydantic.BaseModel), got "
        f"{model!r:.200}."
    )


def validate_output(
    model: type[BaseModel] | None,
    output: Any,
    *,
    workflow_id: str,
    run_id: str,
    run_url: str | None = None,
) -> Any:
    """The task's result for a completed run's ``output``: the output itself without a model, else
    the output validated by ``model`` and dumped to JSON-safe data (``model_dump(mode="json")``).

    :raises NoxusOutputValidationError: the output does not fit; names each field that does not
        (at most :data:`MAX_FIELDS_NAMED`), the run and its URL.
    """
    if model is None:
        return output
    try:
        validated = model.model_validate(output)
    except ValidationError as error:
        problems = error.errors(include_url=False)
        fields = [_field_problem(problem) for problem in problems]
        named = "; ".join(fields[:MAX_FIELDS_NAMED])
        if len(fields) > MAX_FIELDS_NAMED:
            named += f"; and {len(fields) - MAX_FIELDS_NAMED} more"
        count = "1 field does" if len(fields) == 1 else f"{len(fields)} fields do"
        raise NoxusOutputValidationError(
            f"The output of the Noxus run does not fit output_model {model.__qualname__}: {count} not "
            f"fit: {named}. Change the workflow's outputs "
            "or the model. The task fails without retrying (a retry would read the same output of this "
            "completed run); clear it to make a new run.",
            fields=[_location(problem) for problem in problems],
            workflow_id=workflow_id,
            run_id=run_id,
            run_url=run_url,
        ) from None
    return validated.model_dump(mode="json")


def output_check(
    model: type[BaseModel] | None, *, workflow_id: str, run_id: str, run_url: str | None
) -> Callable[[Any], Any] | None:
    """The check of run ``run_id``'s output by ``model`` (:func:`validate_output`), or None without one."""
    if model is None:
        return None
    return functools.partial(validate_output, model, workflow_id=workflow_id, run_id=run_id, run_url=run_url)


def _location(problem: Any) -> str:
    return ".".join(str(part) for part in problem.get("loc", ())) or "(the whole output)"


def _field_problem(problem: Any) -> str:
    text = f"{_location(problem)}: {problem.get('msg', 'invalid')}"
    if problem.get("type") != "missing" and "input" in problem:
        text += f" (got {shorten(repr(problem['input']), MAX_VALUE_CHARS)})"
    return text


def model_import_path(model: type[BaseModel] | None) -> str | None:
    """``module.QualName`` by which another process (the triggerer) imports ``model``, or None when
    it cannot: no model, a class made in a function, in ``__main__``, or in a DAG file (Airflow loads
    those under a module name no import can find)."""
    if model is None:
        return None
    module, qualname = model.__module__, model.__qualname__
    if module == "__main__" or "<locals>" in qualname or module not in sys.modules:
        return None
    # A DAG file is loaded from its path under a made-up module name that no finder on sys.path
    # resolves (importlib.util.find_spec would only echo sys.modules).
    if not _importable_by_name(module):
        return None
    target: Any = sys.modules[module]
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return f"{module}.{qualname}" if target is model else None


def _importable_by_name(module: str) -> bool:
    """Whether the top package of ``module`` is found on ``sys.path`` by name (not only in sys.modules)."""
    from importlib.machinery import PathFinder

    top = module.partition(".")[0]
    if top in sys.builtin_module_names:
        return True
    return PathFinder.find_spec(top) is not None


def import_model(path: str) -> type[BaseModel]:
    """The model class at ``path`` (from :func:`model_import_path`), checked to be a pydantic model.

    :raises ImportError: the path does not import to a pydantic model class.
    """
    target: Any = None
    parts = path.split(".")
    # The qualname may be nested (Outer.Inner): import the longest module prefix that imports.
    for cut in range(len(parts) - 1, 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            target = getattr(target, part, None)
        break
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        raise ImportError(f"output_model {path!r} does not import to a pydantic model class.")
    return target
