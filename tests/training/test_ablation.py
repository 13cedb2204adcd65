"""The ablation's arms: the random arm's derived manifest is a seeded uniform draw of the pool with as many
samples as the curation selected, over the same rows, readable by the mid-training data path."""

from __future__ import annotations

import numpy as np

from core.manifest import iter_selected, read_manifest, read_sidecar
from training.ablation import random_manifest, uniform_draw


def test_uniform_draw_is_seeded_and_uniform():
    n, k, draws = 40, 8, 4000
    assert np.array_equal(uniform_draw(n, k, seed=3), uniform_draw(n, k, seed=3))
    assert not np.array_equal(uniform_draw(n, k, seed=3), uniform_draw(n, k, seed=4))
    counts = np.sum([uniform_draw(n, k, seed=s) for s in range(draws)], axis=0)
    assert set(np.sum([uniform_draw(n, k, seed=s) for s in range(10)], axis=1)) == {k}
    # every row is included with probability k/n: each count is Binomial(draws, k/n); 5 sd bounds every row
    p = k / n
    assert np.all(np.abs(counts - draws * p) < 5 * np.sqrt(draws * p * (1 - p))), counts
    # and the rows' inclusion does not depend on position (first half vs second half of the pool)
    assert abs(counts[: n // 2].sum() - counts[n // 2 :].sum()) < 5 * np.sqrt(draws * k)


def test_random_manifest_keeps_the_pool_and_k(manifest, tmp_path):
    out = random_manifest(manifest, str(tmp_path / "random" / "manifest.parquet"), seed=1)
    pool, drawn = read_manifest(manifest), read_manifest(out)
    assert drawn.drop(["selected"]).equals(pool.drop(["selected"]))  # the same rows, scores and ranks
    assert drawn["selected"].to_pylist() == uniform_draw(pool.num_rows, 8, seed=1).tolist()
    sidecar = read_sidecar(out)
    assert (sidecar["selected"], sidecar["rows"], sidecar["draw_seed"]) == (8, pool.num_rows, 1)
    assert sidecar["derived_from"] == manifest and sidecar["pool"] == read_sidecar(manifest)["pool"]
    assert sidecar["content_sha256"] != read_sidecar(manifest)["content_sha256"]
    selected = {sid for batch in iter_selected(out) for sid in batch["sample_id"].to_pylist()}
    expected = {sid for sid, s in zip(pool["sample_id"].to_pylist(), drawn["selected"].to_pylist(), strict=True)
                if s}
    assert selected == expected  # the mid-training reader streams exactly the drawn samples
