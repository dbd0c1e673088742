"""Workflow fixtures: their definitions, the file format that loads more, and input validation.

A workflows file is JSON (or YAML when PyYAML is installed): either a list of workflows or
``{"workflows": [...]}``. One workflow::

    {
      "name": "translate",                       # required, unique
      "id": "<uuid>",                            # optional; default: a stable uuid5 of the name
      "description": "Translate a text",         # optional
      "inputs": [                                # keys: label, node id or "<node_id>::input"
        {"label": "text", "type": "string", "required": true},
        {"label": "style", "type": "string", "default": "plain"}
      ],                                         # types: string, number, boolean, file (image/audio), any
      "nodes": [                                 # run in order
        {"name": "Prepare", "kind": "step", "seconds": 0.1},
        {"name": "Translate", "kind": "llm", "seconds": 0.5, "text": "Bonjour: {text}"},
        {"name": "Review", "kind": "human", "seconds": "{delay}"},
        {"name": "Explode", "kind": "fail", "seconds": 0.1, "message": "Boom: {text}"}
      ],
      "outputs": {"translation": "{nodes.Translate}", "style": "{style}"}
    }

Node kinds: ``step`` waits ``seconds``; ``llm`` streams ``text`` as many small ``content`` events over
``seconds``; ``human`` pauses the run in ``awaiting_human_feedback`` for ``seconds`` (when that resolves
to nothing, the server's ``--feedback-delay``); ``fail`` waits ``seconds`` then fails the run with
``message`` (its output becomes ``{"error": message}``). Node ids default to stable uuid5s; give ``id``
to choose one.

Templates: a string ``"{path}"`` alone is replaced by the value at ``path`` (keeping its type); inside
a longer string each ``{path}`` is replaced by its text. A path is an input label, ``nodes.<node name>``
(the text an ``llm`` node produced), or a file input's attribute: ``<label>.name``, ``.size``,
``.sha256``, ``.content_type``, ``.source`` (``url``, ``data_uri`` or ``spot``), ``.file_id``.

The file format, its validation and the templates are one contract with the user's workflows file,
kept in one module (a little over 400 lines) so that it reads as its own reference.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from airflow_provider_noxus.emulator.errors import ValidationFailed, validation_issue
from airflow_provider_noxus.emulator.nodes import (
    INPUT_CONNECTOR,
    INPUT_NODE,
    OUTPUT_CONNECTOR,
    OUTPUT_NODE,
    PROCESS_NODE,
)

#: Namespace of the uuid5 ids derived for workflows, nodes, inputs and outputs.
ID_NAMESPACE = uuid.UUID("5b0c5f43-7e3a-4d2b-9a61-0a9f6b1d2c70")

INPUT_TYPE_ALIASES = {
    "string": "string",
    "str": "string",
    "text": "string",
    "number": "number",
    "int": "number",
    "float": "number",
    "boolean": "boolean",
    "bool": "boolean",
    "file": "file",
    "image": "file",
    "audio": "file",
    "any": "any",
}
NODE_KINDS = ("step", "llm", "human", "fail")
_TEMPLATE_PATH = re.compile(r"\{([A-Za-z_][\w.]*)\}")


@dataclass(frozen=True)
class WorkflowInput:
    """An input node of a workflow.

    :param label: the label clients use as the input key.
    :param node_id: the input node's id (also accepted as key, alone or as ``<node_id>::input``).
    :param type: one of ``string``, ``number``, ``boolean``, ``file``, ``any``.
    :param required: whether a run must give it.
    :param default: the value used when it is not given.
    """

    label: str
    node_id: str
    type: str
    required: bool
    default: Any = None

    def describe(self) -> dict[str, Any]:
        """The input as shown by ``GET /v1/workflows/{id}``."""
        return {
            "label": self.label,
            "node_id": self.node_id,
            "type": self.type,
            "required": self.required,
            "default": self.default,
        }


@dataclass(frozen=True)
class WorkflowNode:
    """A processing node, run in order.

    :param id: node id, as it appears in ``progress_details`` and ``content`` events.
    :param name: node name (``nodes.<name>`` in templates).
    :param kind: ``step``, ``llm``, ``human`` or ``fail``.
    :param seconds: its duration: a number or a template such as ``"{seconds}"``.
    :param text: the text an ``llm`` node streams (a template).
    :param message: the error message of a ``fail`` node (a template).
    """

    id: str
    name: str
    kind: str
    seconds: Any
    text: str = ""
    message: str = ""


@dataclass(frozen=True)
class WorkflowOutput:
    """An output node: ``value`` is a template rendered when the run completes."""

    label: str
    node_id: str
    value: Any


@dataclass(frozen=True)
class Workflow:
    """A workflow fixture (see the module docstring for the file format)."""

    id: str
    name: str
    description: str
    inputs: tuple[WorkflowInput, ...]
    nodes: tuple[WorkflowNode, ...]
    outputs: tuple[WorkflowOutput, ...]

    def find_input(self, key: str) -> WorkflowInput | None:
        """The input a client's key names: its label, its node id or ``<node_id>::input``."""
        for workflow_input in self.inputs:
            if key in (workflow_input.label, workflow_input.node_id, f"{workflow_input.node_id}::input"):
                return workflow_input
        return None

    def summary(self) -> dict[str, Any]:
        """The workflow as listed by ``GET /v1/workflows``."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "inputs": [workflow_input.describe() for workflow_input in self.inputs],
        }

    def describe(self) -> dict[str, Any]:
        """The workflow as read by ``GET /v1/workflows/{id}``: summary plus its definition.

        Node types are those of the catalogue (:mod:`~airflow_provider_noxus.emulator.nodes`); each
        edge goes from a node's output connector to the next node's input connector, in the official
        client's edge shape.
        """
        inputs = [
            {
                "id": i.node_id,
                "type": INPUT_NODE,
                "name": i.label,
                "kind": "input",
                "node_config": {
                    "label": i.label,
                    "type": i.type,
                    "required": i.required,
                    "default": i.default,
                },
            }
            for i in self.inputs
        ]
        steps = [
            {
                "id": n.id,
                "type": PROCESS_NODE,
                "name": n.name,
                "kind": n.kind,
                "node_config": {"kind": n.kind, "seconds": n.seconds},
            }
            for n in self.nodes
        ]
        outputs = [
            {
                "id": o.node_id,
                "type": OUTPUT_NODE,
                "name": o.label,
                "kind": "output",
                "node_config": {"label": o.label},
            }
            for o in self.outputs
        ]
        # Every input feeds the first step, the steps form a chain, the last one feeds every output.
        if steps:
            links = [(i, steps[0]) for i in inputs] + list(itertools.pairwise(steps))
            links += [(steps[-1], o) for o in outputs]
        else:
            links = [(i, o) for i in inputs for o in outputs]
        edges = [
            {
                "id": f"{a['id']}->{b['id']}",
                "from_id": {"node_id": a["id"], "connector_name": OUTPUT_CONNECTOR},
                "to_id": {"node_id": b["id"], "connector_name": INPUT_CONNECTOR},
            }
            for a, b in links
        ]
        nodes = inputs + steps + outputs
        return {**self.summary(), "type": "flow", "definition": {"nodes": nodes, "edges": edges}}


def render(template: Any, context: dict[str, Any]) -> Any:
    """Fill a template (see the module docstring) from ``context``; lists and dicts are walked.

    :param template: a string, list, dict or any JSON literal.
    :param context: input values by label, plus ``nodes`` (llm texts by node name).
    """
    if isinstance(template, dict):
        return {key: render(value, context) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, context) for value in template]
    if not isinstance(template, str):
        return template
    whole = _TEMPLATE_PATH.fullmatch(template)
    if whole:
        return _lookup(whole.group(1), context)
    return _TEMPLATE_PATH.sub(lambda match: _as_text(_lookup(match.group(1), context)), template)


def _lookup(path: str, context: dict[str, Any]) -> Any:
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def validate_inputs(workflow: Workflow, given: dict[str, Any]) -> dict[str, Any]:
    """Map a run's ``input`` object to values by label, or raise a 422 naming each bad input.

    :param workflow: the workflow being run.
    :param given: the request's ``input`` object (keys: labels, node ids or ``<node_id>::input``).
    :return: every input's value (or default) by label.
    """
    issues: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    known = ", ".join(repr(i.label) for i in workflow.inputs) or "none"
    for key, value in given.items():
        workflow_input = workflow.find_input(key)
        if workflow_input is None:
            msg = (
                f"Unknown input {key!r} for workflow {workflow.name!r} ({workflow.id}); known inputs: {known}"
            )
            issues.append(validation_issue(["body", "input", key], msg, "value_error", value))
        elif workflow_input.label in values:
            msg = f"Input {workflow_input.label!r} of workflow {workflow.name!r} is given twice (as {key!r})"
            issues.append(validation_issue(["body", "input", key], msg, "value_error", value))
        else:
            problem = _type_problem(workflow_input, value)
            if problem:
                msg = f"Input {key!r} of workflow {workflow.name!r}: {problem}"
                issues.append(validation_issue(["body", "input", key], msg, "value_error", value))
            values[workflow_input.label] = value
    for workflow_input in workflow.inputs:
        if workflow_input.label in values:
            continue
        if workflow_input.required:
            msg = (
                f"Missing required input {workflow_input.label!r} of workflow {workflow.name!r} "
                f"({workflow.id}): give it by label, node id or '<node_id>::input'"
            )
            issues.append(validation_issue(["body", "input", workflow_input.label], msg, "missing", None))
        else:
            values[workflow_input.label] = workflow_input.default
    if issues:
        raise ValidationFailed(issues)
    return values


def _type_problem(workflow_input: WorkflowInput, value: Any) -> str | None:
    expected = workflow_input.type
    if expected == "string" and not isinstance(value, str):
        return "expected a string"
    if expected == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        return "expected a number"
    if expected == "boolean" and not isinstance(value, bool):
        return "expected true or false"
    if expected == "file" and not (isinstance(value, dict) and isinstance(value.get("uri"), str)):
        return 'expected a file object {"uri": "https://... | data:... | spot://<file id>", "name": "..."}'
    return None


def parse_workflow(raw: Any) -> Workflow:
    """Build a workflow from its file form (see the module docstring); ``ValueError`` says what is wrong.

    :param raw: one workflow mapping as loaded from JSON or YAML.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ValueError(f"A workflow must be a mapping with a non-empty 'name'; got {raw!r:.200}")
    name = raw["name"]
    workflow_id = str(raw.get("id") or uuid.uuid5(ID_NAMESPACE, f"workflow:{name}"))
    namespace = uuid.UUID(workflow_id) if is_uuid(workflow_id) else uuid.uuid5(ID_NAMESPACE, workflow_id)
    inputs = tuple(_parse_input(name, namespace, item) for item in raw.get("inputs") or [])
    nodes = tuple(_parse_node(name, namespace, item) for item in raw.get("nodes") or [])
    outputs_raw = raw.get("outputs") or {}
    if not isinstance(outputs_raw, dict):
        raise ValueError(f"Workflow {name!r}: 'outputs' must be a mapping of output label to template")
    outputs = tuple(
        WorkflowOutput(label=str(label), node_id=str(uuid.uuid5(namespace, f"output:{label}")), value=value)
        for label, value in outputs_raw.items()
    )
    return Workflow(
        id=workflow_id,
        name=name,
        description=str(raw.get("description") or ""),
        inputs=inputs,
        nodes=nodes,
        outputs=outputs,
    )


