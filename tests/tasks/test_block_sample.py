"""Block samples: seeded, independent of how rows arrive, uniform while the blocks fit, bounded reads past that."""

from __future__ import annotations

import numpy as np

from tasks import block_sample as bs

KEY = bs.salt(0, "test")


def feed(sizes: list[int], size: int, min_blocks: int, cut: int, every: int = 1) -> dict[str, np.ndarray]:
    """A BlockSample fed groups of ``sizes`` rows laid end to end (every ``every``-th row a candidate), ``cut``
    rows at a time."""
    group = np.repeat(np.arange(len(sizes)), sizes)
    row = np.concatenate([np.arange(n) for n in sizes])
    position = np.arange(len(group))
    take = position % every == 0
    group, row, position = group[take], row[take], position[take]
    sample = bs.BlockSample(size, min_blocks=min_blocks, key=KEY)
    for a in range(0, len(position), cut):
        p, r, b = position[a : a + cut], row[a : a + cut], bs.block_ids(group[a : a + cut], row[a : a + cut])
        blocks, counts = np.unique(b, return_counts=True)
        sample.add(blocks, counts, lambda want, p=p, r=r, b=b, blocks=blocks: {
            k: v[np.isin(b, blocks[want])] for k, v in {"position": p, "block": b, "row": r}.items()})
    return sample.result()


def test_the_sample_does_not_depend_on_the_batches():
    sizes = [5000, 3000, 7000, 2048]
    first = feed(sizes, 300, 4, cut=1000)
    for cut in (777, 4096, 20_000):
        again = feed(sizes, 300, 4, cut=cut)
        np.testing.assert_array_equal(again["position"], first["position"])
        np.testing.assert_array_equal(again["row"], first["row"])
    assert len(first["position"]) == 300 and np.all(np.diff(first["position"]) > 0)


def test_while_every_block_fits_it_is_the_best_hashed_rows_of_all():
    sizes = [1500, 900]  # 3 blocks, min_blocks 8: every row is a candidate
    got = feed(sizes, 50, 8, cut=333)["position"]
    np.testing.assert_array_equal(got, bs.best_rows(np.arange(sum(sizes)), 50, KEY))
    np.testing.assert_array_equal(got, bs.sample_positions(sizes, 50, min_blocks=8, key=KEY))


def test_a_large_pool_touches_a_bounded_number_of_blocks():
    sizes = [10_000] * 60  # 600k rows, 600 blocks
    for min_blocks in (4, 16):
        got = bs.sample_positions(sizes, 500, min_blocks=min_blocks, key=KEY)
        blocks = np.unique(bs.block_ids(got // 10_000, got % 10_000))
        assert len(got) == 500 and len(blocks) == min_blocks
        streamed = feed(sizes, 500, min_blocks, cut=65_536)["position"]
        np.testing.assert_array_equal(streamed, got)


def test_sparse_candidates_take_more_blocks_until_the_size_is_met():
    got = feed([10_000] * 20, 200, 4, cut=5000, every=100)["position"]  # ~10 candidates per block
    assert len(got) == 200 and np.all(got % 100 == 0)


def test_seeds_and_names_give_different_samples():
    a = bs.sample_positions([50_000], 100, min_blocks=4, key=bs.salt(0, "x"))
    b = bs.sample_positions([50_000], 100, min_blocks=4, key=bs.salt(1, "x"))
    c = bs.sample_positions([50_000], 100, min_blocks=4, key=bs.salt(0, "y"))
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
