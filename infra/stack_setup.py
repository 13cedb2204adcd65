"""What the local stack holds besides its processes: the S3 buckets (restored from moto's recording), the Prefect
work pool and prefect.yaml's deployments, and the demo data the deployments' default parameters point at."""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

from core.settings import StorageConfig
from core.storage import filesystem
from infra.services import BIN
from infra.stack_config import MLFLOW_BUCKET, ROOT, S3_KEY, WORK_POOL, StackConfig, env, service_env

DEMO_BUCKET = "emt-demo"  # prefect.yaml's default parameters read s3://emt-demo/corpus and write s3://emt-demo/runs
SEED_MARKER = f"{DEMO_BUCKET}/_SEEDED"
# The midtrain deployment's default manifest: the demo corpus's ground-truth selection (synth.reference), so its
# Quick run works on a fresh stack, before any curation has run.
REFERENCE_MANIFEST = f"s3://{DEMO_BUCKET}/manifests/reference/manifest.parquet"


def storage(config: StackConfig) -> StorageConfig:
    return StorageConfig(endpoint_url=env(config)["AWS_ENDPOINT_URL"], key=S3_KEY, secret=config.s3_secret)


def prepare_s3(config: StackConfig) -> None:
    """Replay the recorded requests of earlier sessions (moto holds objects in memory only), then make sure the
    MLflow artifact and demo buckets exist."""
    recording = config.home / "s3" / "recording.jsonl"
    if recording.exists() and recording.stat().st_size:
        request = urllib.request.Request(
            f"{env(config)['AWS_ENDPOINT_URL']}/moto-api/recorder/replay-recording", method="POST"
        )
        with urllib.request.urlopen(request, timeout=600):
            pass
    fs, _ = filesystem("s3://", storage(config))
    for bucket in (MLFLOW_BUCKET, DEMO_BUCKET):
        if not fs.exists(bucket):
            fs.mkdir(bucket)


def register(config: StackConfig, *, deploy: bool) -> None:
    """Create the process work pool and, with ``deploy``, register every deployment of prefect.yaml."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate

    with SyncPrefectClient(env(config)["PREFECT_API_URL"]) as client:
        client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"), overwrite=True)
    if not deploy:
        return
    log = config.home / "logs" / "deploy.log"
    with open(log, "w") as out:
        done = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
            env=service_env(config), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=900,
        )
    if done.returncode:
        raise RuntimeError(f"prefect deploy --all failed; log:\n{Path(log).read_text()[-3000:]}")


def seed_demo(config: StackConfig) -> None:
    """The synthetic corpus, a tiny open_clip backbone, a tiny VLM and the corpus's reference manifest under
    s3://emt-demo (once per stack)."""
    from estimator.backbones.tiny import save_tiny_backbone
    from synth import SynthConfig, generate_corpus, load_corpus_info
    from synth.reference import write_reference_manifest
    from training.vlm import save_tiny_vlm

    s3 = storage(config)
    fs, _ = filesystem("s3://", s3)
    corpus = f"s3://{DEMO_BUCKET}/corpus"
    if not fs.exists(SEED_MARKER):
        synth = SynthConfig(samples_per_source=config.demo_samples_per_source, shard_size=50, image_size=32)
        generate_corpus(corpus, synth, s3)
        save_tiny_backbone("open_clip", f"s3://{DEMO_BUCKET}/models/tiny-open_clip", s3, seed=0)
        save_tiny_vlm(f"s3://{DEMO_BUCKET}/models/tiny-vlm", s3, seed=0)
        fs.pipe(SEED_MARKER, b"")
    if not fs.exists(REFERENCE_MANIFEST.removeprefix("s3://")):  # also on a stack seeded before it existed
        write_reference_manifest(load_corpus_info(corpus, s3), REFERENCE_MANIFEST, s3)
