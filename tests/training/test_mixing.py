"""General data mixed into mid-training: the stream holds the ratio asked for, in an order fixed by the seed;
general rows come from the manifest's unselected rows or a second manifest, sampled to ``max_samples``; a mix
with no general data is refused naming the field; a mixed mid-training run trains on both."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
from conftest import make_manifest

from synth import CorpusInfo
from training.config import ChatDataConfig, MidtrainConfig, MixSpec, TrainConfig
from training.metrics import MemoryTracker
from training.midtrain_data import ManifestSource
from training.mixing import MixedSource, general_rows
from training.recipes import midtrain
from training.sources import read_manifest


def test_the_mixed_stream_keeps_every_primary_item_and_the_ratio():
    primary = lambda epoch: (("p", epoch, i) for i in range(4000))  # noqa: E731
    general = lambda epoch: (("g", epoch, i) for i in range(7))  # noqa: E731
    items = list(MixedSource(primary, general, ratio=0.25, seed=3)(0))
    assert [x for x in items if x[0] == "p"] == list(primary(0))  # in order, none lost
    share = sum(x[0] == "g" for x in items) / len(items)
    assert abs(share - 0.25) < 0.02
    gen = [x for x in items if x[0] == "g"]
    assert gen[:9] == [("g", 0, i) for i in range(7)] + [("g", 1, 0), ("g", 1, 1)]  # cycled through its epochs
    assert items == list(MixedSource(primary, general, ratio=0.25, seed=3)(0))  # seed + epoch fix the order
    assert items != list(MixedSource(primary, general, ratio=0.25, seed=3)(1))


def test_general_rows_are_the_unselected_or_another_manifests_selected(manifest: str, local_corpus: CorpusInfo,
                                                                      tmp_path):
    table = read_manifest(manifest)
    uri, rows = general_rows(manifest, MixSpec(ratio=0.5))
    assert uri == manifest and rows.num_rows == table.num_rows - pc.sum(table["selected"]).as_py()
    assert not pc.any(rows["selected"]).as_py()
    mixed = {x[0] for x in MixedSource(ManifestSource(manifest), ManifestSource(uri, rows=rows), ratio=0.5,
                                       seed=0)(0)}
    selected = set(table.filter(table["selected"])["sample_id"].to_pylist())
    assert selected < mixed and mixed - selected <= set(rows["sample_id"].to_pylist())
    _, few = general_rows(manifest, MixSpec(ratio=0.5, max_samples=5), seed=1)
    assert few.num_rows == 5 and set(few["sample_id"].to_pylist()) <= set(rows["sample_id"].to_pylist())
    other = make_manifest(str(tmp_path / "general" / "manifest.parquet"), local_corpus, per_source=1)
    uri, rows = general_rows(manifest, MixSpec(ratio=0.5, manifest_uri=other))
    assert uri == other and rows.num_rows == len(local_corpus.pool)
    samples = [x for x in ManifestSource(uri, rows=rows)(0)]
    assert sorted(s[0] for s in samples) == sorted(rows["sample_id"].to_pylist())  # read back from the shards
    with pytest.raises(ValueError, match=r"^data\.mix\.manifest_uri"):
        general_rows(manifest, MixSpec(ratio=0.5, manifest_uri=str(tmp_path / "none.parquet")))
    everything = make_manifest(str(tmp_path / "all" / "manifest.parquet"), local_corpus, per_source=10**6)
    with pytest.raises(ValueError, match=r"^data\.mix: no general samples"):
        general_rows(everything, MixSpec(ratio=0.5))


def test_mid_training_with_a_mix_records_it(tiny_vlm: str, manifest: str, tmp_path):
    tracker = MemoryTracker()
    config = MidtrainConfig(model=tiny_vlm, manifest_uri=manifest, output_uri=str(tmp_path / "out"),
                            data=ChatDataConfig(mix=MixSpec(ratio=0.3, max_samples=20)),
                            train=TrainConfig(steps=3, batch_size=4, shuffle_buffer=8, log_every=1))
    result = midtrain(config, tracker)
    assert result.steps == 3 and result.samples == 12
    assert tracker.params["data.mix.ratio"] == 0.3 and tracker.params["data.mix.max_samples"] == 20
