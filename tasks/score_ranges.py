"""The arithmetic of a distributed global ranking: order keys, score histograms and score ranges.

A pool too large for one process is ranked as a range-partitioned sort: every worker histograms its scores on the
top 16 bits of an order-preserving integer key, the driver sums the histograms (65,536 counters, whatever the pool)
and cuts the key space into ranges of about equal rows; each range is then sorted on its own and its first rank is
the number of rows in the ranges above it. The order is the one a single sort of the whole pool would give: higher
key first, equal keys in pool order (the pool position breaks ties).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BIN_SHIFT = 16
BINS = 1 << (32 - BIN_SHIFT)
_TOP = np.uint32(0xFFFFFFFF)
_SIGN = np.uint32(0x80000000)


def order_keys(scores: np.ndarray) -> np.ndarray:
    """uint32 keys that sort as the float32 scores do (a higher score has a higher key).

    Raises ``ValueError`` for a NaN score: it has no place in a ranking. -0.0 and 0.0 get one key, as they tie in
    ``np.argsort``."""
    s = np.asarray(scores, np.float32) + np.float32(0.0)  # -0.0 + 0.0 == +0.0: one key for a tie argsort sees
    if np.isnan(s).any():
        raise ValueError("a score is NaN: the scorer's output cannot be ranked")
    bits = s.view(np.uint32)
    # IEEE floats order as sign-magnitude integers: flip every bit of a negative, set the sign bit of a positive
    return np.where(bits & _SIGN, ~bits, bits | _SIGN).astype(np.uint32)


def score_bins(keys: np.ndarray) -> np.ndarray:
    """The histogram bin of each key (its top 16 bits), as int32 (what a scratch file stores and filters on)."""
    return (keys >> np.uint32(BIN_SHIFT)).astype(np.int32)


def histogram(keys: np.ndarray) -> np.ndarray:
    """Rows per bin, int64 [BINS]."""
    return np.bincount(score_bins(keys), minlength=BINS).astype(np.int64)


def rank_order(keys: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Indices of the rows from the best down: higher key first, ties by the lower pool position."""
    return np.lexsort((positions, _TOP - keys))


@dataclass(frozen=True)
class ScoreRange:
    """Bins [low, high) of the key space; ``offset`` rows rank above it, ``rows`` fall in it."""

    low: int
    high: int
    offset: int
    rows: int


def plan_ranges(hist: np.ndarray, parts: int) -> list[ScoreRange]:
    """Cut the bins from the top score down into at most ``parts`` ranges of about equal rows.

    A bin is never split, so a bin holding many equal scores makes its range larger than the others (one range
    then holds that bin's rows in memory)."""
    total = int(hist.sum())
    target = max(1, -(-total // max(1, parts)))
    ranges: list[ScoreRange] = []
    high, rows, offset = BINS, 0, 0
    for b in np.flatnonzero(hist)[::-1]:
        rows += int(hist[b])
        if rows >= target:
            ranges.append(ScoreRange(low=int(b), high=high, offset=offset, rows=rows))
            high, offset, rows = int(b), offset + rows, 0
    if rows:
        ranges.append(ScoreRange(low=0, high=high, offset=offset, rows=rows))
    return ranges


def pool_positions(shard_index: int, rows: int) -> np.ndarray:
    """Pool positions of a shard's rows: (shard index << 32) | row. They order as the plan's pool does (shards
    in plan order, rows in entry order) whatever the grouping of shards into tasks."""
    return (np.int64(shard_index) << np.int64(32)) | np.arange(rows, dtype=np.int64)
