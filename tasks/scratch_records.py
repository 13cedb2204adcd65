"""Scratch files of fixed-width records for the distributed ranking (``tasks.distributed_select``): written whole by
one task, read by exact slices by others.

A slice of fixed-width records is one ranged read at a computed offset: no footer to parse and no row group to read
beyond it. That matters because the ranking is an all-to-all exchange — every score range takes a slice of every
sorted run, every manifest file a slice of every range — so a Parquet scratch cost a footer parse and whole row
groups per (file, range) pair: at 10M samples (125 × 125 pairs) those two passes took longer than scoring.
"""

from __future__ import annotations

import fsspec
import numpy as np

from core.settings import StorageConfig
from core.storage import filesystem, publish_bytes

RUN = np.dtype([("key", "<u4"), ("pos", "<i8")])  # a file's rows, best first (tasks.score_ranges.rank_order)
RUN_INDEX = np.dtype([("bin", "<i4"), ("end", "<i8")])  # the run's bins present, best first, and where each ends
ROWS = np.dtype([("pos", "<i8"), ("score", "<f4")])  # a file's rows in pool order with their scores
RANKS = np.dtype([("pos", "<i8"), ("rank", "<i8")])  # a score range's rows in pool order with their ranks
OFFSETS = np.dtype("<i8")  # where each manifest file's rows start in a RANKS file, and the end


def write(uri: str, records: np.ndarray, storage: StorageConfig | None = None) -> None:
    publish_bytes(uri, np.ascontiguousarray(records).tobytes(), storage)


def read(uri: str, dtype: np.dtype, storage: StorageConfig | None = None, start: int = 0,
         stop: int | None = None) -> np.ndarray:
    """Records [start, stop) of the file (all from ``start`` when ``stop`` is None), in one read."""
    fs, path = filesystem(uri, storage)
    return read_at(fs, path, dtype, start, stop)


def read_at(fs: fsspec.AbstractFileSystem, path: str, dtype: np.dtype, start: int = 0,
            stop: int | None = None) -> np.ndarray:
    """``read`` on a filesystem resolved once by the caller: a task of the exchange reads a slice of every file of
    the other side, and resolving each URI cost as much as reading a slice from local disk."""
    if stop is not None and stop <= start:
        return np.zeros(0, dtype)
    end = None if stop is None else stop * dtype.itemsize
    return np.frombuffer(fs.cat_file(path, start=start * dtype.itemsize, end=end), dtype)


def run_index(bins: np.ndarray) -> np.ndarray:
    """The index of a run whose rows have ``bins`` (non-increasing, as the run is sorted best first)."""
    if not len(bins):
        return np.zeros(0, RUN_INDEX)
    last = np.flatnonzero(np.append(bins[1:] != bins[:-1], True))
    index = np.empty(len(last), RUN_INDEX)
    index["bin"], index["end"] = bins[last], last + 1
    return index


def run_slice(index: np.ndarray, low: int, high: int) -> tuple[int, int]:
    """Rows [start, stop) of the run whose bins lie in [low, high)."""
    above = np.flatnonzero(index["bin"] >= high)
    inside = np.flatnonzero(index["bin"] >= low)
    start = int(index["end"][above[-1]]) if len(above) else 0
    stop = int(index["end"][inside[-1]]) if len(inside) else 0
    return start, stop


def file_offsets(pos: np.ndarray, files: int, shards_per_file: int) -> np.ndarray:
    """Where each manifest file's rows start in ``pos`` (sorted pool positions), and the end."""
    firsts = np.arange(files + 1, dtype=np.int64) * shards_per_file << np.int64(32)
    return np.searchsorted(pos, firsts).astype(OFFSETS)
