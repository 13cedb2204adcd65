"""The MLflow pieces only a training run is made of: the run itself (tagged with torch and the accelerator),
its dataset inputs (the manifest, the robot datasets) and its registered model. What every run kind shares —
recording a finished run, the ``Tracker``, lineage and the run description — is ``training.recording``, which
imports no torch, so recording a curation does not load it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import mlflow
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource, S3ArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException

from core.location import Location
from core.settings import MlflowConfig, StorageConfig
from core.storage import filesystem, join, protocol_of, read_bytes
from training.provenance import CODE_VERSION, code_tags
from training.recording import KIND, MLFLOW_PARENT, PARENT, MlflowTracker, experiment_id
from training.sources import load_meta, read_sidecar

_DIGEST_MAX = 32  # MLflow's limit on a dataset digest is 36 characters
_OPEN: dict[str, mlflow.MlflowClient] = {}  # run id -> its client, for each run inside ``training_run`` now


def end_open_runs(status: str = "KILLED") -> None:
    """Mark every training run this process has open ``status`` now, before it is wound down: a process about to
    be ended (its command was killed) may not get as far as the unwinding that would have marked them."""
    for run_id in list(_OPEN):
        client = _OPEN.pop(run_id, None)
        if client is not None:
            with contextlib.suppress(MlflowException, OSError):
                client.set_terminated(run_id, status)


def system_tags() -> dict[str, str]:
    """Where the run ran: host, Python, torch and the accelerator (what explains a difference in throughput)."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "sys.host": socket.gethostname(),
        "sys.platform": platform.platform(),
        "sys.python": sys.version.split()[0],
        "sys.torch": torch.__version__,
        "sys.mlflow": mlflow.__version__,
        "sys.device": device,
        "sys.cpus": str(os.cpu_count()),
    }


@contextlib.contextmanager
def training_run(
    config: MlflowConfig, *, run_name: str, kind: str, tags: Mapping[str, Any], run_id: str | None = None
) -> Iterator[MlflowTracker]:
    """Open (or, given ``run_id``, reopen: an interrupted run resumes its MLflow run) a training run, tagged with
    its kind, lineage, code version and system info; it ends FINISHED, or FAILED if the block raises. A lineage
    parent (``PARENT``) is also the MLflow parent unless ``tags`` nest the run elsewhere (an ablation's units)."""
    uri = config.resolved_uri()
    client = mlflow.MlflowClient(uri)
    if run_id is None:
        run_id = client.create_run(experiment_id(config.experiment, client), run_name=run_name).info.run_id
    else:
        client.update_run(run_id, status="RUNNING")
    tracker = MlflowTracker(uri, run_id, client)
    nesting = {MLFLOW_PARENT: tags[PARENT]} if tags.get(PARENT) and MLFLOW_PARENT not in tags else {}
    tracker.set_tags({KIND: kind, **nesting, **tags, **code_tags(), **system_tags()})
    _OPEN[run_id] = client
    try:
        yield tracker
    except BaseException:
        if _OPEN.pop(run_id, None) is not None:  # else ``end_open_runs`` already marked it
            client.set_terminated(run_id, "FAILED")
        raise
    if _OPEN.pop(run_id, None) is not None:
        client.set_terminated(run_id, "FINISHED")


def _source(uri: str) -> S3ArtifactDatasetSource | LocalArtifactDatasetSource:
    return S3ArtifactDatasetSource(uri) if protocol_of(uri) == "s3" else LocalArtifactDatasetSource(uri)


def dataset_digest(uri: str, sha256: str) -> str:
    """The MLflow digest of a dataset input: its content hash *at its location*. MLflow keeps one dataset record
    per (experiment, name, digest) and hands back the first one's source to every later run, so a digest of the
    content alone would show a run the path of an older copy of the same data (another demo root, a deleted
    bucket). The content hash itself is the input's ``sha256`` tag."""
    return hashlib.sha256(f"{uri}\n{sha256}".encode()).hexdigest()[:_DIGEST_MAX]


def log_dataset(tracker: MlflowTracker, *, name: str, uri: str, sha256: str, context: str = "training") -> None:
    """One dataset input of the run: where it is and a hash of its content (what the run was trained on). MLflow
    keeps 36 characters of a digest, so the full SHA-256 goes in the input's ``sha256`` tag."""
    dataset = MetaDataset(_source(uri), name=name, digest=dataset_digest(uri, sha256))
    tags = [InputTag("mlflow.data.context", context), InputTag("sha256", sha256)]
    tracker.client.log_inputs(tracker.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)])


def log_manifest_input(
    tracker: MlflowTracker, manifest: str | Location, storage: StorageConfig | None = None
) -> dict[str, Any]:
    """The curation manifest as the mid-training run's dataset input, its content hash as the digest. Returns the
    sidecar (it names the curation run)."""
    where = Location.of(manifest, storage)
    sidecar = read_sidecar(where)
    log_dataset(tracker, name="manifest", uri=where.uri, sha256=sidecar["content_sha256"])
    return sidecar


def robot_digest(root: str, storage: StorageConfig | None) -> str:
    """A LeRobot dataset's identity: its ``meta/info.json`` and the per-episode metadata (lengths, file
    locations), hashed; reading frames is not needed to tell two datasets apart."""
    digest = hashlib.sha256(read_bytes(join(root, "meta/info.json"), storage))
    digest.update(json.dumps(load_meta(root, storage).episodes, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def log_robot_inputs(tracker: MlflowTracker, sources: list, storage: StorageConfig | None) -> None:
    """Each robot dataset (a ``SourceSpec``) as a dataset input of the fine-tuning run."""
    for spec in sources:
        log_dataset(tracker, name=spec.name, uri=spec.uri, sha256=robot_digest(spec.uri, storage))


def log_model(
    tracker: MlflowTracker,
    model_uri: str,
    *,
    registered_name: str,
    storage: StorageConfig | None,
    tags: dict,
    mlflow_model: Callable[[str, str], None] | None = None,
) -> int:
    """Log the saved model directory (local or s3://) as the run's ``model`` artifacts and register it as a new
    version of ``registered_name``; returns the version number. With ``mlflow_model(saved_dir, out_dir)`` (e.g.
    ``training.vla_pyfunc.save_vla_pyfunc``) the artifacts are the MLflow model it writes around the saved
    directory, so ``mlflow.pyfunc.load_model("models:/NAME/VERSION")`` loads the version; without, the files as
    they are."""
    client = tracker.client
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "model")  # an MLflow model keeps it as artifacts/model/
        fs, path = filesystem(model_uri, storage)
        fs.get(path.rstrip("/") + "/", saved + "/", recursive=True)
        logged = saved
        if mlflow_model is not None:
            logged = os.path.join(tmp, "mlflow-model")
            mlflow_model(saved, logged)
        client.log_artifacts(tracker.run_id, logged, "model")
    with contextlib.suppress(MlflowException):  # already registered
        client.create_registered_model(registered_name)
    version = client.create_model_version(
        registered_name,
        source=f"runs:/{tracker.run_id}/model",
        run_id=tracker.run_id,
        tags={"model_uri": model_uri, CODE_VERSION: code_tags()[CODE_VERSION],
              **{k: str(v) for k, v in tags.items() if v is not None}},
    )
    tracker.set_tags({"model_uri": model_uri, "model_name": registered_name, "model_version": version.version})
    return int(version.version)


