"""build_report on a tiny fake run (the `fake_run` fixture of this folder's conftest)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.manifest import read_manifest, read_sidecar, write_manifest
from synth import CorpusInfo
from tasks.report import build_report
from tasks.report.sample import load_sets

DIM = 16


def test_load_sets_bounded_and_labelled(fake_run: str, local_corpus: CorpusInfo) -> None:
    data = load_sets(fake_run, per_set=7, seed=1)
    names = {s.name for s in local_corpus.pool} | {s.name for s in local_corpus.robot} | {"selected", "pool"}
    assert set(data.sets) == names
    assert all(0 < len(v) <= 7 and v.shape[1] == DIM for v in data.sets.values())
    assert len(data.map_points) == len(data.map_labels) == len(data.map_selected)
    again = load_sets(fake_run, per_set=7, seed=1)
    np.testing.assert_array_equal(again.sets["pool"], data.sets["pool"])


def test_build_report_writes_offline_html_metrics_and_pngs(fake_run: str, tmp_path: Path) -> None:
    result = build_report(fake_run, out_uri=str(tmp_path / "report"), per_set=30, examples=4)
    page = Path(result.html_uri).read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", page)
    metrics = json.loads(Path(result.metrics_uri).read_text())
    for key in ("mmd2", "diversity", "score_quantiles", "selection_by_source", "bandwidth", "unbiased", "per_set"):
        assert key in metrics
    assert metrics["unbiased"] is True and metrics["per_set"] == 30
    mmd = metrics["mmd2"]
    assert mmd["selected"]["selected"] == 0.0 and mmd["pool"]["selected"] == mmd["selected"]["pool"]
    assert {"top_selected", "lowest_scored", "mmd_heatmap", "embedding_map"} <= set(result.figure_uris)
    for uri in result.figure_uris.values():
        with Image.open(io.BytesIO(Path(uri).read_bytes())) as im:
            assert im.format == "PNG" and im.size[0] > 50


def test_report_states_the_selection_and_readable_settings(fake_run: str, tmp_path: Path, capsys) -> None:
    result = build_report(fake_run, out_uri=str(tmp_path / "report"), per_set=10, examples=0)
    page = Path(result.html_uri).read_text()
    manifest = read_manifest(fake_run).to_pandas()
    kth = manifest[manifest["selected"]].nlargest(1, "rank")["score"].item()
    selection = result.metrics["selection"]
    assert selection["k"] == 20 and selection["fraction"] == 20 / len(manifest)
    assert selection["score_threshold"] == pytest.approx(kth)
    assert '<th class="k">K</th><td class="k">20</td>' in page
    assert f'<th class="k">score threshold</th><td class="k">{kth:.4g}</td>' in page
    assert f"{20 / len(manifest):.2%} of {len(manifest)} samples" in page
    # a sidecar from before selection modes: the top-K, no near-duplicate removal
    assert '<th class="k">mode</th><td class="k">top_k</td>' in page
    assert '<th class="k">near-duplicates skipped</th><td class="k">off</td>' in page
    # the scorer and the backbone as rows of a table, never a JSON blob
    assert '<th class="k">method</th><td class="k">probe</td>' in page
    assert '<th class="k">trained.val_accuracy</th><td class="k">0.9123</td>' in page
    assert '<th class="k">fingerprint</th><td class="k">fake-fp</td>' in page
    assert "{&quot;" not in page and '{"' not in page
    # each figure is explained in words
    for words in ("the dashed line is the threshold", "share of the pool beside its share of the selected set",
                  "2-D t-SNE", "squared MMD between two sets"):
        assert words in page
    out = capsys.readouterr().out
    assert "report: 0/5 steps" in out and "report: 5/5 steps, in " in out


def test_report_states_the_selection_mode_seed_and_skipped_duplicates(fake_run: str, tmp_path: Path) -> None:
    sidecar = read_sidecar(fake_run)
    sidecar["selection"] = {"mode": "importance", "seed": 7, "dedup_threshold": 0.95, "duplicates_skipped": 4}
    uri = str(tmp_path / "manifest.parquet")
    write_manifest(uri, [read_manifest(fake_run)], sidecar)
    result = build_report(uri, per_set=5, examples=0)
    page = Path(result.html_uri).read_text()
    assert '<th class="k">mode</th><td class="k">importance (seed 7)</td>' in page
    assert '<th class="k">near-duplicates skipped</th><td class="k">4 (cosine ≥ 0.95)</td>' in page
    assert "drawn without replacement" in page
    assert result.metrics["selection"]["duplicates_skipped"] == 4 and result.metrics["selection"]["seed"] == 7


def test_build_report_defaults_next_to_manifest(fake_run: str) -> None:
    result = build_report(fake_run, per_set=10, examples=0)
    assert result.html_uri == str(Path(fake_run).parent / "report.html")
    assert Path(result.html_uri).exists() and "top_selected" not in result.figure_uris


def test_build_report_announces_each_step_as_it_starts(fake_run: str, tmp_path: Path) -> None:
    """The curate flow moves its UI progress bar on these calls: the report was the longest step and showed nothing."""
    seen: list[tuple[str, int, int]] = []
    build_report(fake_run, out_uri=str(tmp_path / "report"), per_set=10, examples=0,
                 on_step=lambda name, done, total: seen.append((name, done, total)))
    assert [done for _, done, _ in seen] == [0, 1, 2, 3, 4] and {total for *_, total in seen} == {5}
    assert [name for name, *_ in seen][2] == "figures and the 2-D map"
