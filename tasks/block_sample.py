"""Seeded samples that read a bounded number of cache row groups, whatever the size of the pool.

A uniform sample of k rows from a pool of N touches ~k row groups once N is large, so its read cost grows with the
pool until it reaches k whole row groups. A *block sample* bounds it: rows belong to blocks (``block_ids``: the
``BLOCK_ROWS`` rows of one cache row group), the blocks are ranked by a seeded hash, the best-ranked blocks are
kept until they hold at least k candidate rows and number at least ``min_blocks``, and the k rows with the best
seeded row hashes among them are the sample. While every block fits in ``min_blocks`` it is a uniform sample of the
rows; past that it is a two-stage sample of at least ``min_blocks`` blocks, and the rows read stay near
``min_blocks × BLOCK_ROWS``. Hashes rather than a random generator make the sample independent of how the rows
arrive (``BlockSample`` takes them batch by batch in one pass, holding only the kept blocks' rows).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from tasks.cache import ROW_GROUP_ROWS

BLOCK_ROWS = ROW_GROUP_ROWS
_GROUP_SHIFT = 22  # block id = group << 22 | row // BLOCK_ROWS: 4M blocks (4G rows) per group at most
_ROW_SHIFT = int(np.log2(BLOCK_ROWS))


def block_ids(groups: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The block of each row: its group (a cache entry) and its row group in that entry; ids grow with (group, row)."""
    return (np.asarray(groups, np.uint64) << np.uint64(_GROUP_SHIFT)) | (
        np.asarray(rows, np.uint64) >> np.uint64(_ROW_SHIFT)
    )


def salt(seed: int, name: str) -> np.uint64:
    """A hash salt for one named sample of one seed (different names give independent samples)."""
    return np.uint64((int(seed) & 0xFFFFFFFF) << 32 | zlib.crc32(name.encode()))


def mix(x: np.ndarray, key: np.uint64) -> np.ndarray:
    """splitmix64 of ``x ^ key``: a seeded pseudo-random uint64 per value."""
    z = (np.asarray(x, np.uint64) ^ key) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _prefix(counts_by_rank: np.ndarray, size: int, min_blocks: int) -> int:
    """How many of the best-ranked blocks to keep: at least ``min_blocks``, and enough to hold ``size`` rows."""
    enough = int(np.searchsorted(np.cumsum(counts_by_rank), size)) + 1
    return min(len(counts_by_rank), max(min_blocks, enough))


def choose_blocks(blocks: np.ndarray, counts: np.ndarray, *, size: int, min_blocks: int, key: np.uint64) -> np.ndarray:
    """The kept blocks (sorted ids) among ``blocks`` (unique ids) holding ``counts`` candidate rows each."""
    blocks = np.asarray(blocks, np.uint64)
    order = np.lexsort((blocks, mix(blocks, key)))
    keep = _prefix(np.asarray(counts)[order], size, min_blocks)
    return np.sort(blocks[order[:keep]])


def best_rows(positions: np.ndarray, size: int, key: np.uint64) -> np.ndarray:
    """The ``size`` positions with the best seeded hashes (all when fewer), sorted: a uniform sample of them."""
    positions = np.asarray(positions, np.int64)
    if len(positions) > size:
        positions = positions[np.lexsort((positions, mix(positions.astype(np.uint64), ~key)))[:size]]
    return np.sort(positions)


def sample_positions(sizes: list[int], size: int, *, min_blocks: int, key: np.uint64) -> np.ndarray:
    """A block sample of ``size`` rows from groups of ``sizes`` rows (every row a candidate), as sorted positions in
    the groups laid end to end. Memory: one entry per block and the kept blocks' rows."""
    per_group = [-(-n // BLOCK_ROWS) for n in sizes]
    group = np.repeat(np.arange(len(sizes)), per_group)
    first_row = np.concatenate([np.zeros(0, np.int64)] + [np.arange(n, dtype=np.int64) * BLOCK_ROWS for n in per_group])
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    counts = np.minimum(BLOCK_ROWS, np.asarray(sizes, np.int64)[group] - first_row)
    blocks = block_ids(group, first_row)
    kept = np.searchsorted(blocks, choose_blocks(blocks, counts, size=size, min_blocks=min_blocks, key=key))
    starts = offsets[group[kept]] + first_row[kept]
    rows = [np.arange(a, a + n, dtype=np.int64) for a, n in zip(starts, counts[kept], strict=True)]
    return best_rows(np.concatenate([np.zeros(0, np.int64), *rows]), size, key)


class BlockSample:
    """One block sample of ``size`` rows, fed in one pass, batch by batch: ``add`` takes the batch's blocks (ids in
    increasing order; the first may continue the previous batch's last) with their candidate counts, and a function
    that gives the candidate rows of the blocks it asks for (``position`` in increasing order, ``block`` and any
    payload columns); then ``result``.

    Only blocks ranked above the cut have their rows gathered, and memory holds the kept blocks' rows (about
    ``max(min_blocks, blocks needed for size rows) × BLOCK_ROWS``), never the pool's: a block ranked past the cut
    can never come back, because the cut only moves up."""

    def __init__(self, size: int, *, min_blocks: int, key: np.uint64) -> None:
        self.size, self.min_blocks, self.key = size, min_blocks, key
        self.blocks = np.zeros(0, np.uint64)  # kept, ranked best first
        self.counts = np.zeros(0, np.int64)
        self.cut: np.uint64 | None = None  # hash of the worst kept block once the prefix rule holds
        self.rows: dict[str, np.ndarray] = {}

    def add(
        self, blocks: np.ndarray, counts: np.ndarray, rows: Callable[[np.ndarray], dict[str, np.ndarray]]
    ) -> None:
        rank = mix(blocks, self.key)
        wanted = np.asarray(counts) > 0
        if self.cut is not None:  # only blocks ranked above the cut can enter
            wanted &= rank <= self.cut
        if not wanted.any():
            return
        merged = np.concatenate([self.blocks, blocks[wanted]])
        counts = np.concatenate([self.counts, np.asarray(counts, np.int64)[wanted]])
        merged, where = np.unique(merged, return_inverse=True)  # a block split across batches appears twice
        counts = np.bincount(where, weights=counts, minlength=len(merged)).astype(np.int64)
        order = np.lexsort((merged, mix(merged, self.key)))
        keep = _prefix(counts[order], self.size, self.min_blocks)
        dropped = keep < len(merged)
        self.blocks, self.counts = merged[order[:keep]], counts[order[:keep]]
        full = len(self.blocks) >= self.min_blocks and self.counts.sum() >= self.size
        self.cut = mix(self.blocks[-1:], self.key)[0] if full else None
        if dropped:  # gather only the blocks that stay, and forget the rows of those that fell past the cut
            wanted &= np.isin(blocks, self.blocks)
            if self.rows:
                kept = np.isin(self.rows["block"], self.blocks)
                self.rows = {k: v[kept] for k, v in self.rows.items()}
        if wanted.any():
            new = rows(wanted)
            self.rows = {k: np.concatenate([self.rows[k], v]) for k, v in new.items()} if self.rows else new

    def result(self) -> dict[str, np.ndarray]:
        """The sample's ``position`` (sorted) and payload columns."""
        if not self.rows:
            return {"position": np.zeros(0, np.int64)}
        chosen = best_rows(self.rows["position"], self.size, self.key)
        at = np.searchsorted(self.rows["position"], chosen)
        return {k: v[at] for k, v in self.rows.items() if k != "block"}
