"""Credentials come from the environment only: a secret planted in the stack's S3 credentials is in nothing a run
writes — not the run folder or any other S3 object, the MLflow database or artifacts, the Prefect database, or
any service's log (Ray's session logs included)."""

from __future__ import annotations

from pathlib import Path

from core.storage import filesystem


def test_planted_secret_is_in_nothing_a_run_writes(local_stack):
    params = local_stack.defaults("curate")
    params["params"] |= {"run_name": "secret-check", "report_per_set": 20}
    run = local_stack.run_deployment("curate/curate", params)
    assert run.state.is_completed(), run.state.message
    secret = local_stack.config.s3_secret.get_secret_value().encode()

    files = [p for p in Path(local_stack.config.home).rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "prefect.db" for p in files) and any(p.name == "mlflow.db" for p in files)
    leaks = [str(p) for p in files if secret in p.read_bytes()]
    fs, _ = filesystem("s3://", local_stack.storage)
    objects = [o for bucket in ("emt-demo", "emt-mlflow") for o in fs.find(bucket)]
    assert any("/runs/secret-check/" in o for o in objects) and any(o.endswith("report.html") for o in objects)
    leaks += [f"s3://{o}" for o in objects if secret in fs.cat_file(o)]
    assert not leaks, f"the planted secret was written to: {leaks}"
