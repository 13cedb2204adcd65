"""The filters in a real curate run (Prefect's ephemeral API, local Ray, MLflow on SQLite) on a generated pool with
planted cases: an image on a SHA-256 list, a re-encoded and resized copy of an image whose pHash is listed, a blank
and a tiny image, captions too short or not text, byte-for-byte copies of one sample across shards (exact copies, by
content hash) and a lossless re-encoding of another (other bytes, the same pixels: a near-duplicate). Each is
removed with its stage and reason, counted in the funnel (sidecar, report, MLflow), never selected — and no file
the run or the cache holds contains the bytes of a listed image or of its copies."""

from __future__ import annotations

import hashlib
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.manifest import read_manifest, read_sidecar
from core.settings import SourceSpec
from estimator.backbones.tiny import save_tiny_backbone
from estimator.features import feature_parts
from flows.curate import curate
from flows.params import CurateParams
from tasks.cache import vectors
from tasks.filters.blocklist import image_phash
from tests.tasks.filters.conftest import encode, photo

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api", "ray_local")]

GOOD = 16  # distinct samples that pass every filter


def _caption(i: int) -> str:
    return f"a photograph of object number {i} on a wooden table"


def planted_pool(root: Path) -> tuple[SourceSpec, dict[str, str], list[str], list[str], dict[str, bytes]]:
    """Two Parquet shards; the expected reason of each planted sample (by sample id), the ids of the exact copies of
    one good sample and of a good sample and its re-encoding (one of each stays), and the bytes that must never be
    written anywhere."""
    listed, near = photo(1), photo(2)
    secret = {"listed": encode(listed), "near": encode(near),
              "near_copy": encode(near.resize((80, 80)), "JPEG", quality=70)}
    copy = (encode(photo(20)), _caption(0))
    shards = [
        [(encode(photo(20 + i)), _caption(i)) for i in range(GOOD // 2)]
        + [(secret["listed"], _caption(100)), (secret["near_copy"], _caption(101)),
           (encode(Image.new("RGB", (96, 96), (120, 120, 120))), _caption(102)),
           (encode(photo(3).resize((12, 12))), _caption(103)), copy],
        [(encode(photo(20 + i)), _caption(i)) for i in range(GOOD // 2, GOOD)]
        + [(secret["near"], _caption(104)), (encode(photo(4)), "a cup"), (encode(photo(5)), "IMG_0042.JPG 1234 5678"),
           copy, copy, (encode(photo(21), compress_level=1), _caption(1))],
    ]
    (root / "web").mkdir(parents=True)
    for n, rows in enumerate(shards):
        pq.write_table(pa.table({"image": [r[0] for r in rows], "text": [r[1] for r in rows]}),
                       root / "web" / f"{n:05d}.parquet")
    expected = {"web/00000.parquet/8": "blocklist:known", "web/00000.parquet/9": "blocklist:near",
                "web/00000.parquet/10": "quality:blank_or_blurred", "web/00000.parquet/11": "quality:too_small",
                "web/00001.parquet/8": "blocklist:near", "web/00001.parquet/9": "quality:caption_too_short",
                "web/00001.parquet/10": "quality:caption_not_text"}
    copies = ["web/00000.parquet/0", "web/00000.parquet/12", "web/00001.parquet/11", "web/00001.parquet/12"]
    reencoded = ["web/00000.parquet/1", "web/00001.parquet/13"]
    (root / "sha.txt").write_text(f"# known images\n{hashlib.sha256(secret['listed']).hexdigest()}\n")
    (root / "phash.txt").write_text(f"{image_phash(near):016x}\n")
    return SourceSpec(name="web", format="parquet", uri=str(root / "web")), expected, copies, reencoded, secret


@pytest.fixture(scope="module")
def planted_run(local_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("filters")
    spec, expected, copies, reencoded, secret = planted_pool(root)
    backbone = save_tiny_backbone("open_clip", str(root / "model"), seed=0)  # image+text: both towers
    params = CurateParams(
        pool=[spec], robot=local_corpus.robot[:1], backbone=backbone, k=5, output_uri=str(root / "out"),
        cache_uri=str(root / "cache"), run_name="filtered", ray={"embed_batch_size": 8}, report_per_set=50,
        filters={"blocklists": [{"name": "known", "uri": str(root / "sha.txt"), "kind": "sha256"},
                                {"name": "near", "uri": str(root / "phash.txt"), "kind": "phash"}],
                 "quality": {"min_side": 32, "min_sharpness": 1.0, "min_caption_chars": 10, "min_letter_share": 0.6},
                 # the tiny random model puts distinct photos up to ~0.9992 apart; copies are identical vectors
                 "dedup": {"enabled": True, "threshold": 0.9999}},
    )
    return params, curate(params), expected, (copies, reencoded), secret, root


def _removals(sidecar: dict) -> dict[str, tuple[str, str]]:
    tables = [pq.read_table(sidecar["errors_uri"]), pq.read_table(sidecar["removed_uri"])]
    return {r["sample_id"]: (r["stage"], r["reason"]) for t in tables for r in t.to_pylist() if r["sample_id"]}


def test_planted_samples_are_removed_with_stage_and_reason_and_counted(planted_run, mlflow_store):
    params, report, expected, (copies, reencoded), _, _ = planted_run
    sidecar = read_sidecar(report.manifest_uri)
    removed = _removals(sidecar)
    exact = {i for i, (_, reason) in removed.items() if reason == "dedup:exact"}
    near = {i for i, (_, reason) in removed.items() if reason == "dedup:semantic"}
    assert {i: r for i, (_, r) in removed.items() if i not in exact | near} == expected
    assert all(stage == reason.split(":")[0] for stage, reason in removed.values())
    assert exact < set(copies) and len(exact) == len(copies) - 1  # one of the byte copies stays
    assert near < set(reencoded) and len(near) == 1  # the same pixels in other bytes: a near-duplicate
    manifest = read_manifest(report.manifest_uri)
    assert manifest.num_rows == 27 - len(expected)  # every embedded sample has its row and score, screened ones none
    assert not any(i.startswith("web/") and i in removed for i in
                   manifest.filter(manifest["selected"])["sample_id"].to_pylist())
    funnel = {"pool": 27, "after_blocklist": 24, "after_quality": 20, "after_dedup": 16, "selected": 5}
    assert sidecar["funnel"] == {"web": funnel} and report.funnel == {"web": funnel}
    assert sidecar["filtered"] == {"web": {"dedup:exact": 3, "dedup:semantic": 1}}
    assert sidecar["dedup_unhashed"] == 0 == report.dedup_unhashed
    assert sidecar["filters"]["blocklists"] == [
        {"name": "known", "kind": "sha256", "uri": params.filters.blocklists[0].uri, "entries": 1},
        {"name": "near", "kind": "phash", "uri": params.filters.blocklists[1].uri, "entries": 1}]
    filtered_reasons = {r: n for r, n in report.quarantined.items() if ":" in r}
    assert filtered_reasons == {"blocklist:known": 1, "blocklist:near": 2, "quality:blank_or_blurred": 1,
                                "quality:too_small": 1, "quality:caption_too_short": 1,
                                "quality:caption_not_text": 1}
    metrics = mlflow.MlflowClient(mlflow_store).get_run(report.mlflow_run_id).data.metrics
    assert {s: metrics[f"funnel_web_{s}"] for s in funnel} == funnel
    assert (metrics["removed_dedup_exact"], metrics["removed_dedup_semantic"], metrics["dedup_unhashed"]) == (3, 1, 0)
    html = Path(report.report_uri).read_text()
    assert "<th>after_blocklist</th>" in html and "alt=\"filtered examples\"" in html


def test_no_byte_of_a_listed_image_or_its_copies_is_written(planted_run):
    _, report, _, _, secret, root = planted_run
    files = [p for folder in ("out", "cache") for p in (root / folder).rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.name == "report.html" for p in files)
    leaked = [(p, name) for p in files for name, data in secret.items() if data in p.read_bytes()]
    assert leaked == []


def test_a_clip_score_threshold_reads_the_cache_and_embeds_nothing(planted_run):
    params, first, _, _, _, _ = planted_run
    sidecar = read_sidecar(first.manifest_uri)
    scores = {}
    for shard_uri, entry_uri in sidecar["cache_entries"]["pool"].items():
        table = pq.read_table(entry_uri + ".parquet", columns=["key", "embedding"])
        x = vectors(table)
        parts = feature_parts("open_clip", params.backbone.modality, x.shape[1])
        image, text = x[:, parts["image"]], x[:, parts["text"]]
        cos = np.einsum("ij,ij->i", image, text) / (np.linalg.norm(image, axis=1) * np.linalg.norm(text, axis=1))
        name = Path(shard_uri).name
        scores |= {f"web/{name}/{k}": float(c) for k, c in zip(table["key"].to_pylist(), cos, strict=True)}
    threshold = float(np.median(list(scores.values())))
    quality = params.filters.quality.model_copy(update={"min_clip_score": threshold})
    filters = params.filters.model_copy(update={"quality": quality})
    second = curate(params.model_copy(update={"run_name": "clip", "filters": filters}))
    assert second.shards_embedded == 0  # a vector threshold is no part of the cache key
    removed = _removals(read_sidecar(second.manifest_uri))
    assert {i for i, (_, r) in removed.items() if r == "quality:clip_score"} == {
        i for i, s in scores.items() if s < threshold}
    below = sum(s < threshold for s in scores.values())
    assert second.funnel["web"]["after_quality"] == first.funnel["web"]["after_quality"] - below
