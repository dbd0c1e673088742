"""The node catalogue (``GET /v1/nodes``): the node types the emulator's workflow definitions use.

The official client (``noxus-sdk``) reads this list when it starts and validates each entry against
its node model (``NodeDefinition``): ``type``, ``title``, ``description``, ``integrations``, ``inputs``
and ``outputs`` (connector objects with a ``name``), ``config`` (field name -> definition with
``type``, ``description``, ``visible``, ``optional``, ``default``), ``is_available``, ``visible`` and
``config_endpoint``. It then checks that every node of a workflow definition has a type listed here,
and builds the node's connectors from the entry. The real catalogue has hundreds of types; the
emulator lists the three its workflows are made of.
"""

from __future__ import annotations

from typing import Any

INPUT_NODE = "InputNode"
PROCESS_NODE = "ProcessNode"
OUTPUT_NODE = "OutputNode"
#: Connector names: a node's single input and single output.
INPUT_CONNECTOR = "input"
OUTPUT_CONNECTOR = "output"


def _config(
    data_type: str, description: str, *, optional: bool = False, default: Any = None
) -> dict[str, Any]:
    """One ``config`` entry of a node type."""
    return {
        "type": data_type,
        "description": description,
        "visible": True,
        "optional": optional,
        "default": default,
        "display": {},
        "rules": [],
    }


def _node_type(
    type_name: str,
    title: str,
    description: str,
    category: str,
    *,
    inputs: bool,
    outputs: bool,
    config: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    return {
        "type": type_name,
        "title": title,
        "description": description,
        "small_description": description.split(".")[0],
        "category": category,
        "integrations": [],
        "inputs": [{"name": INPUT_CONNECTOR, "type": "input", "label": "Input"}] if inputs else [],
        "outputs": [{"name": OUTPUT_CONNECTOR, "type": "output", "label": "Output"}] if outputs else [],
        "config": config,
        "is_available": True,
        "visible": True,
        "config_endpoint": None,
    }


NODE_CATALOGUE: list[dict[str, Any]] = [
    _node_type(
        INPUT_NODE,
        "Input",
        "A value given when the run is created. Runs name it by its label or its node id.",
        "io",
        inputs=False,
        outputs=True,
        config={
            "label": _config("str", "The key a run's input object uses for this value"),
            "type": _config("str", "string, number, boolean, file or any", default="string"),
            "required": _config("bool", "Whether a run must give this input", optional=True, default=True),
            "default": _config("Any", "The value used when a run does not give it", optional=True),
        },
    ),
    _node_type(
        PROCESS_NODE,
        "Process",
        "A step of the emulator's workflows: waits, streams text like an LLM, pauses for human "
        "feedback or fails, as its kind says.",
        "flow",
        inputs=True,
        outputs=True,
        config={
            "kind": _config("str", "step, llm, human or fail", default="step"),
            "seconds": _config("Any", "How long the node takes (a number or a template)", optional=True),
        },
    ),
    _node_type(
        OUTPUT_NODE,
        "Output",
        "A value of the run's output, keyed by its label (or its node id on request).",
        "io",
        inputs=True,
        outputs=False,
        config={"label": _config("str", "The key of this value in the run's output")},
    ),
]
