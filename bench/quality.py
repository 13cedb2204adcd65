"""Selection quality per scorer and selection mode on synthetic corpora built to expose a text-style shortcut.

Each corpus (``synth`` presets and options) is embedded once with the tiny random-initialised open_clip in its
default modality (image+text), in this process (no Ray: the vectors are the ones the flow's cache would hold).
Every scorer is then fitted with the product's ``fit_scorer`` on the part of the vector it reads, and the pool is
ranked and selected with the product's selection functions. Precision@K is the share of ground-truth aligned
(tabletop) samples among the K selected, at K = the number of aligned samples (R-precision, the hardest) and at
K = half of it (a curation keeps a fraction); AUROC is over all pool samples.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.read import Quarantine, read_source
from core.settings import SourceSpec
from estimator.backbones import load_backbone
from estimator.backbones.tiny import save_tiny_backbone
from estimator.features import feature_parts
from estimator.probe import roc_auc
from estimator.scorer import ScorerConfig, fit_scorer
from synth import SynthConfig, generate_corpus
from tasks.embed import decode_image
from tasks.select import Picker, draw_keys

OUT = Path("bench/out")
DATA = Path("data/bench/quality")
CORPORA = {  # name: synth settings beside the common ones
    "standard": {},
    "shortcut": {"preset": "shortcut"},
    "harmonised": {"robot_wording": "caption", "mismatched_sources": True},
}
SCORERS = {  # row name: scorer settings ("before" = the old default: the estimator reads image + text)
    "estimator, image+text (before)": {"features": "all"},
    "estimator, image (default)": {},
    "estimator, text": {"features": "text"},
    "knn": {"method": "knn"},
    "mean_distance": {"method": "mean_distance"},
    "normsim (p=2)": {"method": "normsim"},
    "random": {"method": "random"},
}


def embedded_batches(backbone: Any, specs: list[SourceSpec]) -> Iterator[tuple[SourceSpec, pa.Table, np.ndarray]]:
    """Each read batch of ``specs`` with its vectors (images and texts through ``backbone``, in this process)."""
    for spec in specs:
        for batch in read_source(spec, quarantine=Quarantine(stage="read")):
            images = [decode_image(b) for b in batch["image"].to_pylist()]
            yield spec, batch, backbone.embed(images, batch["text"].to_pylist())


def embed_corpus(name: str, settings: dict, samples: int) -> dict[str, np.ndarray]:
    """Pool and robot vectors, pool sources and ground truth of one corpus (generated and embedded once)."""
    cached = DATA / f"{name}-{samples}.npz"
    if cached.exists():
        return dict(np.load(cached))
    config = SynthConfig(seed=3, samples_per_source=samples, shard_size=50, robot_episodes=40,
                         frames_per_episode=4, **settings)
    info = generate_corpus(str(DATA / f"corpus-{name}-{samples}"), config)
    backbone = load_backbone(save_tiny_backbone("open_clip", str(DATA / "tiny-open_clip"), seed=0))
    out: dict[str, list] = {"pool": [], "robot": [], "ids": [], "sources": []}
    for role, specs in (("pool", info.pool), ("robot", info.robot)):
        for spec, batch, vectors in embedded_batches(backbone, specs):
            out[role].append(vectors)
            if role == "pool":
                out["ids"] += batch["sample_id"].to_pylist()
                out["sources"] += [spec.name] * batch.num_rows
    truth = pd.read_parquet(info.ground_truth_uri).set_index("sample_id")
    arrays = {"pool": np.concatenate(out["pool"]), "robot": np.concatenate(out["robot"]),
              "aligned": truth.loc[out["ids"], "aligned"].to_numpy(), "sources": np.array(out["sources"])}
    DATA.mkdir(parents=True, exist_ok=True)
    np.savez(cached, **arrays)
    return arrays


def _order(keys: np.ndarray) -> np.ndarray:
    """Positions from the highest key down, ties in pool order (the selection engine's order)."""
    return np.lexsort((np.arange(len(keys)), -np.asarray(keys, np.float64)))


def _dedup(order: np.ndarray, n: int, image: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """The engine's pick walk over ``order`` in memory: the mask of the first ``n`` non-duplicates, and how many
    near-duplicates were passed over."""
    picker, chosen = Picker(n, dedup_threshold=threshold), np.zeros(len(order), bool)
    for start in range(0, len(order), 1024):
        chunk = order[start:start + 1024]
        chosen[chunk[picker.offer(["pool"] * len(chunk), image[chunk])]] = True
        if picker.done:
            break
    return chosen, picker.duplicates


def evaluate(data: dict[str, np.ndarray], dedup: float) -> list[dict]:
    """One row per scorer (and per selection mode of the default estimator)."""
    pool, robot, aligned = data["pool"], data["robot"], data["aligned"]
    parts = feature_parts("open_clip", "image+text", pool.shape[1])
    k = int(aligned.sum())
    rows = []
    for name, settings in SCORERS.items():
        scorer, metrics = fit_scorer(ScorerConfig(**settings), robot, pool, backbone_fingerprint="bench",
                                     parts=parts)
        scores = scorer.score(pool, [str(i) for i in range(len(pool))])
        order = _order(scores)
        row = {"scorer": name, "p@K": aligned[order[:k]].mean(), "p@K/2": aligned[order[:k // 2]].mean(),
               "auroc": roc_auc(scores[aligned], scores[~aligned]), "shortcut": metrics["shortcut"],
               "probe_image": metrics.get("probe_image_val_accuracy"),
               "probe_text": metrics.get("probe_text_val_accuracy")}
        rows.append(row)
        if settings:
            continue
        # the default estimator's logits are log density ratios: the engine's seeded per-row Gumbel keys
        draw = _order(draw_keys(scores, seed=0, source="pool", shard="bench"))
        rows.append({"scorer": "estimator, image, importance resampling", "p@K": aligned[draw[:k]].mean(),
                     "p@K/2": aligned[draw[:k // 2]].mean(), "auroc": row["auroc"],
                     "sources@K": int(len(set(data["sources"][draw[:k]])))})
        row["sources@K"] = int(len(set(data["sources"][order[:k]])))
        image = pool[:, parts["image"]]
        for share, label in ((1, "p@K"), (2, "p@K/2")):
            n = k // share
            chosen, dropped = _dedup(order, n, image, dedup)
            if share == 1:
                rows.append({"scorer": f"estimator, image, dedup cos ≥ {dedup}", "auroc": row["auroc"],
                             "dropped@K": dropped})
            rows[-1][label] = aligned[chosen].mean()
    return rows


def markdown(df: pd.DataFrame) -> str:
    """A DataFrame as a markdown table, floats to 3 decimals, blanks where a row has no value."""
    def cell(v: object) -> str:
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}" if isinstance(
            v, float) else str(v)
    lines = ["| " + " | ".join(df.columns) + " |", "|---" * len(df.columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench quality", description=__doc__)
    parser.add_argument("--samples-per-source", type=int, default=150)
    parser.add_argument("--dedup", type=float, default=0.999, help="cosine threshold of the dedup row (the tiny random "
                        "tower's vectors are concentrated: median pairwise cosine 0.95)")
    args = parser.parse_args(argv)
    tables = {}
    for name, settings in CORPORA.items():
        data = embed_corpus(name, settings, args.samples_per_source)
        df = pd.DataFrame(evaluate(data, args.dedup))
        k = int(data["aligned"].sum())
        print(f"\n## {name}: pool {len(data['pool'])}, robot {len(data['robot'])}, K = {k} aligned\n")
        print(markdown(df))
        tables[name] = {"k": k, "pool": len(data["pool"]), "rows": df.to_dict(orient="records")}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "quality.json").write_text(json.dumps(tables, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
