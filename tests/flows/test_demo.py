"""The curation demo on a small corpus with planted web junk: the funnel it prints and records follows from the
removal records, every planted case is removed by its own filter and no ordinary sample by the read-time ones,
and neither the blocklisted image nor its resized copy (nor its listed digest) reaches any file of the run."""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.manifest import read_manifest, read_sidecar
from core.read import Quarantine, read_source
from flows.demo import run_demo
from synth import SynthConfig
from synth.junk import blocklisted_image
from tasks.funnel import STAGES, funnel_total

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api", "ray_local")]

SMALL = SynthConfig(seed=3, samples_per_source=40, shard_size=20, image_size=32, robot_episodes=2,
                    frames_per_episode=6, episodes_per_file=2, junk_rate=0.1)
QUALITY = {"blank": "quality:blank_or_blurred", "tiny": "quality:too_small",
           "short_caption": "quality:caption_too_short", "junk_caption": "quality:caption_not_text"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root, printed = tmp_path_factory.mktemp("demo"), io.StringIO()
    with contextlib.redirect_stdout(printed):
        report = run_demo(root=str(root), s3=False, synth=SMALL, k_fraction=0.2)
    planted = pd.read_parquet(root / "corpus" / "planted.parquet").set_index("sample_id")
    sidecar = read_sidecar(report.manifest_uri)
    removals = pa.concat_tables([pq.read_table(sidecar["errors_uri"], columns=["sample_id", "stage", "reason"]),
                                 pq.read_table(sidecar["removed_uri"], columns=["sample_id", "stage", "reason"])])
    removed = removals.filter(pc.is_in(removals["stage"], pa.array(["blocklist", "quality", "dedup"]))).to_pandas()
    return root, report, planted, sidecar, removed.set_index("sample_id"), printed.getvalue()


def test_the_funnel_is_printed_recorded_and_follows_from_the_removals(demo_run):
    _, report, _, sidecar, removed, out = demo_run
    assert sidecar["funnel"] == report.funnel and set(report.funnel) == {"photos", "tabletop", "docs", "charts"}
    manifest = read_manifest(report.manifest_uri).to_pandas()
    removed_source = removed.index.str.split("/").str[0]
    for source, counts in report.funnel.items():
        assert [counts[s] for s in STAGES] == sorted((counts[s] for s in STAGES), reverse=True)  # monotone
        mine = removed[removed_source == source]["stage"].value_counts()
        assert counts["pool"] - counts["after_blocklist"] == mine.get("blocklist", 0)
        assert counts["after_blocklist"] - counts["after_quality"] == mine.get("quality", 0)
        assert counts["after_quality"] - counts["after_dedup"] == mine.get("dedup", 0)
        rows = manifest[manifest["source"] == source]
        assert counts["pool"] == len(rows) + mine.get("blocklist", 0) + mine.get("quality", 0)
        assert counts["selected"] == rows["selected"].sum()
    assert funnel_total(report.funnel)["pool"] == 4 * SMALL.samples_per_source
    assert "after_blocklist" in Path(report.report_uri).read_text()
    # the demo's printed table: one row per source and the whole pool's
    table = out[out.index("funnel (samples left after each filter)"):].splitlines()[1:8]
    assert table[0].split() == ["pool", *STAGES[1:]] and table[1].split() == ["source"]
    total = funnel_total(report.funnel)
    assert table[-1].split() == ["(all)", *[str(total[s]) for s in STAGES]]


def test_each_planted_case_is_removed_by_its_filter(demo_run):
    _, report, planted, _, removed, _ = demo_run
    reason = removed["reason"]
    listed = planted.index[planted["case"] == "blocklisted"]
    copy = planted.index[planted["case"] == "blocklisted_copy"]
    assert len(listed) == len(copy) == 1
    assert reason[listed[0]] == "blocklist:demo_sha256" and reason[copy[0]] == "blocklist:demo_phash"
    assert (removed["stage"] == "blocklist").sum() == 2
    expected = {i: QUALITY[c] for i, c in planted["case"].items() if c in QUALITY}
    assert len(expected) >= 4 and set(expected.values()) == set(QUALITY.values())
    assert reason[removed["stage"] == "quality"].to_dict() == expected  # every planted case, nothing else
    # Exact copies of one image are the same vector: all but the one kept are removed.
    exact = planted[planted["case"] == "exact_copy"]
    assert len(exact) >= 2
    for _, group in exact.groupby("copy_of"):
        dropped = group.index.intersection(removed.index[removed["stage"] == "dedup"])
        assert len(dropped) >= len(group) - 1
    manifest = read_manifest(report.manifest_uri)
    assert not (set(listed) | set(copy)) & set(manifest["sample_id"].to_pylist())


def _sample_bytes(sample_id: str, root: Path) -> bytes:
    source = sample_id.split("/", 1)[0]
    for table in read_source(_spec(source, root), quarantine=Quarantine()):
        ids = table["sample_id"].to_pylist()
        if sample_id in ids:
            return table["image"][ids.index(sample_id)].as_py()
    raise KeyError(sample_id)


def _spec(source: str, root: Path):
    from synth import load_corpus_info

    return next(s for s in load_corpus_info(str(root / "corpus")).pool if s.name == source)


def test_no_file_of_the_run_holds_the_blocklisted_image_its_copy_or_digest(demo_run):
    root, _, planted, _, _, _ = demo_run
    listed = blocklisted_image(SMALL.seed, SMALL.image_size)
    copy = _sample_bytes(planted.index[planted["case"] == "blocklisted_copy"][0], root)
    assert _sample_bytes(planted.index[planted["case"] == "blocklisted"][0], root) == listed
    secrets = [listed, copy, hashlib.sha256(listed).hexdigest().encode()]
    files = [p for p in (root / "runs").rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.name == "report.html" for p in files)
    assert [(p, i) for p in files for i, s in enumerate(secrets) if s in p.read_bytes()] == []
