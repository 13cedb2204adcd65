"""The `pipeline` deployment end to end on the stack (curate -> midtrain -> finetune), then: credentials come from
the environment only — a secret planted in the stack's S3 credentials is in nothing the runs wrote: not the run
folders or any other S3 object, the MLflow database or artifacts, the Prefect database, or any service's log
(Ray's session logs included)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from core.storage import filesystem

# Real servers on a 2-core machine: the first test also waits for the shared stack to come up (minutes).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_pipeline_then_the_planted_secret_is_in_nothing_it_wrote(local_stack):
    fast = {"steps": 2, "batch_size": 2, "log_every": 1}
    params = local_stack.defaults("pipeline")
    params["params"]["curate"] |= {"run_name": "secret-check", "report_per_set": 20}
    params["params"]["midtrain"] |= {"train": fast}
    params["params"]["finetune"] |= {"train": fast}
    run = local_stack.run_deployment("pipeline/pipeline", params)
    assert run.state.is_completed(), run.state.message
    with local_stack.client() as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    assert "pipeline-summary" in {a.key for a in found}
    secret = local_stack.config.s3_secret.get_secret_value().encode()

    files = [p for p in Path(local_stack.config.home).rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "prefect.db" for p in files) and any(p.name == "mlflow.db" for p in files)
    leaks = [str(p) for p in files if secret in p.read_bytes()]
    fs, _ = filesystem("s3://", local_stack.storage)
    objects = [o for bucket in ("emt-demo", "emt-mlflow") for o in fs.find(bucket)]
    assert any("/runs/secret-check/" in o for o in objects) and any(o.endswith("report.html") for o in objects)
    assert any("/training/finetune/secret-check/" in o for o in objects)
    leaks += [f"s3://{o}" for o in objects if secret in fs.cat_file(o)]
    assert not leaks, f"the planted secret was written to: {leaks}"
