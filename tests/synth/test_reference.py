"""The reference manifest the local stack seeds: the manifest contract, the ground truth's top fraction selected,
and readable by the same code mid-training reads a curation's manifest with."""

from __future__ import annotations

import pyarrow.parquet as pq

from core.manifest import iter_selected, read_manifest, read_sidecar
from core.read import Quarantine
from synth import SynthConfig, generate_corpus
from synth.reference import write_reference_manifest


def test_reference_manifest_selects_the_most_aligned_samples_and_reads_back(tmp_path):
    corpus = generate_corpus(str(tmp_path / "corpus"), SynthConfig(samples_per_source=20, shard_size=8, image_size=16))
    uri = str(tmp_path / "reference" / "manifest.parquet")
    sidecar = write_reference_manifest(corpus, uri, fraction=0.25)

    manifest = read_manifest(uri).to_pandas()
    truth = pq.read_table(corpus.ground_truth_uri, columns=["sample_id", "alignment"]).to_pandas()
    pool_size = len(truth)
    assert len(manifest) == pool_size == sidecar["rows"]
    keep = round(0.25 * pool_size)
    assert manifest["selected"].sum() == keep == sidecar["selected"] == sidecar["k"]
    merged = manifest.merge(truth, on="sample_id")
    assert (merged["score"] == merged["alignment"].astype("float32")).all()
    # Every selected sample is at least as aligned as every one left out.
    assert merged.loc[merged.selected, "alignment"].min() >= merged.loc[~merged.selected, "alignment"].max()
    assert sorted(manifest["rank"]) == list(range(pool_size))
    assert read_sidecar(uri)["run_id"] == "reference"

    quarantine = Quarantine()
    rows = sum(t.num_rows for t in iter_selected(uri, quarantine=quarantine))
    assert rows == keep and not quarantine.rows
