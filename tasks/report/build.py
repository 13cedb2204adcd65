"""``build_report``: the analysis of one curated run, written beside its manifest.

result = build_report("s3://bucket/runs/RUN/manifest.parquet", storage)
result.html_uri       # .../report.html (self-contained), plus report_metrics.json and figures/*.png
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.manifest import read_sidecar
from core.read import Quarantine, read_shard
from core.settings import SourceSpec, StorageConfig
from core.storage import join, publish_bytes
from tasks.report import figures
from tasks.report.html import image, key_values, note, render_html, table
from tasks.report.metrics import diversity, mmd_matrix, score_quantiles, selection_by_source
from tasks.report.sample import load_sets, read_manifest_columns

_RUN_KEYS = ("run_id", "backbone", "backbone_fingerprint", "k", "rows", "selected", "quarantined", "content_sha256")


@dataclass
class ReportResult:
    html_uri: str
    metrics_uri: str
    figure_uris: dict[str, str]
    metrics: dict[str, Any]


def _examples(
    rows: pd.DataFrame, pool: dict[str, SourceSpec], storage: StorageConfig | None
) -> list[tuple[bytes, str, float, str]]:
    """(image, text, score, source) for ``rows`` of the manifest, read back from their shards, in row order."""
    score = dict(zip(rows["sample_id"], rows["score"], strict=True))
    found: dict[str, tuple[bytes, str, float, str]] = {}
    quarantine = Quarantine(stage="report")
    for shard_uri, group in rows.groupby("shard_uri", sort=True):
        spec = pool.get(str(group["source"].iloc[0]))
        if spec is None:
            continue
        wanted = pa.array(group["sample_id"].astype(str).tolist(), pa.string())
        for batch in read_shard(spec, str(shard_uri), quarantine=quarantine, storage=storage):
            batch = batch.filter(pc.is_in(batch["sample_id"], value_set=wanted))
            for sid, img, text, src in zip(
                *(batch[c].to_pylist() for c in ("sample_id", "image", "text", "source")), strict=True
            ):
                found[sid] = (img, text, float(score[sid]), src)
    return [found[s] for s in rows["sample_id"] if s in found]


def _jsonable(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return json.loads(df.to_json(orient="index"))


def build_report(
    manifest_uri: str,
    storage: StorageConfig | None = None,
    *,
    out_uri: str | None = None,
    per_set: int = 500,
    seed: int = 0,
    examples: int = 8,
) -> ReportResult:
    """Compute MMD², diversity, score quantiles and the selected mixture of a run; draw the figures; publish
    ``report.html``, ``report_metrics.json`` and ``figures/*.png`` under ``out_uri`` (default: the manifest's
    directory). Embeddings are sampled (``per_set`` per set, seeded), so the cost does not grow with the pool."""
    out_uri = out_uri or manifest_uri.rsplit("/", 1)[0]
    sidecar = read_sidecar(manifest_uri, storage)
    manifest = read_manifest_columns(
        manifest_uri, storage, ["sample_id", "source", "shard_uri", "score", "rank", "selected"]
    )
    data = load_sets(manifest_uri, storage, per_set=per_set, seed=seed)
    robot_names = [s["name"] for s in sidecar.get("robot", [])]
    order = sorted(manifest["source"].unique().astype(str)) + robot_names + ["selected", "pool"]
    sets = {k: data.sets[k] for k in order if k in data.sets}

    mmd = mmd_matrix(sets)
    div = pd.DataFrame(
        {"diversity": {k: diversity(v) for k, v in sets.items()}, "n": {k: len(v) for k, v in sets.items()}}
    )
    quantiles = score_quantiles(manifest)
    share = selection_by_source(manifest)
    metrics: dict[str, Any] = {
        "run": {k: sidecar.get(k) for k in _RUN_KEYS},
        "mmd2": _jsonable(mmd),
        "bandwidth": mmd.attrs["bandwidth"],
        "unbiased": mmd.attrs["unbiased"],
        "kernel": "rbf exp(-||a-b||^2 / (2 bandwidth^2)), one median-heuristic bandwidth for all pairs",
        "diversity": {k: float(v) for k, v in div["diversity"].items()},
        "set_sizes": {k: int(v) for k, v in div["n"].items()},
        "score_quantiles": _jsonable(quantiles),
        "selection_by_source": _jsonable(share),
        "per_set": per_set,
        "seed": seed,
    }

    colours = figures.source_colours([*order, *data.map_labels, *manifest["source"].astype(str)])
    pngs = {
        "mmd_heatmap": figures.mmd_heatmap(mmd),
        "embedding_map": figures.embedding_map(
            data.map_points, data.map_labels, data.map_selected, colours=colours, seed=seed
        ),
        "score_distributions": figures.score_distributions(manifest, colours=colours),
        "selected_mixture": figures.selected_mixture(share),
    }
    pool_specs = {s["name"]: SourceSpec.model_validate(s) for s in sidecar.get("pool", [])}
    if examples > 0:
        top = manifest[manifest["selected"]].nsmallest(examples, "rank")
        low = manifest.nsmallest(examples, "score")
        for name, rows, title in (
            ("top_selected", top, "Highest-ranked selected samples"),
            ("lowest_scored", low, "Lowest-scored pool samples"),
        ):
            samples = _examples(rows, pool_specs, storage)
            if samples:
                pngs[name] = figures.thumbnails(samples, title)

    figure_uris = {name: join(out_uri, "figures", f"{name}.png") for name in pngs}
    for name, png in pngs.items():
        publish_bytes(figure_uris[name], png, storage)
    metrics_uri = join(out_uri, "report_metrics.json")
    publish_bytes(metrics_uri, json.dumps(metrics, indent=1, sort_keys=True).encode(), storage)

    run = {k: sidecar.get(k) for k in ("run_id", "backbone", "backbone_fingerprint", "k", "scorer")}
    run.update(manifest_uri=manifest_uri, pool=", ".join(pool_specs), robot=", ".join(robot_names))
    counts = {k: sidecar.get(k) for k in ("rows", "selected", "quarantined")}
    sections = [
        ("Run", key_values(run)),
        ("Counts", key_values(counts) + table(share)),
        (
            "Embedding",
            note("This run's embedding job, summed over the shards it embedded (seconds are worker time; "
                 "cached shards are not counted; per-shard rows in the run's stats.json).")
            + key_values(sidecar.get("embedding") or {"shards": 0}),
        ),
        (
            "MMD² between sets",
            note(
                f"Unbiased U-statistic, RBF kernel, one median-heuristic bandwidth "
                f"σ = {mmd.attrs['bandwidth']:.4g} for all pairs; at most {per_set} "
                f"embeddings per set (seed {seed})."
            )
            + table(mmd)
            + image(pngs["mmd_heatmap"], "MMD heatmap"),
        ),
        (
            "Diversity",
            note(
                "1 / E[exp(-2‖u−v‖²)] over pairs of L2-normalised embeddings (inverse Wang–Isola "
                "uniformity); higher = more spread."
            )
            + table(div),
        ),
        ("Scores", table(quantiles) + image(pngs["score_distributions"], "score distributions")),
        ("Selected mixture", image(pngs["selected_mixture"], "selected mixture")),
        ("Embedding map", image(pngs["embedding_map"], "t-SNE map")),
    ]
    sections += [
        (n.replace("_", " ").capitalize(), image(pngs[n], n)) for n in ("top_selected", "lowest_scored") if n in pngs
    ]
    html_uri = join(out_uri, "report.html")
    page = render_html(f"Curation report — {sidecar.get('run_id', '')}", sections)
    publish_bytes(html_uri, page.encode(), storage)
    return ReportResult(html_uri=html_uri, metrics_uri=metrics_uri, figure_uris=figure_uris, metrics=metrics)
