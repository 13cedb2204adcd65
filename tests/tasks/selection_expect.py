"""An independent expectation of the selection engine's manifest for tests: the whole pool in numpy arrays, ranked
with a plain ``np.lexsort`` and chosen with a plain Python walk over brute-force cosine similarities — no Ray, no
histograms, no scratch files, no faiss. Only the draw's noise comes from the product (``select.draw_keys`` *is* the
definition of each row's draw), and the rows are laid out with the manifest's own row builder."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from tasks.cache import EmbeddingCache, sample_ids, vectors
from tasks.score import CachedShard, shard_manifest_rows
from tasks.select import SelectionConfig, draw_keys


def expected_manifest(cache: EmbeddingCache, shards: list[CachedShard], scorer: object, k: int, *,
                      selection: SelectionConfig | None = None, caps: dict[str, int] | None = None,
                      ) -> tuple[pa.Table, int]:
    """The manifest (pool order) and the number of near-duplicates skipped, as the engine should write them."""
    selection, caps = selection or SelectionConfig(), caps or {}
    scores, draws, sources, xs, sizes = [], [], [], [], []
    for shard in shards:
        table = shard.entry.read(["key", "embedding"])
        sizes.append(table.num_rows)
        if not table.num_rows:
            continue
        x = vectors(table)
        ids = sample_ids(shard.source, shard.shard, table["key"]).to_pylist()
        s = np.asarray(scorer.score(x, ids), np.float32)  # type: ignore[attr-defined]
        scores.append(s)
        draws.append(draw_keys(s, seed=selection.seed, source=shard.source, shard=shard.shard))
        sources += [shard.source] * len(s)
        xs.append(x)
    score, x = np.concatenate(scores), np.concatenate(xs)
    pos = np.arange(len(score))
    by_score = np.lexsort((pos, -score.astype(np.float64)))  # higher first, ties in pool order
    rank = np.empty(len(score), np.int64)
    rank[by_score] = pos
    walk = by_score if selection.mode == "top_k" else np.lexsort((pos, -np.concatenate(draws).astype(np.float64)))

    compared = x[:, getattr(scorer, "columns", slice(None))]
    unit = compared / np.linalg.norm(compared, axis=1, keepdims=True)
    kept: list[int] = []
    taken: Counter[str] = Counter()
    skipped = 0
    for p in walk.tolist():
        if len(kept) == k:
            break
        if sources[p] in caps and taken[sources[p]] >= caps[sources[p]]:
            continue
        threshold = selection.dedup_threshold
        if threshold is not None and kept and (unit[kept] @ unit[p]).max() >= threshold:
            skipped += 1
            continue
        kept.append(p)
        taken[sources[p]] += 1
    assert len(kept) == k, f"the expectation keeps only {len(kept)} of {k}"
    selected = np.zeros(len(score), bool)
    selected[kept] = True

    parts, start = [], 0
    for shard, n in zip(shards, sizes, strict=True):
        keys = shard.entry.read_keys()
        parts.append(shard_manifest_rows(shard, keys, score[start:start + n], rank[start:start + n],
                                         selected[start:start + n]))
        start += n
    return pa.concat_tables(parts), skipped
