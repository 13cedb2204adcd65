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


def test_importance_draw_follows_the_density_ratio():
    """Gumbel-top-k: seeded, without replacement, and each sample's inclusion rate follows exp(log weight)."""
    from tasks.select import importance_order

    logits = np.log(np.array([8.0, 4.0, 2.0, 1.0] * 50))  # 200 samples, four weight classes
    order = importance_order(logits, seed=0)
    assert sorted(order.tolist()) == list(range(200))  # a permutation: no sample drawn twice
    np.testing.assert_array_equal(order, importance_order(logits, seed=0))
    assert not np.array_equal(order, importance_order(logits, seed=1))
    first = np.zeros(4)
    for seed in range(300):  # the first draw lands in each class with probability w / sum(w)
        first[importance_order(logits, seed=seed)[0] % 4] += 1
    np.testing.assert_allclose(first / 300, [8 / 15, 4 / 15, 2 / 15, 1 / 15], atol=0.07)
    k50 = np.bincount(importance_order(logits, seed=5)[:50] % 4, minlength=4)
    assert k50[0] > k50[1] > k50[3] and k50[3] > 0  # keeps some low-ratio samples, unlike top-K


def test_dedup_drops_near_duplicates_and_fills_k():
    from tasks.dedup import dedup_select

    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 8)).astype(np.float32)
    x = np.vstack([base[0], base[0] * 2.0, base[1], base[1] + 1e-3, base[2], base[3], base[4], base[5]])
    order = np.arange(len(x))  # already in score order
    chosen, dropped = dedup_select(order, 4, lambda p: x[p], 0.99)
    assert np.flatnonzero(chosen).tolist() == [0, 2, 4, 5] and dropped == 2  # copies 1 and 3 passed over
    caps_chosen, _ = dedup_select(order, 3, lambda p: x[p], 0.99, source_codes=np.array([0, 0, 0, 0, 0, 1, 1, 1]),
                                  caps={0: 1})
    assert np.flatnonzero(caps_chosen).tolist() == [0, 5, 6]
    with pytest.raises(ValueError, match="leave only 6"):
        dedup_select(order, 7, lambda p: x[p], 0.99)
