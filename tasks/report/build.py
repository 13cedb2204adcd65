"""``build_report``: the analysis of one curated run, written beside its manifest.

result = build_report("s3://bucket/runs/RUN/manifest.parquet", storage)
result.html_uri       # .../report.html (self-contained), plus report_metrics.json and figures/*.png
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.manifest import read_samples, read_sidecar
from core.read import Quarantine
from core.settings import SourceSpec, StorageConfig
from core.storage import join, publish_bytes
from tasks.progress import Progress
from tasks.report import figures
from tasks.report.funnel import filters_section
from tasks.report.html import image, key_values, note, render_html, table
from tasks.report.memo import FigureMemo
from tasks.report.metrics import diversity, mmd_matrix
from tasks.report.sample import load_sets
from tasks.report.scan import ManifestScan, manifest_rows, scan_manifest

_RUN_KEYS = ("run_id", "backbone", "backbone_fingerprint", "k", "rows", "selected", "quarantined", "content_sha256")


@dataclass
class ReportResult:
    html_uri: str
    metrics_uri: str
    figure_uris: dict[str, str]
    metrics: dict[str, Any]


def _examples(rows: pa.Table, pool: dict[str, SourceSpec]) -> list[tuple[bytes, str, float, str]]:
    """(image, text, score, source) for manifest ``rows``, read back from their shards (range reads where the rows
    carry locations), in row order."""
    found: dict[str, tuple[bytes, str, float, str]] = {}
    quarantine = Quarantine(stage="report")
    for shard_uri in sorted(set(rows["shard_uri"].to_pylist())):
        part = rows.filter(pc.equal(rows["shard_uri"], shard_uri))
        spec = pool.get(part["source"][0].as_py())
        if spec is None:
            continue
        for batch in read_samples(spec, shard_uri, part, quarantine=quarantine):
            columns = (batch[c].to_pylist() for c in ("sample_id", "image", "text", "score", "source"))
            for sid, img, text, score, src in zip(*columns, strict=True):
                found[sid] = (img, text, float(score), src)
    return [found[s] for s in rows["sample_id"].to_pylist() if s in found]


def _jsonable(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return json.loads(df.to_json(orient="index"))


def _selection_summary(scan: ManifestScan) -> dict[str, Any]:
    """K, the fraction of the pool it is and the score threshold: the score of the K-th selected sample (the
    selected sample ranked last, i.e. the lowest selected score), which every selected sample reaches."""
    k, rows = int(scan.scores.selected.sum()), scan.rows
    threshold = scan.scores.threshold
    return {"k": k, "pool_samples": rows, "fraction": k / rows if rows else 0.0, "score_threshold": threshold}


def _selection_mode(sidecar: dict[str, Any]) -> dict[str, Any]:
    """How the run chose its K (a sidecar from before selection modes: the top-K, no dedup)."""
    recorded = sidecar.get("selection") or {}
    return {"mode": recorded.get("mode", "top_k"), "seed": recorded.get("seed"),
            "dedup_threshold": recorded.get("dedup_threshold"),
            "duplicates_skipped": recorded.get("duplicates_skipped", 0)}


def _backbone_rows(sidecar: dict[str, Any]) -> dict[str, Any]:
    spec = sidecar.get("backbone")
    rows = dict(spec) if isinstance(spec, dict) else {"model": spec}
    return rows | {"fingerprint": sidecar.get("backbone_fingerprint"), "embed_dim": sidecar.get("embed_dim")}


def _shortcut_section(scorer: dict[str, Any]) -> str:
    """Probe accuracies on the image and text parts beside the estimator's, and the diagnostic's note."""
    rows = {f"{p} part only": f"{scorer[f'probe_{p}_val_accuracy']:.3f} (AUC {scorer[f'probe_{p}_val_auc']:.3f})"
            for p in ("image", "text") if f"probe_{p}_val_accuracy" in scorer}
    if "val_accuracy" in scorer:
        rows[f"estimator ({scorer.get('features')} part)"] = f"{scorer['val_accuracy']:.3f}"
    return key_values(rows) + note(scorer.get("shortcut_note", "no diagnostic recorded")) + note(
        "Balanced validation accuracy of a linear probe trained on each part of the vector alone. Text that "
        "separates robot from pool where images do not means the texts' wording differs (robot instructions vs "
        "web captions); a scorer reading the text would select by wording.")


# What the report does, in order (each step's start is logged and reported to ``on_step``).
STEPS = ("reading the sampled sets", "MMD and diversity", "figures and the 2-D map", "example thumbnails",
         "publishing the report")


def build_report(
    manifest_uri: str,
    storage: StorageConfig | None = None,
    *,
    out_uri: str | None = None,
    per_set: int = 500,
    seed: int = 0,
    examples: int = 8,
    on_step: Callable[[str, int, int], None] | None = None,
    keep_figures: bool = True,
) -> ReportResult:
    """Compute MMD², diversity, score quantiles and the selected mixture of a run; draw the figures; publish
    ``report.html``, ``report_metrics.json`` and ``figures/*.png`` under ``out_uri`` (default: the manifest's
    directory). Embeddings are sampled (``per_set`` per set, seeded) and the manifest is streamed once through a
    few of its columns, so memory does not grow with the pool and time only by that one read.

    ``on_step(name, done, total)`` is called as each step starts (the curate flow moves its UI progress bar).
    ``keep_figures``: read back the figures (and the map's coordinates) drawn before from equal inputs, and keep
    those drawn now, beside the run's embedding cache (``tasks.report.memo``); False draws every one."""
    with Progress("report", total=len(STEPS), unit="steps") as progress:

        def step(done: int) -> None:
            # The steps take seconds to minutes each (the 2-D map the longest): say which one runs now.
            progress.log(f"report: {STEPS[done]} ({done + 1}/{len(STEPS)})")
            if on_step is not None:
                on_step(STEPS[done], done, len(STEPS))

        return _build_report(
            manifest_uri, storage, out_uri=out_uri, per_set=per_set, seed=seed, examples=examples,
            progress=progress, step=step, keep_figures=keep_figures,
        )



def _filters_html(funnel: pd.DataFrame, pngs: dict[str, bytes]) -> str:
    if funnel.empty:
        return note("No filters were set: every sample read reached the selection.")
    shown = image(pngs["filtered_examples"], "filtered examples") if "filtered_examples" in pngs else ""
    return table(funnel) + note(
        "Samples per source after each filter: blocklists, then the quality thresholds (image size, sharpness, "
        "captions, CLIP score, probes), then pool-wide dedup, then the selection. Below, a few samples the quality "
        "and dedup filters removed, with their reason; a blocklisted sample is never shown.") + shown


def _build_report(
    manifest_uri: str,
    storage: StorageConfig | None,
    *,
    out_uri: str | None,
    per_set: int,
    seed: int,
    examples: int,
    progress: Progress,
    step: Callable[[int], None],
    keep_figures: bool,
) -> ReportResult:
    out_uri = out_uri or manifest_uri.rsplit("/", 1)[0]
    step(0)
    sidecar = read_sidecar(manifest_uri, storage)
    memo = FigureMemo.beside(sidecar.get("cache_uri") if keep_figures else None, storage)
    scan = scan_manifest(manifest_uri, storage, per_set=per_set, seed=seed, examples=examples)
    data = load_sets(manifest_uri, storage, per_set=per_set, seed=seed, scan=scan)
    robot_names = [s["name"] for s in sidecar.get("robot", [])]
    order = sorted(scan.scores.sources) + robot_names + ["selected", "pool"]
    sets = {k: data.sets[k] for k in order if k in data.sets}
    progress.update()
    step(1)

    mmd = mmd_matrix(sets)
    div = pd.DataFrame(
        {"diversity": {k: diversity(v) for k, v in sets.items()}, "n": {k: len(v) for k, v in sets.items()}}
    )
    quantiles = scan.scores.quantiles()
    share = scan.scores.by_source()
    selection = _selection_summary(scan) | _selection_mode(sidecar)
    metrics: dict[str, Any] = {
        "run": {k: sidecar.get(k) for k in _RUN_KEYS},
        "selection": selection,
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
    progress.update()
    step(2)

    colours = figures.source_colours([*order, *data.map_labels, *scan.scores.sources])
    edges, counts = scan.scores.figure()
    xy = memo.map_coordinates(data.map_points, seed=seed)
    pngs = {
        "mmd_heatmap": memo.png("mmd_heatmap", figures.mmd_heatmap, mmd),
        "embedding_map": memo.png("embedding_map", figures.embedding_map, xy, data.map_labels, data.map_selected,
                                  colours=colours),
        "score_distributions": memo.png("score_distributions", figures.score_distributions, edges, counts,
                                        selection["score_threshold"], colours=colours),
        "selected_mixture": memo.png("selected_mixture", figures.selected_mixture, share),
    }

    def thumbnails(samples: list[tuple[bytes, str, float, str]], title: str) -> bytes:
        return memo.png("thumbnails", figures.thumbnails, samples, title)

    progress.update()
    step(3)
    pool_specs = {s["name"]: SourceSpec.model_validate(s).bind(storage) for s in sidecar.get("pool", [])}
    if examples > 0:
        top = manifest_rows(manifest_uri, storage, scan.top)
        low = manifest_rows(manifest_uri, storage, scan.lowest)
        for name, rows, title in (
            ("top_selected", top, "Highest-ranked selected samples"),
            ("lowest_scored", low, "Lowest-scored pool samples"),
        ):
            samples = _examples(rows, pool_specs)
            if samples:
                pngs[name] = thumbnails(samples, title)
    funnel, filter_pngs = filters_section(sidecar, storage, pool_specs, examples=_examples,
                                          thumbnails=thumbnails, show=examples > 0)
    pngs |= filter_pngs
    metrics["funnel"] = sidecar.get("funnel") or {}
    progress.update()
    step(4)

    figure_uris = {name: join(out_uri, "figures", f"{name}.png") for name in pngs}
    for name, png in pngs.items():
        publish_bytes(figure_uris[name], png, storage)
    metrics_uri = join(out_uri, "report_metrics.json")
    publish_bytes(metrics_uri, json.dumps(metrics, indent=1, sort_keys=True).encode(), storage)

    run = {"run_id": sidecar.get("run_id"), "manifest_uri": manifest_uri}
    run.update(pool=", ".join(pool_specs), robot=", ".join(robot_names))
    counts = {k: sidecar.get(k) for k in ("rows", "selected", "quarantined")}
    threshold = selection["score_threshold"]
    sections = [
        ("Run", key_values(run)),
        (
            "Selection",
            key_values(
                {
                    "K": selection["k"],
                    "fraction of the pool": f"{selection['fraction']:.2%} of {selection['pool_samples']} samples",
                    "score threshold": "–" if threshold is None else f"{threshold:.4g}",
                    "mode": selection["mode"] + ("" if selection["seed"] is None else f" (seed {selection['seed']})"),
                    "near-duplicates skipped": "off" if selection["dedup_threshold"] is None else
                    f"{selection['duplicates_skipped']} (cosine ≥ {selection['dedup_threshold']})",
                }
            )
            + note(
                ("The K highest-scoring pool samples are selected" if selection["mode"] == "top_k" else
                 "K pool samples are drawn without replacement with probability ∝ exp(score), seeded")
                + " (within any per-source caps, skipping near-duplicates when set). The threshold is the score of "
                "the lowest-scored selected sample: every selected sample scores at least this much. A sample's "
                "rank is its place in score order whatever the mode."
            ),
        ),
        ("Backbone", key_values(_backbone_rows(sidecar)) + note("The frozen model that embedded every sample; "
                                                                "its fingerprint keys the embedding cache.")),
        ("Scorer", key_values(sidecar.get("scorer") or {}) + note("How the samples were scored and, for a "
                                                                  "trained probe, its validation metrics.")),
        ("Shortcut diagnostic", _shortcut_section(sidecar.get("scorer") or {})),
        (
            "Counts",
            key_values(counts)
            + table(share)
            + note(
                "Per source: samples in the pool, how many were selected, the source's share of the pool and of "
                "the selected set, and the share of its own samples selected."
            ),
        ),
        ("Filters", _filters_html(funnel, pngs)),
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
            + image(pngs["mmd_heatmap"], "MMD heatmap")
            + note(
                "Each cell is the squared MMD between two sets' embeddings: 0 when the kernel cannot tell them "
                "apart, larger the further apart they are. A useful selection sits closer to the robot sets than "
                "the pool as a whole does."
            ),
        ),
        (
            "Diversity",
            note(
                "1 / E[exp(-2‖u−v‖²)] over pairs of L2-normalised embeddings (inverse Wang–Isola "
                "uniformity); higher = more spread."
            )
            + table(div),
        ),
        (
            "Scores",
            table(quantiles)
            + image(pngs["score_distributions"], "score distributions")
            + note(
                "Score quantiles per source, overall and of the selected set (table); the density of scores per "
                "source (figure). Higher scores look more like the robot data; the dashed line is the threshold, "
                "and the samples to its right were selected."
            ),
        ),
        (
            "Selected mixture",
            image(pngs["selected_mixture"], "selected mixture")
            + note(
                "Each source's share of the pool beside its share of the selected set: a source whose second bar "
                "is taller is over-represented in the selection, a shorter one under-represented."
            ),
        ),
        (
            "Embedding map",
            image(pngs["embedding_map"], "t-SNE map")
            + note(
                f"A 2-D t-SNE of at most {per_set} embeddings per set, coloured by source; selected pool samples "
                "have a black edge. Selected points should gather near the robot sets' points. t-SNE keeps "
                "neighbourhoods, not distances: read which points sit together, not how far apart clusters are."
            ),
        ),
    ]
    captions = {
        "top_selected": "The highest-ranked selected samples, with their source and score.",
        "lowest_scored": "The lowest-scored pool samples, with their source and score: what the scorer finds "
        "least like the robot data.",
    }
    sections += [
        (n.replace("_", " ").capitalize(), image(pngs[n], n) + note(captions[n])) for n in captions if n in pngs
    ]
    html_uri = join(out_uri, "report.html")
    page = render_html(f"Curation report — {sidecar.get('run_id', '')}", sections)
    publish_bytes(html_uri, page.encode(), storage)
    progress.update()
    return ReportResult(html_uri=html_uri, metrics_uri=metrics_uri, figure_uris=figure_uris, metrics=metrics)
