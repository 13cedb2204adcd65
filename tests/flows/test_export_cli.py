"""``emt export``: bad options exit 2 naming the field; a run writes the shards and says what it did."""

from __future__ import annotations

import pyarrow as pa

from core.manifest import write_manifest
from core.read import Quarantine, read_source
from flows.cli import main


def _manifest(corpus, uri: str) -> None:
    samples = pa.concat_tables(read_source(corpus.pool[0], quarantine=Quarantine()))
    n = samples.num_rows
    part = (
        samples.append_column("score", pa.array([0.5] * n, pa.float32()))
        .append_column("rank", pa.array(range(n), pa.int64()))
        .append_column("selected", pa.array([i < 7 for i in range(n)]))
    )
    write_manifest(uri, [part], {"pool": [s.model_dump(mode="json") for s in corpus.pool]})


def test_export_command(local_corpus, tmp_path, capsys):
    manifest = str(tmp_path / "run" / "manifest.parquet")
    _manifest(local_corpus, manifest)
    out = str(tmp_path / "export")

    assert main(["export", manifest, out, "--samples-per-shard", "0"]) == 2
    assert "samples_per_shard" in capsys.readouterr().err
    assert main(["export", manifest, manifest]) == 2
    assert "output_uri" in capsys.readouterr().err

    assert main(["export", manifest, out, "--samples-per-shard", "3", "--workers", "2"]) == 0
    assert "exported 7 samples into 3 shards" in capsys.readouterr().out
    assert (tmp_path / "export" / "_SUCCESS").exists()
    assert main(["export", manifest, out, "--samples-per-shard", "3"]) == 0
    assert "0 written now, 3 already there" in capsys.readouterr().out
