"""``CurateParams.selection``: the default is the top-K, every selection feature goes with every Ray setting, what
cannot work is refused naming the field, and the retired ``ray.distributed_selection`` is accepted with a warning
(no flow run)."""

from __future__ import annotations

import warnings

import pytest
from pydantic import ValidationError

from flows.params import CurateParams

BASE = {
    "pool": [{"name": "p", "format": "webdataset", "uri": "/data/pool"}],
    "robot": [{"name": "r", "format": "lerobot", "uri": "/data/robot"}],
    "backbone": {"kind": "open_clip", "model": "ViT-B-32"},
    "k": 3,
    "output_uri": "/out",
}


def test_selection_defaults_to_top_k_and_is_a_result_parameter():
    params = CurateParams.model_validate(BASE)
    assert (params.selection.mode, params.selection.dedup_threshold) == ("top_k", None)
    drawn = CurateParams.model_validate(BASE | {"selection": {"mode": "importance", "seed": 4}})
    assert drawn.result_params()["selection"] == {"mode": "importance", "seed": 4, "dedup_threshold": None}


def test_refused_combinations_name_the_field():
    change = {"selection": {"mode": "importance"}, "scorer": {"method": "knn"}}
    with pytest.raises(ValidationError, match="selection.mode"):
        CurateParams.model_validate(BASE | change)
    CurateParams.model_validate(BASE | {"scorer": {"method": "knn"}})  # the other setting alone is fine


EVERYTHING = {"selection": {"mode": "importance", "seed": 2, "dedup_threshold": 0.9}, "per_source_cap": {"p": 2},
              "ray": {"selection_workers": 3, "shards_per_manifest_file": 4}}


def test_every_selection_feature_goes_with_any_ray_setting():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation line for a config that does not name the retired field
        params = CurateParams.model_validate(BASE | EVERYTHING)
    assert params.per_source_cap == {"p": 2} and params.ray.selection_workers == 3


@pytest.mark.parametrize("value", [True, False])
def test_the_retired_distributed_selection_is_accepted_with_a_deprecation_line(value):
    config = BASE | EVERYTHING | {"ray": EVERYTHING["ray"] | {"distributed_selection": value}}
    with pytest.warns(FutureWarning, match=r"ray\.distributed_selection is deprecated") as caught:
        params = CurateParams.model_validate(config)
    assert len(caught) == 1 and "selection_workers" in str(caught[0].message)  # says where the option went
    assert params == CurateParams.model_validate(BASE | EVERYTHING)  # ignored: one engine either way
    assert "distributed_selection" not in params.model_dump_json()


def test_a_deployment_run_with_the_retired_field_passes_prefects_check():
    """Prefect checks a run's parameters against the flow's schema before the flow sees them: the retired field is
    there (deprecated), so a deployment saved with it runs and gets the deprecation line."""
    from prefect.utilities.schema_tools.validation import validate

    from flows.curate import curate

    params = BASE | {"ray": {"distributed_selection": True}}
    validate({"params": params}, curate.parameters.model_dump_for_openapi(), raise_on_error=True)
    ray = curate.parameters.model_dump_for_openapi()["definitions"]["RayConfig"]["properties"]
    assert ray["distributed_selection"]["deprecated"] is True
