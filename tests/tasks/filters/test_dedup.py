"""The dedup building blocks the selection engine's dedup pass runs (``tasks.filter_passes``, tested there end to
end): the first of each content hash stays, and a cluster's walk does not depend on how it is cut into blocks."""

from __future__ import annotations

import numpy as np

import tasks.filters.dedup as dedup
from tasks.filters.dedup import cluster_duplicates, later_copies, unit_rows


def test_the_first_of_each_hash_stays():
    hashes = np.array([7, 3, 7, -1, 3, 7], np.int64)
    assert later_copies(hashes).tolist() == [False, False, True, False, True, True]
    assert later_copies(np.zeros(0, np.int64)).tolist() == []


def test_a_walk_finds_each_near_copy_of_an_earlier_row_whatever_the_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    originals = rng.normal(size=(30, 32))
    near = np.repeat(originals, 3, axis=0) + rng.normal(0, 0.05, (90, 32))
    x = unit_rows(np.vstack([originals, near, rng.normal(size=(50, 32))]))
    whole = cluster_duplicates(x, 0.95)
    assert (whole[:30] == -1).all() and (whole[120:] == -1).all()  # originals and distinct rows stay
    assert (whole[30:120] == np.repeat(np.arange(30), 3)).all()  # each copy points at its own original
    monkeypatch.setattr(dedup, "_BLOCK", 7)
    assert np.array_equal(cluster_duplicates(x, 0.95), whole)
