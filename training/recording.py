"""MLflow recording shared by every run kind, importable without torch: a finished run logged in one call (a
curation), the ``Tracker`` a run writes its params, metrics and tags through, the lineage tags that let one MLflow
query walk from a VLA back to the manifest it was mid-trained on, and the run's markdown description.

Lineage: every run carries ``kind`` (curation, midtrain, finetune) and, past curation, ``lineage.parent_run_id``
(the upstream MLflow run) plus readable copies (``lineage.curation_run_id`` and ``manifest_uri`` on mid-training;
``lineage.midtrain_run_id`` and ``lineage.base_model`` on fine-tuning). The upstream run is also MLflow's own
parent (``mlflow.parentRunId``: the UI nests a run under it and links it), and ``describe_run`` writes the chain as
the run's markdown description with links. Every run is tagged with the code that ran (``training.provenance``).
Everything goes through an explicit ``MlflowClient`` (never the fluent active run), so flows in threads and Ray
workers cannot mix runs up. What only a training run needs (torch, dataset inputs, the registered model) is in
``training.tracking``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import DatasetInput, Metric, Param, RunTag

from core.settings import MlflowConfig
from training.provenance import CODE_VERSION, NOTE, code_tags, lineage_note

KIND = "kind"
PARENT = "lineage.parent_run_id"
MLFLOW_PARENT = "mlflow.parentRunId"  # MLflow's nesting tag: the UI shows the run under its parent, with a link
MLFLOW_RUN = "mlflow_run.json"  # a run folder's record of its MLflow run (id, tracking URI): a resumed run reopens it
_PARAM_MAX = 6000  # MLflow's limit on a parameter value


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store (``mlartifacts/`` next to the database),
    as an absolute URI, so they land where the store is whatever directory a run starts in (MLflow's default is
    ``./mlruns`` of the working directory); a tracking server chooses its own (None)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve()
    return (database.parent / "mlartifacts").as_uri()


# The MLflow UI opens an experiment without this tag in its GenAI view (traces, prompts); ours are model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(name: str, client: mlflow.MlflowClient | None = None) -> str:
    """The id of experiment ``name``, created (with our tags) if it does not exist yet."""
    client = client or mlflow.MlflowClient()
    found = client.get_experiment_by_name(name)
    if not found:
        return client.create_experiment(
            name, artifact_location=artifact_location(client.tracking_uri), tags=EXPERIMENT_KIND)
    for key, value in EXPERIMENT_KIND.items():
        if key not in found.tags:  # made before the tag, or by another tool: open it in the ML view too
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def record_run(
    config: MlflowConfig,
    *,
    run_name: str,
    params: dict,
    metrics: dict[str, float],
    tags: dict[str, str],
    files: dict[str, bytes],
    start_time: float | None = None,
) -> str:
    """Log one finished run; ``files`` maps artifact paths (``report/report.html``) to their bytes. Returns the
    MLflow run id. ``start_time`` (epoch seconds) is when the work began: the run is recorded once it is done, and
    MLflow's duration must be the work's, not the recording's. Uses its own client: ``mlflow.set_tracking_uri``
    would also rewrite the process's ``MLFLOW_TRACKING_URI`` and send every later run of the process to this
    store."""
    client = mlflow.MlflowClient(config.resolved_uri())
    started = int((start_time if start_time is not None else time.time()) * 1000)
    run = client.create_run(experiment_id(config.experiment, client), start_time=started, run_name=run_name)
    run_id = run.info.run_id
    try:
        tracker = MlflowTracker(client.tracking_uri, run_id, client)
        tracker.log_params(params)
        tracker.log_metrics(metrics, step=0)
        tracker.set_tags({**tags, **code_tags()})
        describe_run(tracker)
        log_files(tracker, files)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_files(tracker: MlflowTracker, files: Mapping[str, bytes]) -> None:
    """Log ``files`` (artifact path, e.g. ``report/report.html``, to bytes) as the run's artifacts in one upload:
    what a run publishes is built in memory, and MLflow logs files."""
    if not files:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            path = Path(tmp, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        tracker.client.log_artifacts(tracker.run_id, tmp)


def flatten_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (``train.lr``), the shape trackers take parameters in."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flatten_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass
class MlflowTracker:
    """The train loop's ``Tracker`` writing to one MLflow run. Only a URI and a run id: it pickles, so the rank
    zero of a Ray Train job can hold it, and the client is built where it is used."""

    tracking_uri: str
    run_id: str
    _client: mlflow.MlflowClient | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "_client": None}

    @property
    def client(self) -> mlflow.MlflowClient:
        if self._client is None:
            self._client = mlflow.MlflowClient(self.tracking_uri)
        return self._client

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a (nested) config as dotted keys, lists as JSON; batched by MLflow's limit of 100 per call."""
        flat = [
            (k, (json.dumps(v, default=str) if isinstance(v, list) else str(v))[:_PARAM_MAX])
            for k, v in flatten_params(dict(params)).items()
        ]
        for i in range(0, len(flat), 100):
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat[i : i + 100]])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items() if v is not None])


def find_run(tracking_uri: str, *, kind: str, tag: str, value: str) -> str | None:
    """The newest finished run of ``kind`` whose ``tag`` equals ``value`` (e.g. the curation run of a manifest)."""
    client = mlflow.MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    quoted = value.replace("'", "\\'")
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.{KIND} = '{kind}' and tags.`{tag}` = '{quoted}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _dataset_row(item: DatasetInput) -> dict[str, str]:
    source = json.loads(item.dataset.source).get("uri", item.dataset.source)
    return {"name": item.dataset.name, "source": source, "digest": item.dataset.digest}


def lineage(run_id: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """Walk from a run (typically a VLA's fine-tuning run) up its ``lineage.parent_run_id`` tags to the curation
    run; one dict per run, downstream first, with its dataset inputs, registered model and the manifest."""
    client = mlflow.MlflowClient(tracking_uri or MlflowConfig().resolved_uri())
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    while run_id and run_id not in seen:
        seen.add(run_id)
        run = client.get_run(run_id)
        tags = run.data.tags
        model = tags.get("model_name")
        chain.append(
            {
                "run_id": run_id,
                "kind": tags.get(KIND, "?"),
                "run_name": run.info.run_name,
                "experiment_id": run.info.experiment_id,
                "status": run.info.status,
                "model": f"{model}/{tags['model_version']}" if model else None,
                "manifest_uri": tags.get("manifest_uri"),
                "datasets": [_dataset_row(d) for d in run.inputs.dataset_inputs],
                "lineage": {k: v for k, v in sorted(tags.items()) if k.startswith("lineage.")},
            }
        )
        run_id = tags.get(PARENT, "")
    return chain


def describe_run(tracker: MlflowTracker) -> None:
    """Write the run's markdown description (what the MLflow run page shows first): its lineage up to the
    curation run as links, its model and the code version. Call it once the run's own model is registered."""
    chain = lineage(tracker.run_id, tracker.tracking_uri)
    tracker.set_tags({NOTE: lineage_note(chain, code_version=code_tags()[CODE_VERSION])})
