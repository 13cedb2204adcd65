"""The demo: the product's main job on embedded defaults — generate the synthetic corpus (once), save a tiny
random backbone, run ``curate`` end to end with the filters on and print what it selected and what the filters
removed. Locally, or against an embedded S3 server with ``--s3``."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Iterator

import pandas as pd
from PIL import Image

from core.manifest import read_manifest
from core.read import Quarantine
from core.settings import CorpusConfig, MlflowConfig, StorageConfig
from core.storage import join, publish_bytes, read_bytes
from estimator.backbones.tiny import save_tiny_backbone
from flows.curate import CurateReport, curate
from flows.params import CurateParams, FiltersConfig
from synth import CorpusInfo, SynthConfig, generate_corpus
from synth.junk import blocklisted_image
from tasks.filters.blocklist import BlocklistSpec, image_phash
from tasks.funnel import STAGES, funnel_total
from tasks.survey import survey_source

DEFAULT_LOCAL_ROOT = "data/demo"
DEMO_BUCKET = "emt-demo"
DEMO_MLFLOW = "sqlite:///data/mlflow.db"  # MLflow on SQLite beside the demo's data (override: MLFLOW_TRACKING_URI)
# The tiny random backbone puts distinct synthetic images up to ~0.99996 apart (look-alike charts at 32 px) and
# resized copies of one image above ~0.9999: this threshold takes every exact and most resized copies.
DEMO_DEDUP_THRESHOLD = 0.99995


@contextlib.contextmanager
def demo_storage(s3: bool) -> Iterator[StorageConfig | None]:
    """Nothing for local runs; an embedded S3 server (up for the duration) for ``--s3`` runs."""
    if not s3:
        yield None
        return
    from infra.s3 import start_s3

    server = start_s3()
    try:
        server.make_bucket(DEMO_BUCKET)
        print(f"embedded S3 server at {server.storage.endpoint_url}")
        yield server.storage
    finally:
        server.stop()


def print_survey(corpus: CorpusConfig) -> pd.DataFrame:
    """Read every source once and print one line per source."""
    quarantine = Quarantine()
    rows = []
    for role, specs in (("pool", corpus.pool), ("robot", corpus.robot)):
        for spec in specs:
            s = survey_source(spec, quarantine=quarantine)
            rows.append(
                {
                    "role": role,
                    "source": s.source,
                    "format": s.format,
                    "shards": s.shards,
                    "samples": s.samples,
                    "MB": round(s.image_bytes / 1e6, 2),
                    "quarantined": sum(s.quarantined.values()),
                    "samples/s": round(s.samples_per_s),
                }
            )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if len(quarantine):
        print("quarantined by reason:", dict(quarantine.counts))
    return table


def print_report(report: CurateReport, storage: StorageConfig | None, truth_uri: str | None = None) -> None:
    """Where the manifest is, the counts per source and the highest and lowest scored samples."""
    print(f"\nmanifest: {report.manifest_uri}")
    if report.mlflow_run_id:
        print(f"MLflow run: {report.mlflow_run_id} (tagged with the manifest URI)")
    print()
    counts = pd.DataFrame([{"source": s, **c} for s, c in sorted(report.per_source.items())])
    counts["share_selected"] = (counts["selected"] / counts["pool"]).round(3)
    print(counts.to_string(index=False))
    print(
        f"\nquarantined: {report.quarantined or 'none'}; shards embedded {report.shards_embedded}, "
        f"from cache {report.shards_cached}; scorer {report.scorer.get('method')} "
        f"val_accuracy={report.scorer.get('val_accuracy', 'n/a')}"
    )
    manifest = read_manifest(report.manifest_uri, storage).sort_by("rank").to_pandas()
    cols = ["rank", "score", "source", "sample_id"]
    print("\nhighest scored:\n" + manifest.head(5)[cols].to_string(index=False))
    print("\nlowest scored:\n" + manifest.tail(5)[cols].to_string(index=False))
    if truth_uri:
        truth = pd.read_parquet(pd.io.common.BytesIO(read_bytes(truth_uri, storage)))
        merged = manifest.merge(truth[["sample_id", "aligned"]], on="sample_id")
        precision = merged.loc[merged["selected"], "aligned"].mean()
        base = merged["aligned"].mean()
        print(f"\nprecision@K against the ground truth: {precision:.3f} (pool base rate {base:.3f})")
    print_funnel(report)


def print_funnel(report: CurateReport) -> pd.DataFrame | None:
    """The filters' funnel: samples left after each filter, per pool source and for the whole pool."""
    if not report.funnel:
        return None
    table = pd.DataFrame({**report.funnel, "(all)": funnel_total(report.funnel)}, index=list(STAGES)).T
    print("\nfunnel (samples left after each filter):\n" + table.rename_axis("source").to_string())
    return table


