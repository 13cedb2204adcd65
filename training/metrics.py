"""How the loop reports: a ``Tracker`` (called on rank zero only) and the throughput arithmetic."""

from __future__ import annotations

from typing import Any, Protocol

import torch

# Dense bf16 peak TFLOP/s by GPU name fragment (SXM parts), for MFU when the config does not give one.
_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}


class Tracker(Protocol):
    """Where params and metrics go (MLflow in production; see ``training.tracking``)."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


class MemoryTracker:
    """A Tracker that keeps everything in lists: for scripts, benchmarks and tests."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[int, dict[str, float]]] = []

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, dict(metrics)))

    def series(self, name: str) -> list[tuple[int, float]]:
        """(step, value) of one metric, in logging order."""
        return [(s, m[name]) for s, m in self.metrics if name in m]


def peak_flops(device: torch.device, configured_tflops: float | None) -> float | None:
    """Peak FLOP/s of ``device`` for MFU; None on CPU or an unknown GPU without a configured value."""
    if device.type != "cuda":
        return None
    if configured_tflops is not None:
        return configured_tflops * 1e12
    name = torch.cuda.get_device_name(device)
    return next((t * 1e12 for key, t in _PEAK_TFLOPS.items() if key in name), None)
