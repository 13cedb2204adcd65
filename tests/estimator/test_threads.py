"""``cpu_threads``: the fit and the report compute on the threads they were given, and the process gets its own
setting back after them (unpinned pools collapsed on a busy host)."""

from __future__ import annotations

import torch
from threadpoolctl import threadpool_info

from estimator.threads import cpu_threads


def _pools() -> set[int]:
    return {p["num_threads"] for p in threadpool_info()}


def test_threads_are_limited_in_the_block_and_restored_after():
    torch.set_num_threads(2)
    before = _pools()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
        assert _pools() == {1}  # every BLAS / OpenMP pool loaded (numpy's, torch's, scikit-learn's)
    assert torch.get_num_threads() == 2 and _pools() == before


def test_restored_when_the_block_raises():
    torch.set_num_threads(2)
    try:
        with cpu_threads(1):
            raise RuntimeError("fit failed")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == 2


def test_none_leaves_the_setting_alone():
    torch.set_num_threads(2)
    with cpu_threads(None):
        assert torch.get_num_threads() == 2
