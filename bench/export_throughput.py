"""Reading a selection back: ``iter_selected`` and ``export_selected`` samples/s with range reads at the manifest's
locations vs whole shards streamed and filtered (the same manifest without its location columns), at 1 % and 10 %
selection, on local disk and from the embedded S3 server over HTTP.

The corpus is the synthetic one (generated once under data/bench/), its four pool sources (two WebDataset, two
Parquet with one row group per shard, as the generator writes them). The selection is a seeded uniform draw, so
it is spread over every shard like a real top-K. Both variants of one (where, fraction) run back to back in one
process, so their ratio is the figure to compare across machines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.contracts import LOCATION_NAMES
from core.manifest import iter_selected, write_manifest
from core.read import Quarantine, read_source
from core.settings import SourceSpec, StorageConfig
from core.storage import filesystem
from infra.s3 import start_s3
from synth import SynthConfig, generate_corpus
from tasks.export import export_selected
from tasks.export_params import ExportParams

OUT = Path("bench/out")
WORK = Path("data/bench/export")


def _pool(specs: list[SourceSpec], storage: StorageConfig | None) -> pa.Table:
    """Every pool sample's manifest columns (ids and locations; no image bytes kept)."""
    keep = ["sample_id", "source", "shard_uri", "key", *LOCATION_NAMES]
    return pa.concat_tables(
        t.select(keep) for spec in specs for t in read_source(spec.bind(storage), quarantine=Quarantine())
    )


def _manifests(pool: pa.Table, specs: list[SourceSpec], fraction: float, root: str, storage) -> dict[str, str]:
    """Two manifests of one seeded draw: with the location columns (``range``) and without (``whole``)."""
    n = pool.num_rows
    rng = np.random.default_rng(0)
    selected = np.zeros(n, bool)
    selected[rng.choice(n, size=max(1, round(fraction * n)), replace=False)] = True
    rank = np.empty(n, np.int64)
    rank[np.argsort(~selected, kind="stable")] = np.arange(n)  # selected rows first, in pool order
    part = pool.append_column("score", pa.array(np.linspace(1, 0, n), pa.float32()))
    part = part.append_column("rank", pa.array(rank)).append_column("selected", pa.array(selected))
    sidecar = {"pool": [s.model_dump(mode="json") for s in specs]}
    uris = {}
    for variant, table in (("range", part), ("whole", part.drop_columns(list(LOCATION_NAMES)))):
        uris[variant] = f"{root}/{variant}-{fraction}/manifest.parquet"
        write_manifest(uris[variant], [table], sidecar, storage)
    return uris


def _timed(fn) -> tuple[int, float]:
    start = time.perf_counter()
    samples = fn()
    return samples, time.perf_counter() - start


def _measure(where: str, pool: pa.Table, specs, root: str, storage, fractions, workers: int) -> list[dict]:
    rows = []
    for fraction in fractions:
        uris = _manifests(pool, specs, fraction, root, storage)
        for variant, uri in uris.items():
            n, seconds = _timed(lambda uri=uri: sum(t.num_rows for t in iter_selected(uri, storage)))
            rows.append(
                {
                    "where": where,
                    "fraction": fraction,
                    "op": "iter_selected",
                    "read": variant,
                    "samples": n,
                    "seconds": round(seconds, 2),
                    "samples_per_s": round(n / seconds),
                }
            )
            params = ExportParams(
                manifest_uri=uri,
                output_uri=f"{root}/out-{variant}-{fraction}",
                storage=storage or StorageConfig(),
                workers=workers,
            )
            report, seconds = _timed(lambda params=params: export_selected(params))
            rows.append(
                {
                    "where": where,
                    "fraction": fraction,
                    "op": "export",
                    "read": variant,
                    "samples": report.samples,
                    "seconds": round(seconds, 2),
                    "samples_per_s": round(report.samples / seconds),
                }
            )
            print(rows[-2], "\n", rows[-1], flush=True)
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench export")
    ap.add_argument("--samples-per-source", type=int, default=5000)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    ap.add_argument("--workers", type=int, default=4, help="export threads")
    ap.add_argument("--no-s3", action="store_true", help="local disk only")
    args = ap.parse_args(argv)

    corpus = Path(f"data/bench/corpus-{args.samples_per_source}")
    info = generate_corpus(
        str(corpus), SynthConfig(samples_per_source=args.samples_per_source, shard_size=1000, workers=2)
    )
    shutil.rmtree(WORK, ignore_errors=True)
    local = _pool(info.pool, None)
    rows = _measure("local", local, info.pool, str(WORK.resolve()), None, args.fractions, args.workers)
    if not args.no_s3:
        server = start_s3()
        try:
            bucket = server.make_bucket("bench")
            fs, _ = filesystem(bucket, server.storage)
            root = str(corpus.resolve())
            fs.put(root + "/pool/", "bench/corpus/pool/", recursive=True)
            specs = [s.model_copy(update={"uri": s.uri.replace(root, f"{bucket}/corpus")}) for s in info.pool]
            moved = pc.replace_substring(local["shard_uri"], root, f"{bucket}/corpus")
            pool = local.set_column(local.schema.get_field_index("shard_uri"), "shard_uri", moved)
            rows += _measure("s3", pool, specs, f"{bucket}/work", server.storage, args.fractions, args.workers)
        finally:
            server.stop()
    table = pd.DataFrame(rows)
    pivot = table.pivot_table(index=["where", "fraction", "op"], columns="read", values="samples_per_s")
    pivot["range/whole"] = (pivot["range"] / pivot["whole"]).round(1)
    print(table.to_string(index=False), "\n\n", pivot.to_string())
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "export_throughput.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0
