"""The ablation's arms: the random arm's derived manifest is a seeded uniform draw of the pool with as many
samples as the curation selected, over the same rows, readable by the mid-training data path; the sources arm's
draws as many from the best sources by mean score only."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.manifest import iter_selected, read_manifest, read_sidecar, write_manifest
from training.ablation import best_sources, random_manifest, sources_manifest, uniform_draw


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


def test_sources_manifest_draws_k_from_the_best_sources_by_mean_score(manifest, tmp_path):
    pool = read_manifest(manifest)
    boost = {"tabletop": 0.5, "photos": 0.3, "docs": 0.0, "charts": -0.2}  # per-source shift of every score
    shift = pa.array([boost[s] for s in pool["source"].to_pylist()], pa.float32())
    scored = pool.set_column(pool.schema.get_field_index("score"), "score", pc.add(pool["score"], shift))
    src = str(tmp_path / "scored" / "manifest.parquet")
    write_manifest(src, [scored], read_sidecar(manifest))
    assert best_sources(scored, 2) == ["tabletop", "photos"]
    out = sources_manifest(src, str(tmp_path / "sources" / "manifest.parquet"), top=2, seed=3)
    drawn = read_manifest(out)
    picked = [s for s, keep in zip(drawn["source"].to_pylist(), drawn["selected"].to_pylist(), strict=True) if keep]
    assert len(picked) == 8 and set(picked) <= {"tabletop", "photos"}
    assert drawn["sample_id"].to_pylist() == read_manifest(src)["sample_id"].to_pylist()  # the same rows
    sidecar = read_sidecar(out)
    assert sidecar["sources"] == ["tabletop", "photos"] and sidecar["selection"] == "sources"
    again = read_manifest(sources_manifest(src, str(tmp_path / "again" / "manifest.parquet"), top=2, seed=3))
    assert again["selected"].equals(drawn["selected"])  # seeded
    few = read_manifest(sources_manifest(src, str(tmp_path / "few" / "manifest.parquet"), top=1, seed=0))
    assert sum(few["selected"].to_pylist()) == 8  # 24 tabletop rows hold K = 8
