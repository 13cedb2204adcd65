"""A read batch with planted cases (a listed image and its re-encoded and resized copies, a listed URL, a blank
image, a tiny image, a short caption) loses exactly those rows, each quarantined with its reason and no content."""

from __future__ import annotations

import json

from PIL import Image

from core.contracts import SAMPLE, table_from_rows
from core.read import Quarantine
from tasks.filters.blocklist import Blocklists, BlocklistSpec, image_phash
from tasks.filters.quality import QualityConfig
from tasks.filters.screen import Screen
from tests.tasks.filters.conftest import encode, photo


def _row(name: str, image: bytes, text: str = "a dog on a beach at sunset", url: str | None = None) -> dict:
    return {"sample_id": f"web/0.tar/{name}", "source": "web", "shard_uri": "s3://b/web/0.tar", "key": name,
            "image": image, "text": text, "meta": json.dumps({"url": url}) if url else None}


def test_planted_samples_are_quarantined_with_their_reasons(tmp_path):
    listed = photo(1)
    (tmp_path / "phash.txt").write_text(f"{image_phash(listed):016x}\n")
    (tmp_path / "domains.txt").write_text("bad.example\n")
    lists = Blocklists.load([BlocklistSpec(name="known", uri=str(tmp_path / "phash.txt"), kind="phash"),
                             BlocklistSpec(name="hosts", uri=str(tmp_path / "domains.txt"), kind="domain")])
    quality = QualityConfig(min_side=32, min_sharpness=1.0, min_caption_chars=10)
    rows = [
        _row("listed", encode(listed)),
        _row("reencoded", encode(listed, "JPEG", quality=60)),
        _row("resized", encode(listed.resize((64, 64)))),
        _row("host", encode(photo(2)), url="https://cdn.bad.example/x.jpg"),
        _row("blank", encode(Image.new("RGB", (96, 96), (128, 128, 128)))),
        _row("tiny", encode(photo(3).resize((16, 16)))),
        _row("short", encode(photo(4)), text="img"),
        _row("fine", encode(photo(5)), url="https://good.example/y.jpg"),
    ]
    quarantine = Quarantine(stage="read")
    kept = Screen(lists, quality).apply(table_from_rows(rows, SAMPLE), quarantine)
    assert kept["key"].to_pylist() == ["fine"]
    reasons = {row["sample_id"].rsplit("/", 1)[1]: row["reason"] for row in quarantine.rows}
    assert reasons == {"listed": "blocklist:known", "reencoded": "blocklist:known", "resized": "blocklist:known",
                       "host": "blocklist:hosts", "blank": "quality:blank_or_blurred", "tiny": "quality:too_small",
                       "short": "quality:caption_too_short"}
    assert all(row["detail"] == "" for row in quarantine.rows)


def test_no_filter_keeps_the_batch_as_it_is():
    table = table_from_rows([_row("a", encode(photo(6)))], SAMPLE)
    assert Screen(Blocklists([]), QualityConfig()).apply(table, Quarantine()) is table
