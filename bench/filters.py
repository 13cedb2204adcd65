"""Held-out precision@K with the filters off and on, on synthetic corpora carrying planted web junk.

Each seed's corpus (``synth`` with ``junk_rate``: blank, tiny and mis-captioned samples, exact and resized copies of
three reposted images — one of them robot-like — and one blocklisted image with a resized copy) is embedded once
with the tiny random-initialised open_clip (image+text, in this process: the vectors the flow's cache would hold).
The product's own parts then curate it three ways:

- **off**: the estimator fitted on every pool sample, the top-K of all of them;
- **on**: the demo's filters — the read-time screen (``tasks.filters.screen``: its blocklists by SHA-256 and pHash,
  image and caption thresholds) drops samples before they are embedded, the estimator is fitted on what is left
  (as a curation run fits it: on the pool as read), SemDeDup (``tasks.filters.dedup``) removes duplicates, and the
  top-K is taken of the rest;
- **on, fit after dedup**: the same, with the estimator fitted on the pool that dedup left.

The held-out labels are the generator's: a sample is relevant when its scene is robot-like (tabletop) and it is no
planted junk; the copies of one image count once. Precision@K is the share of the K selected that are distinct
relevant samples, at K = the number of them (R-precision) and at K/2; junk@K and dups@K count what filled the rest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics

import numpy as np
import pandas as pd
from PIL import Image

from bench.quality import DATA, OUT, _order, embedded_batches, markdown
from estimator.backbones import load_backbone
from estimator.backbones.tiny import save_tiny_backbone
from estimator.features import feature_parts
from estimator.scorer import ScorerConfig, fit_scorer
from synth import SynthConfig, generate_corpus
from synth.junk import blocklisted_image
from tasks.filters.blocklist import Blocklists, BlocklistSpec, image_phash
from tasks.filters.dedup import cluster_duplicates, unit_rows
from tasks.filters.quality import QualityConfig
from tasks.filters.screen import Screen

JUNK = {"blank", "tiny", "short_caption", "junk_caption", "blocklisted", "blocklisted_copy"}
ARMS = ("off", "on", "on, fit after dedup")


def _screen(seed: int, size: int) -> Screen:
    """The demo's screen: its quality thresholds, and its blocklists of the corpus's one listed image."""
    listed = blocklisted_image(seed, size)
    with Image.open(io.BytesIO(listed)) as image:
        phash = f"{image_phash(image.convert('RGB')):016x}"
    lists = [(BlocklistSpec(name="sha256", uri="-", kind="sha256"), [hashlib.sha256(listed).hexdigest()]),
             (BlocklistSpec(name="phash", uri="-", kind="phash"), [phash])]
    quality = QualityConfig(min_side=size // 2, min_sharpness=10.0, min_caption_chars=10, min_letter_share=0.6)
    return Screen(Blocklists(lists), quality)


def embed_corpus(seed: int, samples: int, junk_rate: float) -> dict[str, np.ndarray]:
    """Pool and robot vectors, and per pool sample its label, planted case, copy group and screen reason."""
    cached = DATA / f"filters-{seed}-{samples}-{junk_rate}.npz"
    if cached.exists():
        return dict(np.load(cached, allow_pickle=True))
    config = SynthConfig(seed=seed, samples_per_source=samples, shard_size=50, robot_episodes=40,
                         frames_per_episode=4, junk_rate=junk_rate)
    info = generate_corpus(str(DATA / f"corpus-filters-{seed}-{samples}-{junk_rate}"), config, overwrite=True)
    backbone = load_backbone(save_tiny_backbone("open_clip", str(DATA / "tiny-open_clip"), seed=0))
    screen = _screen(seed, config.image_size)
    out: dict[str, list] = {"pool": [], "robot": [], "ids": [], "reason": []}
    for role, specs in (("pool", info.pool), ("robot", info.robot)):
        for _, batch, vectors in embedded_batches(backbone, specs):
            out[role].append(vectors)
            if role == "pool":
                out["ids"] += batch["sample_id"].to_pylist()
                out["reason"] += [screen.reason(b, t, m) or "" for b, t, m in zip(
                    *(batch[c].to_pylist() for c in ("image", "text", "meta")), strict=True)]
    truth = pd.read_parquet(info.ground_truth_uri).set_index("sample_id")
    planted = pd.read_parquet(info.planted_uri).set_index("sample_id")
    ids = out["ids"]
    arrays = {"pool": np.concatenate(out["pool"]), "robot": np.concatenate(out["robot"]),
              "aligned": truth.loc[ids, "aligned"].to_numpy(),
              "case": planted["case"].reindex(ids).fillna("").to_numpy(),
              "copy_of": planted["copy_of"].reindex(ids).fillna("").to_numpy(),
              "screened": np.array(out["reason"]) != ""}
    DATA.mkdir(parents=True, exist_ok=True)
    np.savez(cached, **arrays)
    return arrays


def _top(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest scored of ``rows`` (pool positions)."""
    return rows[_order(scores[rows])[:k]]


