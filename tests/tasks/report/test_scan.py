"""The report's one pass over a manifest: the same summaries and samples from one file or from part files, whatever
the batch size, and the tables the whole manifest in pandas gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.manifest import write_manifest
from tasks.report import scan as scan_module
from tasks.report.scan import manifest_rows, scan_manifest
from tasks.report.scores import FINE_BINS, ScoreSummary

SHARD_ROWS = 2500


def manifest_table(shards: int = 6, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = shards * SHARD_ROWS
    source = np.repeat([f"src{i % 3}" for i in range(shards)], SHARD_ROWS)
    shard = np.repeat([f"mem://shard-{i}" for i in range(shards)], SHARD_ROWS)
    key = np.tile([str(j) for j in range(SHARD_ROWS)], shards)
    score = (rng.normal(size=n) + np.char.str_len(source.astype(str))).astype(np.float32)
    score[:50] = score[0]  # ties: equal scores rank in pool order
    rank = np.empty(n, np.int64)
    rank[np.argsort(-score, kind="stable")] = np.arange(n)
    return pa.table({"sample_id": [f"{s}/{k}" for s, k in zip(shard, key, strict=True)], "source": source,
                     "shard_uri": shard, "key": key, "score": score, "rank": rank, "selected": rank < 700})


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> tuple[pa.Table, str, str]:
    root = tmp_path_factory.mktemp("manifests")
    table = manifest_table()
    single = str(root / "one" / "manifest.parquet")
    write_manifest(single, [table], {"run_id": "x"})
    parted = root / "parts" / "manifest.parquet"
    parted.mkdir(parents=True)
    files = []
    for q, a in enumerate(range(0, table.num_rows, 4 * SHARD_ROWS)):
        files.append(f"part-{q:05d}.parquet")
        pq.write_table(table.slice(a, 4 * SHARD_ROWS), parted / files[-1], row_group_size=SHARD_ROWS)
    (root / "parts" / "manifest.json").write_text(json.dumps({"files": files}))
    return table, single, str(parted)


def test_one_file_or_part_files_and_any_batch_size_give_the_same_scan(manifests, monkeypatch):
    table, single, parted = manifests
    first = scan_manifest(single, per_set=40, seed=2, examples=5)
    monkeypatch.setattr(scan_module, "BATCH_ROWS", 999)
    for again in (scan_manifest(parted, per_set=40, seed=2, examples=5),
                  scan_manifest(single, per_set=40, seed=2, examples=5)):
        assert again.rows == first.rows == table.num_rows
        assert again.shard_uris == first.shard_uris and np.array_equal(again.shard_starts, first.shard_starts)
        assert set(again.samples) == set(first.samples) == {"src0", "src1", "src2", "selected", "pool"}
        for name, sample in first.samples.items():
            for column, values in sample.items():
                np.testing.assert_array_equal(again.samples[name][column], values)
        pd.testing.assert_frame_equal(again.scores.quantiles(), first.scores.quantiles())
        np.testing.assert_array_equal(again.lowest, first.lowest)
        np.testing.assert_array_equal(again.top, first.top)
    other = scan_manifest(single, per_set=40, seed=3, examples=5)
    assert not np.array_equal(other.samples["pool"]["position"], first.samples["pool"]["position"])


def test_samples_belong_to_their_sets_and_locate_their_rows(manifests):
    table, single, _ = manifests
    df = table.to_pandas()
    scan = scan_manifest(single, per_set=40, seed=0)
    assert scan.shard_uris == [f"mem://shard-{i}" for i in range(6)]
    assert scan.shard_starts.tolist() == [i * SHARD_ROWS for i in range(6)]
    for name, sample in scan.samples.items():
        rows = df.iloc[sample["position"]]
        assert len(rows) == 40 and np.all(np.diff(sample["position"]) > 0)
        assert (scan.shard_starts[sample["shard"]] + sample["row"]).tolist() == sample["position"].tolist()
        assert [scan.scores.sources[c] for c in sample["source"]] == rows["source"].tolist()
        assert sample["selected"].tolist() == rows["selected"].tolist()
        if name.startswith("src"):
            assert set(rows["source"]) == {name}
        if name == "selected":
            assert rows["selected"].all()


def test_summaries_and_examples_match_the_whole_manifest(manifests):
    table, single, _ = manifests
    df = table.to_pandas()
    scan = scan_manifest(single, per_set=10, examples=6)
    by_source = df.groupby("source")["selected"].agg(pool="size", selected="sum")
    assert scan.scores.by_source()[["pool", "selected"]].to_dict() == by_source.astype(int).to_dict()
    assert scan.scores.threshold == df.loc[df["selected"], "score"].min()
    assert scan.lowest.tolist() == df.nsmallest(6, "score").index.tolist()
    assert scan.top.tolist() == df[df["selected"]].nsmallest(6, "rank").index.tolist()
    rows = manifest_rows(single, None, scan.top[::-1])
    assert rows["rank"].to_pylist() == sorted(df[df["selected"]]["rank"])[:6][::-1]
    q = scan.scores.quantiles()
    width = (df["score"].max() - df["score"].min()) / FINE_BINS
    for name, scores in [("(all)", df["score"]), ("(selected)", df.loc[df["selected"], "score"]),
                         *((s, g["score"]) for s, g in df.groupby("source"))]:
        expected = np.quantile(scores.to_numpy(np.float64), [0.05, 0.25, 0.5, 0.75, 0.95])
        np.testing.assert_allclose(q.loc[name, ["q05", "q25", "q50", "q75", "q95"]], expected, atol=width)
        assert q.loc[name, "mean"] == pytest.approx(scores.mean(), rel=1e-6)


def test_quantiles_are_exact_while_a_bin_holds_one_distinct_score_and_the_figure_sums_fine_bins():
    df = pd.DataFrame({"source": ["a"] * 5 + ["b"] * 4, "score": [3.0, -1.0, 7.5, 0.25, 2.0, 9.0, 9.0, 1.0, 4.0],
                       "selected": [True, False, True, False, False, True, True, False, False]})
    summary = ScoreSummary.of(df)
    for name, scores in [("a", df.score[:5]), ("b", df.score[5:]), ("(all)", df.score)]:
        expected = np.quantile(scores, [0.05, 0.25, 0.5, 0.75, 0.95])
        assert summary.quantiles().loc[name, ["q05", "q25", "q50", "q75", "q95"]].tolist() == expected.tolist()
    edges, counts = summary.figure()
    np.testing.assert_allclose(edges, np.histogram_bin_edges(df.score, 40))
    assert counts["a"].tolist() == np.histogram(df.score[:5], edges)[0].tolist()
    assert summary.threshold == 3.0
    none = ScoreSummary.of(df.assign(selected=False))
    assert none.threshold is None and none.quantiles().loc["(selected)"].isna().all()


def test_a_part_file_without_statistics_still_gives_the_score_range(tmp_path):
    table = manifest_table(shards=2)
    path = tmp_path / "m.parquet"
    pq.write_table(table, path, write_statistics=False)
    Path(str(path).replace(".parquet", ".json")).write_text("{}")
    scan = scan_manifest(str(path), per_set=5)
    assert (scan.scores.low, scan.scores.high) == (float(np.min(table["score"])), float(np.max(table["score"])))
