"""Feature statistics the way LeRobot v3 stores them, so its normalisers (MEAN_STD, MIN_MAX, QUANTILES,
QUANTILE10) work on the datasets the product writes.

Per episode: ``min``, ``max``, ``mean``, ``std``, ``count`` and the quantiles ``q01``/``q10``/``q50``/``q90``/
``q99`` of every numeric feature (over frames, per dimension) and of every camera (over the pixels of sampled
frames, per channel, scaled to [0, 1], shape (3, 1, 1)). They go into ``meta/episodes`` as ``stats/{feature}/{stat}``
columns; ``meta/stats.json`` holds their aggregate: exact min/max/mean/std, count-weighted quantiles (LeRobot's
own approximation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
MAX_IMAGE_SAMPLES = 100  # frames per episode an image's statistics are taken over (evenly spaced)

Stats = dict[str, np.ndarray]


def feature_stats(values: np.ndarray) -> Stats:
    """Statistics over the first axis of (N,) or (N, D) values; every entry has shape (D,) (scalars: (1,))."""
    values = values.reshape(len(values), -1).astype(np.float64)
    stats = {
        "min": values.min(0),
        "max": values.max(0),
        "mean": values.mean(0),
        "std": values.std(0),
        "count": np.array([len(values)]),
    }
    return stats | {name: np.quantile(values, q, axis=0) for name, q in QUANTILES.items()}


def image_stats(frames: list[np.ndarray]) -> Stats:
    """Per-channel statistics of uint8 (H, W, C) frames in [0, 1], shaped (C, 1, 1) as LeRobot's are."""
    picks = np.unique(np.round(np.linspace(0, len(frames) - 1, min(len(frames), MAX_IMAGE_SAMPLES))).astype(int))
    pixels = np.stack([frames[i] for i in picks]).reshape(-1, frames[0].shape[-1]) / 255.0
    stats = feature_stats(pixels)
    return {k: v if k == "count" else v.reshape(-1, 1, 1) for k, v in stats.items()} | {
        "count": np.array([len(frames)])
    }


def aggregate(per_episode: list[Stats]) -> Stats:
    """One feature's dataset statistics from its episodes' (parallel variance; quantiles weighted by count)."""
    counts = np.array([s["count"][0] for s in per_episode], dtype=np.float64)
    weights = (counts / counts.sum()).reshape(-1, *([1] * per_episode[0]["mean"].ndim))
    means = np.stack([s["mean"] for s in per_episode])
    mean = (weights * means).sum(0)
    variance = (weights * (np.stack([s["std"] for s in per_episode]) ** 2 + (means - mean) ** 2)).sum(0)
    return {
        "min": np.stack([s["min"] for s in per_episode]).min(0),
        "max": np.stack([s["max"] for s in per_episode]).max(0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": np.array([int(counts.sum())]),
    } | {name: (weights * np.stack([s[name] for s in per_episode])).sum(0) for name in QUANTILES}


def episode_columns(stats: dict[str, Stats]) -> dict[str, Any]:
    """One episode's statistics as ``meta/episodes`` columns: ``stats/{feature}/{stat}`` -> nested lists."""
    return {f"stats/{feature}/{name}": v.tolist() for feature, s in stats.items() for name, v in s.items()}


def stats_json(per_episode: list[dict[str, Stats]]) -> dict[str, dict[str, Any]]:
    """``meta/stats.json``: every feature's aggregate statistics as nested lists."""
    features = per_episode[0]
    return {f: {k: v.tolist() for k, v in aggregate([ep[f] for ep in per_episode]).items()} for f in features}