def is_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _parse_input(workflow_name: str, namespace: uuid.UUID, raw: Any) -> WorkflowInput:
    if not isinstance(raw, dict) or not isinstance(raw.get("label"), str):
        raise ValueError(f"Workflow {workflow_name!r}: each input needs a 'label'; got {raw!r:.200}")
    type_name = INPUT_TYPE_ALIASES.get(str(raw.get("type", "string")).lower())
    if type_name is None:
        raise ValueError(
            f"Workflow {workflow_name!r}, input {raw['label']!r}: unknown type {raw.get('type')!r}; "
            f"use one of {sorted(set(INPUT_TYPE_ALIASES))}"
        )
    return WorkflowInput(
        label=raw["label"],
        node_id=str(raw.get("node_id") or uuid.uuid5(namespace, f"input:{raw['label']}")),
        type=type_name,
        required=bool(raw.get("required", "default" not in raw)),
        default=raw.get("default"),
    )


def _parse_node(workflow_name: str, namespace: uuid.UUID, raw: Any) -> WorkflowNode:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ValueError(f"Workflow {workflow_name!r}: each node needs a 'name'; got {raw!r:.200}")
    kind = raw.get("kind", "step")
    if kind not in NODE_KINDS:
        raise ValueError(
            f"Workflow {workflow_name!r}, node {raw['name']!r}: unknown kind {kind!r}; "
            f"use one of {NODE_KINDS}"
        )
    return WorkflowNode(
        id=str(raw.get("id") or uuid.uuid5(namespace, f"node:{raw['name']}")),
        name=raw["name"],
        kind=kind,
        seconds=raw.get("seconds", 0.0 if kind != "human" else None),
        text=str(raw.get("text", "")),
        message=str(raw.get("message", "Node failed")),
    )


