"""The selection rules on small arrays: K, the seeded importance keys and the walk that applies caps and dedup."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.select import Picker, SelectionConfig, draw_keys, resolve_k


def test_fraction_resolves_to_k():
    assert resolve_k(10, k=None, fraction=0.25) == 2 and resolve_k(10, k=3, fraction=None) == 3


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


def _draw(logits: np.ndarray, seed: int) -> np.ndarray:
    """Pool positions in draw order (the engine sorts the keys the same way: higher first, ties in pool order)."""
    return np.argsort(-draw_keys(logits, seed=seed, source="web", shard="0.tar"), kind="stable")


def test_importance_draw_follows_the_density_ratio():
    """Gumbel-top-k: seeded, without replacement, and each sample's inclusion rate follows exp(log weight)."""
    logits = np.log(np.array([8.0, 4.0, 2.0, 1.0] * 50))  # 200 samples, four weight classes
    order = _draw(logits, seed=0)
    assert sorted(order.tolist()) == list(range(200))  # a permutation: no sample drawn twice
    np.testing.assert_array_equal(order, _draw(logits, seed=0))
    assert not np.array_equal(order, _draw(logits, seed=1))
    first = np.zeros(4)
    for seed in range(300):  # the first draw lands in each class with probability w / sum(w)
        first[_draw(logits, seed=seed)[0] % 4] += 1
    np.testing.assert_allclose(first / 300, [8 / 15, 4 / 15, 2 / 15, 1 / 15], atol=0.07)
    k50 = np.bincount(_draw(logits, seed=5)[:50] % 4, minlength=4)
    assert k50[0] > k50[1] > k50[3] and k50[3] > 0  # keeps some low-ratio samples, unlike top-K


def test_a_rows_draw_key_is_its_own():
    """A row's key depends on (seed, source, shard, row) and its score only: scoring a shard in two calls, or
    beside other shards, gives the same keys; another shard or source gets other noise."""
    scores = np.random.default_rng(0).standard_normal(50).astype(np.float32)
    whole = draw_keys(scores, seed=2, source="web", shard="a.tar")
    np.testing.assert_array_equal(whole[:20], draw_keys(scores[:20], seed=2, source="web", shard="a.tar"))
    assert whole.dtype == np.float32 and np.isfinite(whole).all()
    assert not np.array_equal(whole, draw_keys(scores, seed=2, source="web", shard="b.tar"))
    assert not np.array_equal(whole, draw_keys(scores, seed=2, source="vqa", shard="a.tar"))


def test_caps_pass_places_on_and_a_short_pool_is_refused():
    picker = Picker(3, caps={"a": 1})
    assert picker.offer(["a", "a", "a", "b", "b"]).tolist() == [0, 3, 4] and picker.done
    short = Picker(3, caps={"a": 1, "b": 1})
    short.offer(["a", "a", "a", "b", "b"])
    assert not short.done and "caps leave only 2 samples" in str(short.shortfall())


def test_dedup_drops_near_duplicates_within_and_across_chunks():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 8)).astype(np.float32)
    x = np.vstack([base[0], base[0] * 2.0, base[1], base[1] + 1e-3, base[2], base[3], base[4], base[5]])
    whole = Picker(4, dedup_threshold=0.99)
    assert whole.offer(["s"] * 8, x).tolist() == [0, 2, 4, 5] and whole.duplicates == 2  # copies 1 and 3 skipped
    split = Picker(4, dedup_threshold=0.99)  # the same walk offered two rows at a time: the kept set carries over
    kept = [2 * i + j for i in range(4) for j in split.offer(["s"] * 2, x[2 * i : 2 * i + 2]).tolist()]
    assert kept == [0, 2, 4, 5] and split.duplicates == 2
    capped = Picker(3, caps={"a": 1}, dedup_threshold=0.99)
    assert capped.offer(["a"] * 5 + ["b"] * 3, x).tolist() == [0, 5, 6]
    short = Picker(7, dedup_threshold=0.99)
    short.offer(["s"] * 8, x)
    assert "leave only 6 samples" in str(short.shortfall())
    with pytest.raises(ValueError, match="vectors"):
        Picker(1, dedup_threshold=0.5).offer(["s"])


def test_the_record_says_how_the_k_were_chosen():
    assert SelectionConfig().record() == {"mode": "top_k", "seed": None, "dedup_threshold": None,
                                          "duplicates_skipped": 0}
    drawn = SelectionConfig(mode="importance", seed=3, dedup_threshold=0.9).record(duplicates_skipped=2)
    assert drawn == {"mode": "importance", "seed": 3, "dedup_threshold": 0.9, "duplicates_skipped": 2}
