"""The demo: the product's main job on embedded defaults, locally or against an embedded S3 server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pandas as pd

from tasks.config import CorpusConfig, StorageConfig
from tasks.read import Quarantine
from tasks.survey import survey_source
from tasks.synth import SynthConfig, generate_corpus

DEFAULT_LOCAL_ROOT = "data/demo"
DEMO_BUCKET = "emt-demo"


@contextlib.contextmanager
def demo_storage(s3: bool) -> Iterator[StorageConfig | None]:
    """Nothing for local runs; an embedded S3 server (up for the duration) for ``--s3`` runs."""
    if not s3:
        yield None
        return
    from infra.s3 import start_s3

    server = start_s3()
    try:
        server.make_bucket(DEMO_BUCKET)
        print(f"embedded S3 server at {server.storage.endpoint_url}")
        yield server.storage
    finally:
        server.stop()


def print_survey(corpus: CorpusConfig) -> pd.DataFrame:
    """Read every source once and print one line per source."""
    quarantine = Quarantine()
    rows = []
    for role, specs in (("pool", corpus.pool), ("robot", corpus.robot)):
        for spec in specs:
            s = survey_source(spec, storage=corpus.storage, quarantine=quarantine)
            rows.append(
                {
                    "role": role,
                    "source": s.source,
                    "format": s.format,
                    "shards": s.shards,
                    "samples": s.samples,
                    "MB": round(s.image_bytes / 1e6, 2),
                    "quarantined": sum(s.quarantined.values()),
                    "samples/s": round(s.samples_per_s),
                }
            )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if len(quarantine):
        print("quarantined by reason:", dict(quarantine.counts))
    return table


def run_demo(*, root: str | None, s3: bool, synth: SynthConfig) -> None:
    with demo_storage(s3) as storage:
        root = root or (f"s3://{DEMO_BUCKET}/corpus" if s3 else DEFAULT_LOCAL_ROOT)
        info = generate_corpus(root, synth, storage)
        print(f"synthetic corpus at {info.root}")
        print_survey(CorpusConfig(storage=storage or StorageConfig(), pool=info.pool, robot=info.robot))