def load_workflows_file(path: str | Path) -> list[Workflow]:
    """Load workflows from a JSON or YAML file (YAML needs PyYAML); ``ValueError`` says what is wrong.

    :param path: the file; ``.yaml``/``.yml`` files are read as YAML, anything else as JSON.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as error:
            raise ValueError(f"{path} is YAML but PyYAML is not installed: pip install PyYAML") from error
        raw = yaml.safe_load(text)
    else:
        raw = json.loads(text)
    return parse_workflows(raw, source=str(path))


def parse_workflows(raw: Any, source: str) -> list[Workflow]:
    """Build workflows from a loaded file: a list, or a mapping with a ``workflows`` list.

    :param raw: the loaded JSON/YAML document.
    :param source: where it came from, for error messages.
    """
    items = raw.get("workflows") if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise ValueError(f"{source}: expected a list of workflows or {{'workflows': [...]}}")
    workflows = [parse_workflow(item) for item in items]
    _check_unique_names(workflows, source)
    return workflows


def _check_unique_names(workflows: Iterable[Workflow], source: str) -> None:
    names = [workflow.name for workflow in workflows]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"{source}: workflow names must be unique; duplicated: {duplicated}")


def builtin_workflows() -> list[Workflow]:
    """The six built-in workflows: echo, summarize, slow, fail, human_review, file_info."""
    text = resources.files(__package__).joinpath("builtin_workflows.json").read_text(encoding="utf-8")
    return parse_workflows(json.loads(text), source="builtin_workflows.json")


def merge_workflows(base: list[Workflow], extra: list[Workflow]) -> dict[str, Workflow]:
    """Workflows by id; ``extra`` replaces a base workflow of the same name or id.

    :param base: e.g. the built-ins.
    :param extra: e.g. the ones loaded with ``--workflows``.
    """
    extra_names = {workflow.name for workflow in extra}
    merged = {w.id: w for w in base if w.name not in extra_names}
    for workflow in extra:
        merged[workflow.id] = workflow
    _check_unique_names(merged.values(), "workflows")
    return merged