def judge(top: np.ndarray, data: dict) -> dict:
    """Precision (distinct relevant samples), planted junk and repeated copies among ``top``."""
    seen: set[str] = set()
    relevant = junk = dups = 0
    for i in top:
        group = data["copy_of"][i]
        repeat = bool(group) and group in seen
        seen.add(group)
        junk += data["case"][i] in JUNK
        dups += repeat
        relevant += bool(data["aligned"][i]) and data["case"][i] not in JUNK and not repeat
    return {"precision": relevant / len(top), "junk": junk, "dups": dups}


def evaluate(data: dict, threshold: float) -> dict[str, dict]:
    """Each arm's figures at K = the number of distinct relevant samples (and K/2)."""
    pool, robot = data["pool"], data["robot"]
    parts = feature_parts("open_clip", "image+text", pool.shape[1])
    relevant = data["aligned"] & ~np.isin(data["case"], list(JUNK))
    groups = data["copy_of"][relevant]
    k = int((relevant & (data["copy_of"] == "")).sum() + len(set(groups[groups != ""])))
    every = np.arange(len(pool))
    screened = every[~data["screened"]]
    # SemDeDup as one cluster (a few hundred samples): each sample against every earlier one
    kept = screened[cluster_duplicates(unit_rows(pool[screened][:, parts["image"]]), threshold) < 0]
    fits = {"off": every, "on": screened, "on, fit after dedup": kept}
    results = {}
    for arm in ARMS:
        scorer, _ = fit_scorer(ScorerConfig(), robot, pool[fits[arm]], backbone_fingerprint="bench", parts=parts)
        scores = scorer.score(pool, [str(i) for i in every])
        candidates = every if arm == "off" else kept
        results[arm] = {"k": k, "removed": len(pool) - len(candidates),
                        **{f"{key}@K": v for key, v in judge(_top(scores, candidates, k), data).items()},
                        "precision@K/2": judge(_top(scores, candidates, k // 2), data)["precision"]}
    return results


def summarise(runs: list[dict[str, dict]]) -> pd.DataFrame:
    """Per arm: the median (min-max) of each figure over the seeds."""
    rows = []
    for arm in ARMS:
        row = {"arm": arm}
        for key in ("precision@K", "precision@K/2", "junk@K", "dups@K", "removed"):
            values = [r[arm][key] for r in runs]
            fmt = "{:.3f}" if key.startswith("precision") else "{:g}"
            row[key] = f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench filters", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samples-per-source", type=int, default=150)
    parser.add_argument("--junk-rate", type=float, default=0.1)
    parser.add_argument("--dedup", type=float, default=0.99995, help="SemDeDup cosine threshold on the image "
                        "vector (the demo's: the tiny random tower puts distinct images up to ~0.99996 apart)")
    args = parser.parse_args(argv)
    runs = []
    for seed in args.seeds:
        runs.append(evaluate(embed_corpus(seed, args.samples_per_source, args.junk_rate), args.dedup))
        print(f"seed {seed}: " + json.dumps(runs[-1]))
    df = summarise(runs)
    print(f"\n## filters: {len(args.seeds)} seeds, {4 * args.samples_per_source} pool samples, junk rate "
          f"{args.junk_rate}, K = {', '.join(str(r['off']['k']) for r in runs)}\n")
    print(markdown(df))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "filters.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
