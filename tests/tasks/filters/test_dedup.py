"""Pool-wide dedup: planted near-duplicate groups keep exactly one member each, distinct samples all stay, exact
copies are found by hash first, and the result does not depend on how a cluster is cut into blocks."""

from __future__ import annotations

import numpy as np

import tasks.filters.dedup as dedup
from tasks.filters.dedup import DedupConfig, exact_copies, find_duplicates


def _planted(groups: int = 40, copies: int = 3, distinct: int = 200, dim: int = 32, seed: int = 0):
    """``groups`` originals each with ``copies`` near-copies (cosine > 0.99), plus ``distinct`` unrelated rows."""
    rng = np.random.default_rng(seed)
    originals = rng.normal(size=(groups, dim))
    near = np.repeat(originals, copies, axis=0) + rng.normal(0, 0.05, (groups * copies, dim))
    vectors = np.vstack([originals, near, rng.normal(size=(distinct, dim))]).astype(np.float32)
    group = np.concatenate([np.arange(groups), np.repeat(np.arange(groups), copies), np.full(distinct, -1)])
    order = rng.permutation(len(vectors))
    return vectors[order], group[order]


def test_each_planted_group_keeps_one_and_distinct_samples_all_stay():
    vectors, group = _planted()
    found = find_duplicates(vectors, DedupConfig(enabled=True, threshold=0.95))
    for g in range(40):
        members = np.flatnonzero(group == g)
        assert found.keep[members].sum() == 1, g
        kept = members[found.keep[members]][0]
        assert set(found.duplicate_of[members[~found.keep[members]]]) <= set(members)  # dropped for its own group
        assert kept in members
    assert found.keep[group == -1].all()
    assert set(found.reason[~found.keep]) == {"dedup:semantic"}


def test_exact_copies_first_by_hash():
    hashes = np.array(["a", "b", "a", "c", "b", "a"])
    assert exact_copies(hashes).tolist() == [0, 1, 0, 3, 1, 0]
    vectors = np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32)
    found = find_duplicates(vectors, DedupConfig(enabled=True), hashes=hashes)
    assert found.keep.tolist() == [True, True, False, True, False, False]
    assert found.reason.tolist() == ["", "", "dedup:exact", "", "dedup:exact", "dedup:exact"]


def test_blocks_and_seed_do_not_change_the_answer(monkeypatch):
    vectors, _ = _planted(groups=30, copies=4, distinct=50)
    config = DedupConfig(enabled=True, clusters=2, seed=3)
    whole = find_duplicates(vectors, config)
    monkeypatch.setattr(dedup, "_BLOCK", 7)
    blocked = find_duplicates(vectors, config)
    assert np.array_equal(whole.duplicate_of, blocked.duplicate_of)
    assert np.array_equal(find_duplicates(vectors, config).keep, whole.keep)
