"""The reference manifest of a synthetic corpus: every pool sample scored by its ground-truth robot alignment (the
answer a perfect curation would give), the top ``fraction`` selected, written with the product's manifest writer.

It is what a curation run's manifest is (same contract, sidecar, sample locations), made without embedding
anything: the local stack seeds it so that mid-training has a manifest to start from on a fresh stack (the Prefect
`midtrain` deployment's default), and a real curation run's manifest replaces it by pointing `manifest_uri` there.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.contracts import LOCATION_NAMES
from core.manifest import write_manifest
from core.read import Quarantine, read_source
from core.settings import StorageConfig
from core.storage import filesystem
from synth.corpus import CorpusInfo

_COLUMNS = ("sample_id", "source", "shard_uri", "key", *LOCATION_NAMES)


def write_reference_manifest(corpus: CorpusInfo, uri: str, storage: StorageConfig | None = None, *,
                             fraction: float = 0.1) -> dict:
    """Write the reference manifest of ``corpus`` at ``uri`` (and its sidecar); returns the sidecar."""
    fs, path = filesystem(corpus.ground_truth_uri, storage)
    with fs.open(path, "rb") as f:
        truth = pq.read_table(f, columns=["sample_id", "alignment"])
    alignment = dict(zip(truth["sample_id"].to_pylist(), truth["alignment"].to_pylist(), strict=True))
    quarantine = Quarantine()
    rows = pa.concat_tables(
        table.select([c for c in _COLUMNS if c in table.column_names])
        for spec in corpus.pool for table in read_source(spec.bind(storage), quarantine=quarantine)
    )
    score = np.array([alignment[s] for s in rows["sample_id"].to_pylist()], np.float32)
    order = np.lexsort((rows["sample_id"].to_numpy(zero_copy_only=False), -score))  # ties: by id, deterministic
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    keep = max(1, round(fraction * len(order)))
    manifest = rows.append_column("score", pa.array(score)).append_column("rank", pa.array(rank)).append_column(
        "selected", pa.array(rank < keep))
    sidecar = {
        "run_id": "reference",
        "kind": "reference: ground-truth alignment of the synthetic corpus (no embedding, no estimator)",
        "k": keep,
        "pool": [s.model_dump(mode="json") for s in corpus.pool],
        "quarantined": dict(quarantine.counts),
    }
    return write_manifest(uri, [manifest], sidecar, storage)
