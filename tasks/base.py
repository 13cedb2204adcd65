"""What one worker of a curation step reserves. The work itself is a function or a stage (``setup()`` once per
worker, then a call per unit) that ``tasks.executor`` runs; it imports neither Ray nor Prefect."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs (Ray's ``num_cpus`` / ``num_gpus``)."""

    cpus: float = 1.0
    gpus: float = 0.0
