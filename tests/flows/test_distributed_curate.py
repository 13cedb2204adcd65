"""The curate flow with ``ray.distributed_selection``: the same manifest rows as the one-process run, written by the
workers as a directory of Parquet files that the report, the reader and one-line consumers take as they are."""

from __future__ import annotations

import pandas as pd
import pytest

from core.manifest import iter_selected, read_manifest, read_sidecar
from flows.curate import curate
from flows.params import CurateParams

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api", "ray_local")]


def test_distributed_selection_writes_the_one_process_manifest(local_corpus, tiny_backbone, tmp_path):
    params = CurateParams(
        pool=local_corpus.pool,
        robot=local_corpus.robot,
        backbone=tiny_backbone,
        k=20,
        output_uri=str(tmp_path / "runs"),
        ray={"embed_batch_size": 16},
        report_per_set=0,
        run_name="one",
    )
    one = curate(params)
    spread = curate(params.model_copy(update={
        "run_name": "spread", "report_per_set": 4,
        "ray": params.ray.model_copy(update={"distributed_selection": True, "shards_per_manifest_file": 1}),
    }))
    assert spread.shards_embedded == 0  # the cache served it: only scoring and selection ran again
    expected, got = read_manifest(one.manifest_uri), read_manifest(spread.manifest_uri)
    assert got.equals(expected) and expected["row_group"].null_count < expected.num_rows  # locations included
    sidecar = read_sidecar(spread.manifest_uri)
    assert sidecar["k"] == 20 and sidecar["selected"] == 20 == spread.selected
    assert len(sidecar["files"]) > 1 and spread.per_source == one.per_source
    assert pd.read_parquet(spread.manifest_uri).query("selected").shape[0] == 20  # one line, a directory
    assert sum(t.num_rows for t in iter_selected(spread.manifest_uri)) == 20
    assert spread.report_uri is not None