def demo_filters(root: str, info: CorpusInfo, synth: SynthConfig, storage: StorageConfig | None) -> FiltersConfig:
    """The demo's filters: quality thresholds the synthetic scenes pass and its planted junk fails, pool-wide
    dedup and, when the corpus has planted junk, a blocklist of its one listed image written here (by SHA-256,
    and by pHash, which also catches the image's resized copy)."""
    blocklists = []
    if info.planted_uri:
        listed = blocklisted_image(synth.seed, synth.image_size)
        with Image.open(io.BytesIO(listed)) as image:
            phash = image_phash(image.convert("RGB"))
        for kind, entry in (("sha256", hashlib.sha256(listed).hexdigest()), ("phash", f"{phash:016x}")):
            uri = join(root, "blocklists", f"demo.{kind}")
            publish_bytes(uri, f"# the demo's listed image\n{entry}\n".encode(), storage)
            blocklists.append(BlocklistSpec(name=f"demo_{kind}", uri=uri, kind=kind))
    quality = {"min_side": synth.image_size // 2, "min_sharpness": 10.0, "min_caption_chars": 10,
               "min_letter_share": 0.6}
    return FiltersConfig(blocklists=blocklists, quality=quality,
                         dedup={"enabled": True, "threshold": DEMO_DEDUP_THRESHOLD})


def demo_curate_params(
    root: str, storage: StorageConfig | None, synth: SynthConfig, k_fraction: float, *, filters: bool = True
) -> tuple[CurateParams, CorpusInfo]:
    """Generate the corpus (once per settings: the demo's own corpus is redone when they change), survey it, save
    the tiny backbone: the curate parameters of the demo, with its filters unless ``filters`` is false. A corpus
    with planted junk and one without live in folders of their own (``corpus``, ``corpus-clean``), so demos of
    either kind under one root do not redo each other's."""
    info = generate_corpus(join(root, "corpus" if synth.junk_rate else "corpus-clean"), synth, storage,
                           overwrite=True)
    print(f"synthetic corpus at {info.root}")
    print_survey(CorpusConfig(storage=storage or StorageConfig(), pool=info.pool, robot=info.robot))
    model_uri = join(root, "models", "tiny-open_clip")
    # Deterministic (same weights, same fingerprint, so the cache holds across demos). With random weights
    # the text tower only adds noise, so the image tower alone forms the vector.
    backbone = save_tiny_backbone("open_clip", model_uri, storage, seed=0).model_copy(update={"modality": "image"})
    params = CurateParams(
        pool=info.pool,
        robot=info.robot,
        storage=storage or StorageConfig(),
        backbone=backbone,
        fraction=k_fraction,
        output_uri=join(root, "runs"),
        mlflow=demo_mlflow(),
        filters=demo_filters(root, info, synth, storage) if filters else FiltersConfig(),
    )
    return params, info


def demo_mlflow(experiment: str = "emt-curation") -> MlflowConfig:
    return MlflowConfig(
        tracking_uri=None if os.environ.get("MLFLOW_TRACKING_URI") else DEMO_MLFLOW, experiment=experiment
    )


def run_demo(*, root: str | None, s3: bool, synth: SynthConfig, k_fraction: float = 0.1) -> CurateReport:
    with demo_storage(s3) as storage:
        root = root or (f"s3://{DEMO_BUCKET}/demo" if s3 else DEFAULT_LOCAL_ROOT)
        params, info = demo_curate_params(root, storage, synth, k_fraction)
        report = curate(params)
        print_report(report, storage, info.ground_truth_uri)
        if report.report_uri:
            print(f"\nreport: {report.report_uri}")
        return report
