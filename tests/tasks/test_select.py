from __future__ import annotations

import numpy as np
import pytest

from tasks.select import rank_order, ranks_from_order, resolve_k, select_top


def test_ranks_descend_with_deterministic_ties():
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1], np.float32)
    order = rank_order(scores)
    assert order.tolist() == [1, 3, 2, 0, 4]  # the tie 0.9 keeps pool order
    assert ranks_from_order(order).tolist() == [3, 0, 2, 1, 4]


def test_top_k_and_fraction():
    scores = np.arange(10, dtype=np.float32)
    order = rank_order(scores)
    assert np.flatnonzero(select_top(order, 3)).tolist() == [7, 8, 9]
    assert resolve_k(10, k=None, fraction=0.25) == 2


def test_per_source_caps_pass_places_on():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
    sources = np.array([0, 0, 0, 1, 1], np.int16)
    chosen = select_top(rank_order(scores), 3, sources, caps={0: 1})
    assert np.flatnonzero(chosen).tolist() == [0, 3, 4]
    with pytest.raises(ValueError, match="caps leave only 2"):
        select_top(rank_order(scores), 3, sources, caps={0: 1, 1: 1})


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"k": 11, "fraction": None}, "larger than the pool"),
        ({"k": None, "fraction": 0.01}, "selection is empty"),
        ({"k": 1, "fraction": 0.5}, "exactly one"),
    ],
)
def test_resolve_k_rejects(kw, message):
    with pytest.raises(ValueError, match=message):
        resolve_k(10, **kw)
