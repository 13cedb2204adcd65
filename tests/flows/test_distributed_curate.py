"""The curate flow selects with the one selection engine: its manifest is a plain ranking of its own scores, the same
whatever the number of workers or files (a config naming the retired ``ray.distributed_selection`` runs, with a
deprecation line), and caps, an importance draw and dedup ride through the flow. The manifest is a directory of
Parquet files that the report, the reader and one-line consumers take as they are."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.manifest import iter_selected, read_manifest, read_sidecar
from flows.curate import curate
from flows.params import CurateParams

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api", "ray_local")]


def test_the_flow_selects_with_one_engine_whatever_its_workers(local_corpus, tiny_backbone, tmp_path):
    params = CurateParams(
        pool=local_corpus.pool,
        robot=local_corpus.robot,
        backbone=tiny_backbone,
        k=20,
        output_uri=str(tmp_path / "runs"),
        ray={"embed_batch_size": 16, "selection_workers": 1},
        report_per_set=0,
        run_name="one",
    )
    one = curate(params)
    expected = read_manifest(one.manifest_uri)
    scores = expected["score"].to_numpy()
    order = np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))  # higher first, ties in pool order
    rank = np.empty(len(scores), np.int64)
    rank[order] = np.arange(len(scores))
    np.testing.assert_array_equal(expected["rank"].to_numpy(), rank)
    np.testing.assert_array_equal(expected["selected"].to_numpy(zero_copy_only=False), rank < 20)
    assert expected["row_group"].null_count < expected.num_rows  # locations included

    config = params.model_dump(mode="json") | {"run_name": "spread", "report_per_set": 4}
    config["ray"] |= {"distributed_selection": True, "selection_workers": 3, "shards_per_manifest_file": 1}
    with pytest.warns(FutureWarning, match="distributed_selection"):
        spread_params = CurateParams.model_validate(config)
    spread = curate(spread_params)
    assert spread.shards_embedded == 0  # the cache served it: only scoring and selection ran again
    got = read_manifest(spread.manifest_uri)
    assert got.equals(expected)
    sidecar = read_sidecar(spread.manifest_uri)
    assert sidecar["content_sha256"] == read_sidecar(one.manifest_uri)["content_sha256"]
    assert sidecar["k"] == 20 and sidecar["selected"] == 20 == spread.selected
    assert len(sidecar["files"]) > 1 and spread.per_source == one.per_source
    assert pd.read_parquet(spread.manifest_uri).query("selected").shape[0] == 20  # one line, a directory
    assert sum(t.num_rows for t in iter_selected(spread.manifest_uri)) == 20
    assert spread.report_uri is not None

    capped = local_corpus.pool[0].name
    drawn = curate(CurateParams.model_validate(params.model_dump(mode="json") | {
        "run_name": "drawn", "per_source_cap": {capped: 2},
        "selection": {"mode": "importance", "seed": 1, "dedup_threshold": 0.999},
    }))
    table = read_manifest(drawn.manifest_uri)
    np.testing.assert_array_equal(table["rank"].to_numpy(), rank)  # the rank stays the score's
    chosen = table.filter(table["selected"]).to_pandas()
    assert len(chosen) == 20 and (chosen["source"] == capped).sum() <= 2
    assert drawn.selection["mode"] == "importance" and drawn.selection["seed"] == 1
    assert read_sidecar(drawn.manifest_uri)["selection"] == drawn.selection
