"""The `curate` form's k/fraction refusal, as the Prefect server words it: the flow's parameter schema checked by
Prefect's own validator, the way the UI's form check (`/ui/schemas/validate`) and a run's creation do it, on the
deployment's defaults from prefect.yaml with k added, fraction removed, or one of them alone."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml
from prefect.utilities.schema_tools.validation import ValidationError, build_error_obj, validate

from core.settings import SourceSpec
from flows.curate import curate
from flows.params import CurateParams

ROOT = Path(__file__).resolve().parents[2]


def form_errors(change: dict) -> list[str]:
    """The messages the form shows under `fraction` for the deployment's defaults changed by ``change``."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    params = next(d for d in spec["deployments"] if d["name"] == "curate")["parameters"]["params"] | change
    schema = curate.parameters.model_dump_for_openapi()
    errors = build_error_obj(validate({"params": params}, schema, preprocess=True, raise_on_error=False))
    fields = [f for e in errors["errors"] for f in e["errors"] if f.get("property") == "fraction"]
    return [message for f in fields for message in f["errors"]]


@pytest.mark.parametrize(("change", "shown"), [
    ({"k": 5}, ["'give k or fraction, not both' was expected"]),
    ({"fraction": None}, ["'give k or fraction' was expected"]),
    ({"k": 5, "fraction": None}, []),
    ({}, []),
])
def test_k_and_fraction_refusal_says_what_to_do(change, shown):
    assert form_errors(change) == shown


def test_a_run_with_both_is_refused_with_the_same_words():
    """What the server answers to a flow run created with both (the UI's Submit, `prefect deployment run`)."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    params = next(d for d in spec["deployments"] if d["name"] == "curate")["parameters"]["params"] | {"k": 5}
    with pytest.raises(ValidationError, match="params.fraction'. Failure reason: 'give k or fraction, not both'"):
        validate({"params": params}, curate.parameters.model_dump_for_openapi(), raise_on_error=True)


def test_sources_reach_their_storage_through_prefect_and_ray():
    """Prefect keeps the parameters as JSON and Ray pickles them: either way every source comes back bound to the
    run's storage, and neither the form nor the stored JSON holds a source's storage."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    given = next(d for d in spec["deployments"] if d["name"] == "curate")["parameters"]["params"]
    params = CurateParams.model_validate(given | {"storage": {"endpoint_url": "http://127.0.0.1:9000"}})
    for copy in (pickle.loads(pickle.dumps(params)), CurateParams.model_validate_json(params.model_dump_json())):
        assert all(s.storage == params.storage for s in copy.pool + copy.robot) and copy.cache == params.cache
    assert all("storage" not in s for s in params.model_dump(mode="json")["pool"])
    assert "storage" not in SourceSpec.model_json_schema()["properties"]
