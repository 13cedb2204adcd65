"""A pool shard read through the run's filters: the blocklisted and low-quality samples are quarantined in the
shard's cache entry with their stage and reason, never embedded, and no byte of a listed image reaches the cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.location import Location
from core.read import list_shards
from core.settings import SourceSpec
from estimator.backbones.fingerprint import describe
from estimator.backbones.tiny import save_tiny_backbone
from tasks.cache import EmbeddingCache
from tasks.embed import Embed
from tasks.embed_shards import ShardEmbedder, ShardJob
from tasks.executor import Job, Threads, run
from tasks.filters.blocklist import BlocklistSpec, image_phash
from tasks.filters.quality import QualityConfig
from tasks.filters.screen import ScreenPlan
from tests.tasks.filters.conftest import encode, photo

CAPTION = "a photograph of a kitchen table with cups"


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    return save_tiny_backbone("open_clip", str(tmp_path_factory.mktemp("model")), seed=0)


def planted(tmp_path: Path) -> tuple[SourceSpec, ScreenPlan, dict[str, bytes]]:
    """A 8-row Parquet shard: an image on a SHA-256 list, a re-encoded and resized copy of one on a pHash list, a
    blank, a tiny and a mis-captioned sample, and three good ones; and the screen that removes the first five."""
    listed, near = encode(photo(1)), photo(2)
    copy = encode(near.resize((80, 80)), "JPEG", quality=70)
    rows = {"sha": (listed, CAPTION), "phash_copy": (copy, CAPTION),
            "blank": (encode(Image.new("RGB", (96, 96), (90, 90, 90))), CAPTION),
            "tiny": (encode(photo(3).resize((12, 12))), CAPTION), "short": (encode(photo(4)), "img"),
            **{f"good{i}": (encode(photo(10 + i)), f"{CAPTION} number {i}") for i in range(3)}}
    (tmp_path / "pool").mkdir()
    pq.write_table(pa.table({"image": [v[0] for v in rows.values()], "text": [v[1] for v in rows.values()]}),
                   tmp_path / "pool" / "00000.parquet")
    (tmp_path / "sha.txt").write_text(f"# known\n{hashlib.sha256(listed).hexdigest()}\n")
    (tmp_path / "phash.txt").write_text(f"{image_phash(near):016x}\n")
    screen = ScreenPlan.load([BlocklistSpec(name="known", uri=str(tmp_path / "sha.txt"), kind="sha256"),
                              BlocklistSpec(name="near", uri=str(tmp_path / "phash.txt"), kind="phash")],
                             QualityConfig(min_side=32, min_sharpness=1.0, min_caption_chars=10))
    spec = SourceSpec(name="web", format="parquet", uri=str(tmp_path / "pool"))
    return spec, screen, {"listed": listed, "copy": copy}


@pytest.mark.usefixtures("ray_local")
def test_a_screened_shard_caches_only_what_passes(tmp_path, tiny_backbone):
    spec, screen, secret = planted(tmp_path)
    [shard_uri] = list_shards(spec)
    cache = EmbeddingCache(root=Location(str(tmp_path / "cache")), fingerprint=describe(tiny_backbone).fingerprint)
    entry = cache.entry(spec, shard_uri, screen.key())
    worker = ShardEmbedder(embed=Embed(backbone=tiny_backbone), cache=cache, dtype="float32", screen=screen)
    done = run(Job(step="embed", units=[ShardJob(spec=spec, shard_uri=shard_uri, entry=entry, screened=True)],
                   work=worker), Threads(workers=1))
    [row] = done.rows
    assert (row["rows_read"], row["rows_embedded"]) == (8, 3)
    assert entry.read(["key"])["key"].to_pylist() == ["5", "6", "7"]  # the three good rows
    errors = entry.read_errors("web").sort_by("sample_id").to_pylist()
    assert [(e["sample_id"].rsplit("/", 1)[1], e["stage"], e["reason"], e["detail"]) for e in errors] == [
        ("0", "blocklist", "blocklist:known", ""), ("1", "blocklist", "blocklist:near", ""),
        ("2", "quality", "quality:blank_or_blurred", ""), ("3", "quality", "quality:too_small", ""),
        ("4", "quality", "quality:caption_too_short", "")]
    assert entry.counts().quarantined == {"blocklist:known": 1, "blocklist:near": 1, "quality:blank_or_blurred": 1,
                                          "quality:too_small": 1, "quality:caption_too_short": 1}
    written = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert written and not any(b in p.read_bytes() for p in written for b in secret.values())


def test_a_screened_job_on_a_worker_without_the_screen_fails(tmp_path, tiny_backbone):
    spec, screen, _ = planted(tmp_path)
    [shard_uri] = list_shards(spec)
    cache = EmbeddingCache(root=Location(str(tmp_path / "cache")), fingerprint="x")
    job = ShardJob(spec=spec, shard_uri=shard_uri, entry=cache.entry(spec, shard_uri, screen.key()), screened=True)
    with pytest.raises(RuntimeError, match="planned with filters"):
        ShardEmbedder(embed=Embed(backbone=tiny_backbone), cache=cache)._embed(job)
