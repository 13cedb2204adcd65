"""What a run says about its code and its lineage: the code version (the git commit of this checkout, else the
package version) and the markdown description linking the upstream runs and models."""

from __future__ import annotations

import subprocess
from pathlib import Path

from training import provenance
from training.provenance import CODE_VERSION, GIT_COMMIT, lineage_note


def test_in_a_git_checkout_the_code_version_is_the_commit():
    tags = provenance.code_tags.__wrapped__()  # uncached: HEAD as it is now
    root = Path(provenance.__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert tags[CODE_VERSION] == tags[GIT_COMMIT] == head and len(head) == 40
    assert tags["code.git_dirty"] in ("true", "false")
    assert tags["code.package_version"] == provenance.package_version() != "unknown"


def test_outside_a_checkout_the_code_version_is_the_package_version(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_ROOT", tmp_path)  # as if installed where no git checkout holds it
    tags = provenance.code_tags.__wrapped__()
    assert tags == {"code.package_version": provenance.package_version(), CODE_VERSION: provenance.package_version()}


def test_the_lineage_note_links_every_upstream_run_in_pipeline_order():
    chain = [
        {"run_id": "f1", "run_name": "p1", "kind": "finetune", "experiment_id": "2", "model": "emt-vla/3"},
        {"run_id": "m1", "run_name": "p1", "kind": "midtrain", "experiment_id": "2", "model": "emt-vlm/5"},
        {"run_id": "c1", "run_name": "p1", "kind": "curation", "experiment_id": "1", "manifest_uri": "s3://b/m.parquet"},
    ]
    note = lineage_note(chain, code_version="abc123")
    lines = note.splitlines()
    stages = [line for line in lines if line[:2] in ("1.", "2.", "3.")]
    assert [s.split("**")[1] for s in stages] == ["curation", "midtrain", "finetune"]
    assert "[run p1](#/experiments/1/runs/c1)" in stages[0] and "`s3://b/m.parquet`" in stages[0]
    assert "[run p1](#/experiments/2/runs/m1)" in stages[1] and "[emt-vlm v5](#/models/emt-vlm/versions/5)" in stages[1]
    assert "(this run)" in stages[2] and "[emt-vla v3](#/models/emt-vla/versions/3)" in stages[2]
    assert 'mlflow.pyfunc.load_model("models:/emt-vla/3")' in note and "`abc123`" in note
