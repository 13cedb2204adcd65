"""``emt midtrain`` on a manifest older than its data (a selected shard deleted, another rewritten): the run
finishes, the console and the run's report count the skipped samples by reason, and the command exits at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from core.manifest import modified, sidecar_uri, write_manifest
from core.read import Quarantine, read_source

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _stale_manifest(corpus, root: Path) -> tuple[str, dict[str, int]]:
    """A located manifest over a copy of the pool (the first 3 samples of each source selected), then the shard of
    one tar source's selection deleted and one Parquet source's rewritten; the selected samples each lost."""
    shutil.copytree(corpus.root, root / "corpus")
    specs = [s.model_copy(update={"uri": s.uri.replace(corpus.root.rstrip("/"), str(root / "corpus"))})
             for s in corpus.pool]
    parts = []
    for spec in specs:
        table = pa.concat_tables(read_source(spec, quarantine=Quarantine()))
        n = table.num_rows
        parts.append(table.select(["sample_id", "source", "shard_uri", "key", "byte_offset", "byte_length",
                                   "row_group"])
                     .append_column("score", pa.array([1.0 - i / n for i in range(n)], pa.float32()))
                     .append_column("rank", pa.array(range(n), pa.int64()))
                     .append_column("selected", pc.less(pa.array(range(n)), 3)))
    uri = str(root / "m" / "manifest.parquet")
    write_manifest(uri, parts, {"run_id": "stale", "pool": [s.model_dump(mode="json") for s in specs]})
    tar = next(p for p, s in zip(parts, specs, strict=True) if s.format == "webdataset")["shard_uri"][0].as_py()
    rewritten = next(p for p, s in zip(parts, specs, strict=True) if s.format == "parquet")["shard_uri"][0].as_py()
    os.remove(tar)
    pq.write_table(pq.read_table(rewritten), rewritten)
    later = modified(sidecar_uri(uri)) + 5
    os.utime(rewritten, (later, later))
    return uri, {"missing_shard": 3, "changed_shard": 3}


def test_midtrain_on_a_stale_manifest_counts_what_it_skipped(local_corpus, tiny_vlm_dir, tmp_path):
    uri, lost = _stale_manifest(local_corpus, tmp_path)
    usable = 4 * 3 - sum(lost.values())
    config = tmp_path / "midtrain.yaml"
    config.write_text(yaml.safe_dump({
        "model": tiny_vlm_dir, "manifest_uri": uri, "output_uri": str(tmp_path / "out"), "run_name": "stale",
        # one epoch per step, read by two DataLoader workers
        "train": {"steps": 2, "batch_size": usable, "log_every": 1, "shuffle_buffer": 4, "num_workers": 2},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flows.cli", "midtrain", "--config", str(config)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "FileNotFoundError" not in done.stderr, done.stderr[-3000:]
    last = [line for line in (done.stdout + done.stderr).splitlines() if "midtrain step 2/2" in line]
    assert last and "skipped/missing_shard=6" in last[-1] and "skipped/changed_shard=6" in last[-1], done.stderr[-3000:]
    assert "midtrain skipped samples: changed_shard 6, missing_shard 6" in done.stdout, done.stdout[-3000:]
    report = json.loads((tmp_path / "out" / "stale" / "report.json").read_text())
    assert {k: v for k, v in report["metrics"].items() if k.startswith("skipped/")} == \
        {"skipped/missing_shard": 6.0, "skipped/changed_shard": 6.0}
    assert time.monotonic() - started < 600
