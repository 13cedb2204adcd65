"""``python -m bench NAME [options]`` (or ``make bench ARGS="NAME ..."``): run one benchmark, print its table
and write it as JSON under bench/out/."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "read": "bench.read_throughput",
    "embed": "bench.embed_throughput",
    "recurate": "bench.recurate",
    "select": "bench.selection",
    "dselect": "bench.distributed_selection",
    "dedup": "bench.dedup",
    "capacity": "bench.capacity",
    "quality": "bench.quality",
    "filters": "bench.filters",
    "train": "bench.train_throughput",
    "train-memory": "bench.train_memory",
    "modes": "bench.update_modes",
    "export": "bench.export_throughput",
    "flat": "bench.flat",
    "toyworld": "bench.toyworld_probe",
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHES:
        sys.exit(f"usage: python -m bench {{{','.join(BENCHES)}}} [options]")
    sys.exit(importlib.import_module(BENCHES[sys.argv[1]]).main(sys.argv[2:]))
