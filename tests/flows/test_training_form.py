"""The Prefect UI form of the training flows: the parameter schema Prefect builds from each flow's signature must
default the MLflow experiment to ``emt-training`` (a ``default_factory`` does not show in a JSON schema, so the
form used to fall back to the curation experiment), while curation keeps ``emt-curation``."""

from __future__ import annotations

from typing import Any

import pytest

from core.settings import MlflowConfig
from flows.curate import curate
from flows.finetune import finetune
from flows.midtrain import midtrain
from flows.pipeline import pipeline
from flows.training_params import MidtrainParams, MidtrainStep


def _mlflow_definitions(flow: Any) -> dict[str, dict]:
    """For each parameter model of the flow's form that has an ``mlflow`` field: the schema it points to."""
    schema = flow.parameters.model_dump()
    definitions = schema["definitions"]
    found = {}
    for name, definition in definitions.items():
        field = definition.get("properties", {}).get("mlflow")
        if field:
            found[name] = definitions[field["$ref"].rsplit("/", 1)[-1]]
    return found


@pytest.mark.parametrize(
    ("flow", "expected"),
    [
        (midtrain, {"MidtrainParams": "emt-training"}),
        (finetune, {"FinetuneParams": "emt-training"}),
        (pipeline, {"CurateParams": "emt-curation", "MidtrainStep": "emt-training", "FinetuneStep": "emt-training"}),
        (curate, {"CurateParams": "emt-curation"}),
    ],
)
def test_the_forms_default_experiment(flow, expected):
    found = _mlflow_definitions(flow)
    assert {name: d["properties"]["experiment"]["default"] for name, d in found.items()} == expected


def test_what_the_form_submits_by_default_goes_to_emt_training():
    (mlflow_form,) = _mlflow_definitions(midtrain).values()
    submitted = {name: field["default"] for name, field in mlflow_form["properties"].items()}
    params = MidtrainParams.model_validate(
        {"model": "/m", "manifest_uri": "/r/manifest.parquet", "output_uri": "/out", "mlflow": submitted}
    )
    assert params.mlflow.experiment == "emt-training"
    untouched = MidtrainParams.model_validate({"model": "/m", "manifest_uri": "/x", "output_uri": "/o"})
    assert untouched.mlflow.experiment == "emt-training"


def test_a_plain_mlflow_config_keeps_what_it_sets():
    unset = MidtrainStep(model="/m", output_uri="/o", mlflow=MlflowConfig(tracking_uri="sqlite:///t.db"))
    assert (unset.mlflow.experiment, unset.mlflow.tracking_uri) == ("emt-training", "sqlite:///t.db")
    named = MidtrainStep(model="/m", output_uri="/o", mlflow=MlflowConfig(experiment="mine"))
    assert named.mlflow.experiment == "mine"
    with pytest.raises(ValueError, match="always tracked"):
        MidtrainStep(model="/m", output_uri="/o", mlflow={"enabled": False})
