"""Training fixtures: a tiny VLM saved to disk, and a real manifest over the tiny corpus' pool that selects a
few samples of every source (captions and QA texts)."""

from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.manifest import write_manifest
from core.read import Quarantine, read_source
from core.settings import SourceSpec
from synth import CorpusInfo, write_lerobot_dataset
from synth.robot import scripted_episode
from training.vlm import save_tiny_vlm


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_vlm(str(tmp_path_factory.mktemp("tiny-vlm")), seed=0)


def make_manifest(uri: str, corpus: CorpusInfo, *, per_source: int) -> str:
    """Every pool sample scored; the first ``per_source`` of each source selected."""
    parts = []
    for spec in corpus.pool:
        table = pa.concat_tables(read_source(spec, quarantine=Quarantine()))
        n = table.num_rows
        parts.append(pa.table({
            "sample_id": table["sample_id"], "source": table["source"], "shard_uri": table["shard_uri"],
            "key": table["key"], "score": pa.array([1.0 - i / n for i in range(n)], pa.float32()),
            "rank": pa.array(range(n), pa.int64()), "selected": pc.less(pa.array(range(n)), per_source)}))
    write_manifest(uri, parts, {"run_id": "test", "pool": [s.model_dump(mode="json") for s in corpus.pool]})
    return uri


@pytest.fixture(scope="session")
def manifest(tmp_path_factory: pytest.TempPathFactory, local_corpus: CorpusInfo) -> str:
    """2 selected samples from each of the 4 pool sources: 8 samples."""
    return make_manifest(str(tmp_path_factory.mktemp("curated") / "manifest.parquet"), local_corpus, per_source=2)


def write_robot_dataset(uri: str, *, episodes: int = 3, frames: int = 6, action_dims: int = 7) -> SourceSpec:
    """A LeRobot v3 dataset of scripted pick-and-place episodes, with actions cut to ``action_dims``."""
    made = [scripted_episode("pick_place", np.random.default_rng(100 + e), size=32, frames=frames)
            for e in range(episodes)]
    write_lerobot_dataset(uri, made, episodes_per_file=2)
    if action_dims != 7:  # the writer records 7-dim actions: cut them in the data files
        for path in glob.glob(f"{uri}/data/*/*.parquet"):
            table = pq.read_table(path)
            cut = pa.array([a[:action_dims] for a in table["action"].to_pylist()], pa.list_(pa.float32()))
            pq.write_table(table.set_column(table.schema.get_field_index("action"), "action", cut), path)
    return SourceSpec(name=os.path.basename(uri.rstrip("/")), format="lerobot", uri=uri)
