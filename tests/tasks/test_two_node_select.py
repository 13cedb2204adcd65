"""The selection engine on a two-node Ray cluster started on this machine (``ray.cluster_utils``): the manifest is
the independent expectation's (``selection_expect``: a plain numpy ranking of the same scores), with a per-source cap
and an importance draw. The cluster runs in a child process, apart from the test run's local Ray, on a
machine as fresh as Ray sees it: its default temporary directory (``$TMPDIR/ray``) does not exist."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, pyarrow as pa, ray
    from ray.cluster_utils import Cluster
    from core.contracts import ERRORS
    from flows.runtime import ray_default_temp
    from core.manifest import read_manifest
    from estimator.baselines import MeanDistanceScorer
    from core.location import Location
    from tasks.cache import EmbeddingCache
    from tasks.distributed_select import DistributedSelection, score_select_write
    from tasks.score import CachedShard
    from tasks.select import SelectionConfig
    from tests.tasks.selection_expect import expected_manifest

    root = sys.argv[1]
    cache = EmbeddingCache(root=Location(root + "/cache"), fingerprint="fp")
    rng = np.random.default_rng(3)
    distinct = rng.standard_normal((6, 8)).astype(np.float32)
    shards = []
    for i, rows in enumerate([30, 12, 0, 41, 25, 18]):
        shard = CachedShard(source=f"s{i % 2}", shard_uri=f"/d/{i}.tar", shard=f"{i}.tar",
                            entry=cache.at(f"{root}/cache/fp/{i}"))
        x = distinct[rng.integers(0, 6, rows)]
        cache.write(shard.entry, shard.shard_uri,
                    pa.table({"key": [str(j) for j in range(rows)],
                              "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 8)}),
                    ERRORS.empty_table(), "float32")
        shards.append(shard)
    scorer = MeanDistanceScorer(distinct[:2])
    selection, caps = SelectionConfig(mode="importance", seed=1), {"s0": 9}
    expected, skipped = expected_manifest(cache, shards, scorer, 17, selection=selection, caps=caps)

    from ray._private import ray_constants
    ray_constants.ENABLE_RAY_CLUSTER = False  # every node and the driver on 127.0.0.1 (see flows.runtime.local_ray)
    node = {"num_cpus": 1, "include_dashboard": False}
    with ray_default_temp(sys.argv[2]):  # Cluster writes its address to Ray's default temporary directory
        cluster = Cluster(initialize_head=True, head_node_args={**node, "temp_dir": sys.argv[2]})
        cluster.add_node(**node)
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            alive = [n for n in ray.nodes() if n["Alive"]]
            sidecar = score_select_write(
                cache=cache, pool=shards, scorer=scorer, manifest_uri=root + "/manifest.parquet", sidecar={}, k=17,
                fraction=None, selection=selection, per_source_cap=caps,
                options=DistributedSelection(shards_per_file=2, workers=2, ranges=3, cpus=1),
            )
        finally:
            ray.shutdown()
            cluster.shutdown()
    got = read_manifest(root + "/manifest.parquet")
    print(json.dumps({"nodes": len(alive), "same": got.equals(expected.cast(got.schema)),
                      "selected": sidecar["selected"], "rows": sidecar["rows"],
                      "skipped": sidecar["selection"]["duplicates_skipped"] == skipped}))
    """
)


def test_two_node_cluster_writes_the_expected_manifest(tmp_path: Path):
    repo = Path(__file__).resolve().parents[2]
    fresh = tmp_path / "tmp"  # the child's TMPDIR: Ray's default temporary directory would be fresh/ray
    fresh.mkdir()
    with tempfile.TemporaryDirectory(prefix="emt-2n-", dir="/tmp") as ray_tmp:  # Ray's socket paths must be short
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path), ray_tmp], cwd=repo, capture_output=True, text=True,
            timeout=540, env={"PYTHONPATH": str(repo), "RAY_AUTH_MODE": "disabled", "PATH": "/usr/bin:/bin",
                              "TMPDIR": str(fresh)},
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (fresh / "ray").exists(), "Ray wrote to its shared default temporary directory"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"nodes": 2, "same": True, "selected": 17, "rows": 126, "skipped": True}
