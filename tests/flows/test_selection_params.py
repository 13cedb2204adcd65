"""``CurateParams.selection``: the default is the top-K, and what the distributed selection cannot do is refused
naming the field (no flow run)."""

from __future__ import annotations

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


@pytest.mark.parametrize(
    "change,field",
    [
        ({"selection": {"mode": "importance"}, "ray": {"distributed_selection": True}}, "selection.mode"),
        ({"selection": {"dedup_threshold": 0.95}, "ray": {"distributed_selection": True}},
         "selection.dedup_threshold"),
        ({"selection": {"mode": "importance"}, "scorer": {"method": "knn"}}, "selection.mode"),
    ],
)
def test_refused_combinations_name_the_field(change, field):
    with pytest.raises(ValidationError, match=field):
        CurateParams.model_validate(BASE | change)
    ok = {k: v for k, v in change.items() if k != "selection"}
    CurateParams.model_validate(BASE | ok)  # the other setting alone is fine
