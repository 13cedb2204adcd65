"""Reader throughput: samples/s per source on local disk and from the embedded S3 server over HTTP.

The corpus is generated once (deterministic) under data/bench/; the S3 copy is uploaded into a fresh embedded
server each run. Local and S3 are read in the same process one after the other, so the ratio S3/local is the
figure to compare across machines. ``rss_growth_mb`` is how far the process's resident memory rose above its
level before reading a source (peak mark reset per source): reading streams, so it stays far below the source size.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from core.settings import SourceSpec
from core.storage import filesystem
from infra.s3 import start_s3
from synth import SynthConfig, generate_corpus
from tasks.survey import survey_source

OUT = Path("bench/out")


def _status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process from /proc (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> float:
    """Reset the peak-RSS mark (Linux clear_refs 5) and return the current RSS, the baseline of a measurement."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench read")
    ap.add_argument("--samples-per-source", type=int, default=5000)
    ap.add_argument("--image-check", default="header", choices=["none", "header", "full"])
    args = ap.parse_args(argv)

    root = Path(f"data/bench/corpus-{args.samples_per_source}")
    t0 = time.perf_counter()
    info = generate_corpus(
        str(root), SynthConfig(samples_per_source=args.samples_per_source, shard_size=1000, workers=2)
    )
    print(f"corpus ready in {time.perf_counter() - t0:.1f}s at {root}")
    server = start_s3()
    rows = []
    try:
        bucket = server.make_bucket("bench")
        fs, _ = filesystem(bucket, server.storage)
        fs.put(str(root) + "/", "bench/corpus/", recursive=True)
        for spec in [*info.pool, *info.robot]:
            s3_spec = SourceSpec(**{**spec.model_dump(), "uri": spec.uri.replace(str(root), f"{bucket}/corpus")})
            for where, s, storage in (("local", spec, None), ("s3", s3_spec, server.storage)):
                base = _reset_peak()
                survey = survey_source(s.bind(storage), image_check=args.image_check)
                growth = _status_mb("VmHWM") - base  # what reading this source added at its peak
                rows.append(
                    {
                        "source": spec.name,
                        "format": spec.format,
                        "where": where,
                        "samples": survey.samples,
                        "seconds": round(survey.seconds, 2),
                        "samples_per_s": round(survey.samples_per_s),
                        "source_mb": round(survey.image_bytes / 1e6, 1),
                        "rss_growth_mb": round(growth, 1),
                    }
                )
    finally:
        server.stop()
    table = pd.DataFrame(rows)
    pivot = table.pivot_table(index=["source", "format"], columns="where", values="samples_per_s")
    pivot["s3/local"] = (pivot["s3"] / pivot["local"]).round(2)
    totals = table.groupby("where")[["samples", "seconds"]].sum()
    totals["samples_per_s"] = (totals["samples"] / totals["seconds"]).round()
    print(table.to_string(index=False), "\n\n", pivot.to_string(), "\n\n", totals.to_string())
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "read_throughput.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0
