"""prefect.yaml as production runs it: deployed by `emt stack up` to a real Prefect server, runs of each deployment
created through the API exactly as the UI's "Custom run" does (the deployment's defaults, a few fields changed),
run by the stack's process worker on its Ray head, tracked on its MLflow server, written to its S3 server."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.exceptions import PrefectHTTPStatusError

from core.manifest import read_manifest

# Real servers on a 2-core machine: the first test also waits for the shared stack to come up (minutes).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

FAST = {"steps": 2, "batch_size": 2, "log_every": 1}  # training steps of a test run


def artifacts(stack, flow_run_id) -> dict[str, object]:
    with stack.client() as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def test_every_deployment_is_registered_with_runnable_defaults(local_stack):
    with local_stack.client() as client:
        names = {d.name for d in client.read_deployments()}
        curate = client.read_deployment_by_name("curate/curate")
    assert names >= {"curate", "midtrain", "finetune", "pipeline"}
    assert curate.parameters["params"]["fraction"] == 0.1
    assert [s.active for s in curate.schedules] == [False]  # the cron example stays off until switched on


def test_k_and_fraction_together_are_refused_on_submit(local_stack):
    params = local_stack.defaults("curate")
    params["params"] |= {"k": 5}
    with local_stack.client() as client, pytest.raises(PrefectHTTPStatusError, match="give k or fraction, not both"):
        deployment = client.read_deployment_by_name("curate/curate")
        client.create_flow_run_from_deployment(deployment.id, parameters=params)


def test_curate_then_midtrain_then_finetune_from_their_deployments(local_stack):
    params = local_stack.defaults("curate")
    params["params"] = {k: v for k, v in params["params"].items() if k != "fraction"} | {
        "k": 7, "run_name": "quickstart", "report_per_set": 20,
    }
    run = local_stack.run_deployment("curate/curate", params)
    assert run.state.is_completed(), run.state.message
    manifest = read_manifest("s3://emt-demo/runs/quickstart/manifest.parquet", local_stack.storage)  # a directory
    assert manifest.num_rows == 80 and sum(manifest["selected"].to_pylist()) == 7
    found = artifacts(local_stack, run.id)
    assert {"curation-summary", "curation-selection", "curation-progress"} <= set(found)
    assert found["curation-progress"].data == 100
    summary = found["curation-summary"].data
    mlflow = MlflowClient(local_stack.env["MLFLOW_TRACKING_URI"])
    [mlflow_run] = mlflow.search_runs(
        [mlflow.get_experiment_by_name("emt-curation").experiment_id], "attributes.run_name = 'quickstart'"
    )
    assert f"/runs/{mlflow_run.info.run_id}" in summary  # the summary links the run on the MLflow server
    assert "report/report.html" in {f.path for f in mlflow.list_artifacts(mlflow_run.info.run_id, "report")}

    mid = local_stack.defaults("midtrain")  # on the manifest of the curation just run (the default is the reference)
    mid["params"] |= {"train": FAST, "run_name": "quickstart",
                      "manifest_uri": "s3://emt-demo/runs/quickstart/manifest.parquet"}
    run = local_stack.run_deployment("midtrain/midtrain", mid)
    assert run.state.is_completed(), run.state.message
    assert "midtrain-summary" in artifacts(local_stack, run.id)

    tune = local_stack.defaults("finetune")
    tune["params"] |= {"train": FAST, "model": "s3://emt-demo/training/midtrain/quickstart/model"}
    run = local_stack.run_deployment("finetune/finetune", tune)
    assert run.state.is_completed(), run.state.message
    found = artifacts(local_stack, run.id)
    assert "/#/experiments/" in found["finetune-summary"].data

