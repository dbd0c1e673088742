"""``@task.noxus``: a TaskFlow function returns a Noxus run's inputs; the task returns the run's output.

The provider registers the decorator (``task-decorators`` in its provider info), so once the package
is installed ``from airflow.sdk import task`` (Airflow 2.11: ``from airflow.decorators import task``)
offers ``@task.noxus``::

    @task.noxus(workflow_id="...", output_model=Answer)
    def ask(question: str) -> dict:
        return {"question": question}

    answers = ask.expand(question=["Why?", "How?"])

The function runs on the worker when the task starts, with its arguments rendered and resolved like
any TaskFlow function's (templates, XComArgs, ``.partial()``/``.expand()``, context keys such as
``ds``, ``templates_dict``); what it returns becomes the operator's ``inputs``. The rest is
:class:`~airflow_provider_noxus.operators.noxus.NoxusRunOperator`, which takes every other argument.

One run per intent holds: the intent includes the inputs the function returned, so a function whose
result changes from try to try (a timestamp, a random pick, a read of live data) makes a new run on
retry, and stops the earlier try's run if it still runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_noxus._compat import (
    DecoratedOperator,
    TaskDecorator,
    context_merge,
    determine_kwargs,
    task_decorator_factory,
)
from airflow_provider_noxus.operators.noxus import NoxusRunOperator
from airflow_provider_noxus.outputs import check_output_model

if TYPE_CHECKING:
    from airflow_provider_noxus._compat import Context


class _NoxusDecoratedOperator(DecoratedOperator, NoxusRunOperator):
    """A :class:`NoxusRunOperator` whose ``inputs`` are what ``python_callable`` returns at execute time.

    :param python_callable: the function that returns the run's inputs (a dict; ``NoxusFile`` values
        allowed).
    :param op_args: positional arguments of the function. (templated)
    :param op_kwargs: keyword arguments of the function. (templated)
    :param templates_dict: a dict rendered by Airflow and given to the function as ``templates_dict``.
        (templated)
    """

    # ``inputs`` is left out: it is made by the function after rendering, and is not rendered again.
    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        "templates_dict",
        *(field for field in NoxusRunOperator.template_fields if field != "inputs"),
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        "templates_dict": "json",
    }
    custom_operator_name: str = "@task.noxus"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        templates_dict: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if "inputs" in kwargs:
            raise TypeError(
                f"@task.noxus task {kwargs.get('task_id')!r}: the decorated function returns the run's "
                "inputs; drop the inputs= argument."
            )
        if inspect.iscoroutinefunction(python_callable):
            raise TypeError(
                f"@task.noxus task {kwargs.get('task_id')!r}: the decorated function must be a plain "
                "function (not async) that returns the run's inputs."
            )
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs)
        self.templates_dict = templates_dict
        if self.multiple_outputs and not self.wait_for_completion:
            raise ValueError(
                f"Task {self.task_id!r}: multiple_outputs=True needs the run's output, which "
                "wait_for_completion=False does not wait for (the task returns the run id)."
            )

    def execute(self, context: Context) -> Any:
        """Call the function for the run's inputs, then run the workflow with them."""
        context_merge(context, self.op_kwargs, templates_dict=self.templates_dict)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        inputs = self.python_callable(*self.op_args, **kwargs)
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"Task {self.task_id!r}: the @task.noxus function {self.python_callable.__name__}() must "
                f"return the run's inputs as a dict (input label -> value), got {type(inputs).__name__}: "
                f"{inputs!r:.200}."
            )
        self.inputs = dict(inputs)
        self.log.info(
            "Inputs of workflow %s from %s(): %s.",
            self.workflow_id,
            self.python_callable.__name__,
            ", ".join(map(str, self.inputs)) or "none",
        )
        return super().execute(context)


def noxus_task(
    python_callable: Callable[..., Any] | None = None,
    multiple_outputs: bool | None = None,
    **kwargs: Any,
) -> TaskDecorator:
    """``@task.noxus``: run a Noxus workflow with the inputs the decorated function returns.

    :param python_callable: the decorated function; it returns the run's inputs (a dict).
    :param multiple_outputs: push each key of the run's output (or of the validated ``output_model``)
        as its own XCom too. False unless set: the function's return annotation describes the inputs,
        not the task's result, so it is not used to guess.
    :param kwargs: every :class:`~airflow_provider_noxus.operators.noxus.NoxusRunOperator` argument
        but ``inputs`` (``workflow_id`` required, ``output_model``, ``deferrable``...), and
        ``templates_dict``.
    """
    check_output_model(kwargs.get("output_model"), "@task.noxus")
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=bool(multiple_outputs),
        decorated_operator_class=_NoxusDecoratedOperator,
        **kwargs,
    )
