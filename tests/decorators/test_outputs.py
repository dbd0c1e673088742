"""``outputs``: validating a run's output against a pydantic model, and finding the model by path
(what the triggerer needs to validate a task that ends there)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS, AirflowFailException
from airflow_provider_noxus.exceptions import NoxusOutputValidationError, NoxusRunError
from airflow_provider_noxus.outputs import (
    MAX_FIELDS_NAMED,
    import_model,
    model_import_path,
    validate_output,
)

RUN = {"workflow_id": "wf-1", "run_id": "run-1", "run_url": "https://app.example/runs/run-1"}


class Source(BaseModel):
    url: str


class Answer(BaseModel):
    answer: str
    confidence: float
    sources: list[Source] = []

    class Nested(BaseModel):
        value: int


def misfit(model: type[BaseModel], output: Any) -> NoxusOutputValidationError:
    with pytest.raises(NoxusOutputValidationError) as raised:
        validate_output(model, output, **RUN)
    return raised.value


def test_without_a_model_the_output_is_returned_as_it_is() -> None:
    output = {"anything": [1, {"x": None}]}
    assert validate_output(None, output, **RUN) is output


def test_a_fitting_output_is_coerced_and_dumped_to_json_data() -> None:
    output = {"answer": "42", "confidence": "0.5", "sources": [{"url": "https://a"}], "extra": 1}
    assert validate_output(Answer, output, **RUN) == {
        "answer": "42",
        "confidence": 0.5,
        "sources": [{"url": "https://a"}],
    }


def test_an_output_label_that_is_not_a_python_name_maps_through_an_alias() -> None:
    class Labelled(BaseModel):
        final_answer: str = Field(alias="Final answer")

    assert validate_output(Labelled, {"Final answer": "yes"}, **RUN) == {"final_answer": "yes"}
    assert misfit(Labelled, {"final_answer": "yes"}).fields == ["Final answer"]


def test_a_misfit_names_nested_fields_values_run_and_link() -> None:
    error = misfit(Answer, {"answer": "42", "confidence": "high", "sources": [{"url": 3}]})
    assert isinstance(error, NoxusRunError) and isinstance(error, AirflowFailException)
    assert error.fields == ["confidence", "sources.0.url"]
    assert error.run_id == "run-1" and error.workflow_id == "wf-1" and error.run_url == RUN["run_url"]
    text = str(error)
    assert "confidence: Input should be a valid number" in text and "(got 'high')" in text
    assert "sources.0.url: Input should be a valid string (got 3)" in text
    assert "fails without retrying" in text and "clear it to make a new run" in text
    assert "(workflow wf-1, run run-1)" in text and text.endswith(f"See {RUN['run_url']}")


def test_a_missing_field_is_named_without_echoing_the_whole_output() -> None:
    error = misfit(Answer, {"confidence": 1, "secret_blob": "x" * 5000})
    assert error.fields == ["answer"]
    assert "1 field does not fit: answer: Field required." in str(error)
    assert "xxxx" not in str(error)


def test_an_output_that_is_not_an_object_is_named_as_the_whole_output() -> None:
    error = misfit(Answer, ["not", "a", "dict"])
    assert error.fields == ["(the whole output)"]


def test_long_values_and_many_fields_are_cut() -> None:
    fields = {f"f{n}": (int, ...) for n in range(MAX_FIELDS_NAMED + 5)}
    from pydantic import create_model

    model = create_model("Wide", **fields)  # type: ignore[call-overload]
    error = misfit(model, {name: "y" * 500 for name in fields})
    assert len(error.fields) == MAX_FIELDS_NAMED + 5
    assert "; and 5 more." in str(error)
    assert "y" * 81 not in str(error)


# ---- the model's import path ------------------------------------------------------------------------


def test_a_module_level_model_has_an_import_path_that_imports_back() -> None:
    path = model_import_path(Answer)
    assert path == f"{__name__}.Answer"
    assert import_model(path) is Answer
    nested = model_import_path(Answer.Nested)
    assert nested == f"{__name__}.Answer.Nested"
    assert import_model(nested) is Answer.Nested


def test_a_model_made_in_a_function_or_in_main_has_no_import_path() -> None:
    class Local(BaseModel):
        x: int

    assert model_import_path(Local) is None
    assert model_import_path(None) is None
    Main = type("Main", (BaseModel,), {"__module__": "__main__", "__annotations__": {"x": int}})
    assert model_import_path(Main) is None


def test_a_model_defined_in_a_dag_file_has_no_import_path(tmp_path: Path) -> None:
    """Airflow loads a DAG file under a made-up module name that the triggerer cannot import."""
    dag_file = tmp_path / "my_dag.py"
    dag_file.write_text("from pydantic import BaseModel\n\nclass InDag(BaseModel):\n    x: int\n")
    if AIRFLOW_V_3_0_PLUS:
        from airflow.dag_processing.dagbag import DagBag
    else:
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    before = set(sys.modules)
    DagBag(dag_folder=str(dag_file), safe_mode=False)
    (module,) = [sys.modules[name] for name in set(sys.modules) - before if name.endswith("my_dag")]
    assert module.__name__ != "my_dag"  # Airflow's made-up name
    assert model_import_path(module.InDag) is None


def test_a_model_importable_from_sys_path_has_an_import_path(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "answer_models.py").write_text(
        "from pydantic import BaseModel\n\nclass A(BaseModel):\n    x: int\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = importlib.util.find_spec("answer_models")
    assert spec is not None
    module = importlib.import_module("answer_models")
    try:
        assert model_import_path(module.A) == "answer_models.A"
    finally:
        sys.modules.pop("answer_models", None)


@pytest.mark.parametrize("path", ["no_such_module.Model", f"{__name__}.RUN", f"{__name__}.Missing"])
def test_a_path_that_is_not_a_model_does_not_import(path: str) -> None:
    with pytest.raises(ImportError, match="does not import to a pydantic model class"):
        import_model(path)
