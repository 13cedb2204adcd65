"""How many CPU threads a piece of work computes on: one helper, used wherever a stage runs torch or BLAS on CPUs
it was given (embedding actors, the estimator's fit, the run report, ablation units).

Why pin at all: torch, OpenBLAS and OpenMP each size their pools to every core of the machine, not to the CPUs a Ray
actor or a flow step was given. On a busy host those threads spin waiting for each other (measured: the fit and the
report 15-40x slower under load), and on an idle one they compete with the work beside them. A fixed count also
makes float sums split the same way from run to run.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator

from threadpoolctl import threadpool_limits


def threads_for(cpus: float) -> int:
    """Intra-op threads for work given ``cpus`` CPUs: ``cpus`` rounded up, at least 1. A fractional reservation
    shares its last core; the compute gets it rather than leaving half a core unused (Ray's own
    ``OMP_NUM_THREADS`` rounds down, which gave a 1.5-CPU embedding actor one thread)."""
    return max(1, math.ceil(cpus - 1e-9))


def set_torch_threads(n: int) -> None:
    """Set torch's intra-op threads for this process (an actor's: it lives as long as the model it holds)."""
    import torch

    torch.set_num_threads(n)


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` threads in torch (when loaded) and in every BLAS / OpenMP pool (threadpoolctl),
    then restore what was set before; None leaves everything alone."""
    if n is None:
        yield
        return
    torch = sys.modules.get("torch")  # the report does not load torch: no reason to import it here
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)
