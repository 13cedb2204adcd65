"""The synthetic corpus: deterministic bytes, the exact layout the readers rely on, and idempotent reruns."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from core.contracts import make_sample_id
from core.settings import ConfigError, SourceSpec, parse_config
from synth import (
    ALIGNMENT,
    KINDS,
    CorpusInfo,
    Episode,
    SynthConfig,
    draw_scene,
    generate_corpus,
    load_corpus_info,
    write_lerobot_dataset,
)

TINY = SynthConfig(
    samples_per_source=25,
    shard_size=10,
    image_size=32,
    robot_episodes=3,
    frames_per_episode=6,
    episodes_per_file=2,
)
CAMERA = "observation.images.front"


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root by relative path (corpus.yaml names the root: it is compared with it cut out)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            out[str(p.relative_to(root))] = data.replace(str(root).encode(), b"ROOT")
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> CorpusInfo:
    return generate_corpus(str(tmp_path_factory.mktemp("corpus")), TINY)


def test_scenes_are_pure_functions_of_the_rng():
    for kind in KINDS:
        a_img, a_text = draw_scene(kind, np.random.default_rng(7), 48, qa=True)
        b_img, b_text = draw_scene(kind, np.random.default_rng(7), 48, qa=True)
        assert a_img.size == (48, 48) and a_img.mode == "RGB"
        assert np.array_equal(np.asarray(a_img), np.asarray(b_img)) and a_text == b_text
        assert a_text.startswith("Q: ") and " A: " in a_text
    assert ALIGNMENT["tabletop"] == 1.0 and ALIGNMENT["document"] == 0.0


def test_same_config_same_bytes_other_seed_other_bytes(tmp_path, corpus):
    first = _files(Path(corpus.root))
    again = tmp_path / "again"
    generate_corpus(str(again), TINY)
    assert _files(again) == first
    other = tmp_path / "other"
    generate_corpus(str(other), TINY.model_copy(update={"seed": 1}))
    other_files = _files(other)
    assert other_files.keys() == first.keys()
    assert other_files["pool/photos/00000.tar"] != first["pool/photos/00000.tar"]
    assert (
        other_files["robot/pick_place/data/chunk-000/file-000.parquet"]
        != first["robot/pick_place/data/chunk-000/file-000.parquet"]
    )


def test_worker_count_does_not_change_the_bytes(tmp_path, corpus):
    parallel = tmp_path / "parallel"
    generate_corpus(str(parallel), TINY.model_copy(update={"workers": 2}))
    assert _files(parallel) == _files(Path(corpus.root))


def test_pool_layout_and_ground_truth(corpus):
    root = Path(corpus.root)
    assert [s.name for s in corpus.pool] == ["photos", "tabletop", "docs", "charts"]
    assert corpus.counts == {
        "photos": 25,
        "tabletop": 25,
        "docs": 25,
        "charts": 25,
        "pick_place": 18,
        "stack_blocks": 18,
    }
    expected_ids = []
    for spec in corpus.pool:
        suffix = ".tar" if spec.format == "webdataset" else ".parquet"
        shards = sorted(Path(spec.uri).iterdir())
        assert [p.name for p in shards] == [f"{i:05d}{suffix}" for i in range(3)]
        for shard_index, shard in enumerate(shards):
            if spec.format == "webdataset":
                with tarfile.open(shard) as tar:
                    names = tar.getnames()
                groups: dict[str, set[str]] = {}
                for name in names:
                    key, ext = name.split(".", 1)
                    groups.setdefault(key, set()).add(ext)
                exts = {"jpg", "txt", "json"} if spec.name == "photos" else {"png", "txt"}
                assert all(g == exts for g in groups.values())
                assert all(len(k) == 9 and k.startswith(f"{shard_index:05d}") for k in groups)
                keys = list(dict.fromkeys(n.split(".", 1)[0] for n in names))
            else:
                table = pq.read_table(shard)
                assert table.column_names == ["image", "text"]
                Image.open(io.BytesIO(table["image"][0].as_py())).verify()
                keys = [str(i) for i in range(table.num_rows)]
            expected_ids += [make_sample_id(spec.name, shard.name, k) for k in keys]

    gt = pq.read_table(root / "ground_truth.parquet").to_pandas()
    assert list(gt.columns) == ["sample_id", "source", "scene", "aligned", "alignment"]
    assert list(gt["sample_id"]) == expected_ids and gt["sample_id"].is_unique
    assert (gt["aligned"] == (gt["scene"] == "tabletop")).all()
    assert (gt["alignment"] == gt["scene"].map(ALIGNMENT).astype("float32")).all()
    assert set(gt.loc[gt.source == "docs", "scene"]) <= {"document", "tabletop"}


def test_photo_members_match_their_json(corpus):
    with tarfile.open(Path(corpus.pool[0].uri) / "00000.tar") as tar:
        meta = json.loads(tar.extractfile("000000000.json").read())
        caption = tar.extractfile("000000000.txt").read().decode()
        image = Image.open(io.BytesIO(tar.extractfile("000000000.jpg").read()))
    assert meta["key"] == "000000000" and meta["caption"] == caption and meta["scene"] in ALIGNMENT
    assert image.format == "JPEG" and image.size == (32, 32)


def test_lerobot_datasets(corpus):
    assert [(s.name, s.format) for s in corpus.robot] == [
        ("pick_place", "lerobot"),
        ("stack_blocks", "lerobot"),
    ]
    for spec in corpus.robot:
        root = Path(spec.uri)
        info = json.loads((root / "meta/info.json").read_text())
        video = info["features"][CAMERA]["dtype"] == "video"
        assert video == (spec.name == "stack_blocks")
        assert info["codebase_version"] == "v3.0" and info["fps"] == 10
        assert info["features"][CAMERA]["shape"] == [32, 32, 3]
        files = sorted((root / "data/chunk-000").iterdir())
        assert [p.name for p in files] == ["file-000.parquet", "file-001.parquet"]
        data = pd.concat([pq.read_table(p).to_pandas() for p in files], ignore_index=True)
        assert len(data) == info["total_frames"] == 18 and data["episode_index"].nunique() == info["total_episodes"]
        assert list(data["index"]) == list(range(18))
        assert all(len(a) == 7 and a[-1] in (0.0, 1.0) for a in data["action"])
        assert all(len(s) == 8 for s in data["observation.state"])
        episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pandas()
        tasks = pd.read_parquet(root / "meta/tasks.parquet")
        assert tasks.index.name == "task" and len(tasks) == info["total_tasks"]
        for _, ep in episodes.iterrows():
            rows = data[data.episode_index == ep.episode_index]
            assert (ep.dataset_from_index, ep.dataset_to_index) == (
                rows["index"].min(),
                rows["index"].max() + 1,
            )
            assert ep.length == len(rows) and list(rows["frame_index"]) == list(range(ep.length))
            assert tasks.loc[ep.tasks[0], "task_index"] == rows["task_index"].iloc[0]
        stats = json.loads((root / "meta/stats.json").read_text())
        assert len(stats["action"]["q99"]) == 7 and len(stats["observation.state"]["mean"]) == 8
        if not video:
            Image.open(io.BytesIO(data[CAMERA][0]["bytes"])).verify()
            continue
        assert info["video_path"].format(video_key=CAMERA, chunk_index=0, file_index=0) == (
            f"videos/{CAMERA}/chunk-000/file-000.mp4"
        )
        for file_index, group in episodes.groupby(f"videos/{CAMERA}/file_index"):
            with av.open(str(root / f"videos/{CAMERA}/chunk-000/file-{file_index:03d}.mp4")) as container:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            assert len(frames) == group["length"].sum() and frames[0].shape == (32, 32, 3)
            assert group[f"videos/{CAMERA}/to_timestamp"].max() == pytest.approx(len(frames) / 10)


def test_corpus_yaml_round_trips(corpus):
    raw = yaml.safe_load((Path(corpus.root) / "corpus.yaml").read_text())
    assert [SourceSpec.model_validate(s) for s in raw["pool"]] == corpus.pool
    assert load_corpus_info(corpus.root) == corpus


def test_rerun_is_a_no_op_and_other_settings_are_refused(corpus):
    root = Path(corpus.root)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate_corpus(str(root), TINY.model_copy(update={"workers": 3})) == corpus  # workers: same output
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    with pytest.raises(FileExistsError, match="other settings"):
        generate_corpus(str(root), TINY.model_copy(update={"seed": 5}))


def test_overwrite_and_unfinished_roots_leave_no_stale_shards(tmp_path):
    root = tmp_path / "c"
    generate_corpus(str(root), TINY)
    smaller = TINY.model_copy(update={"samples_per_source": 10})
    generate_corpus(str(root), smaller, overwrite=True)
    assert [p.name for p in (root / "pool/photos").iterdir()] == ["00000.tar"]
    (root / "_SUCCESS").unlink()  # as if a run had died half-way
    info = generate_corpus(str(root), smaller)
    assert info.counts["photos"] == 10 and (root / "_SUCCESS").exists()


def test_config_is_validated():
    with pytest.raises(ConfigError, match="image_size"):
        parse_config(SynthConfig, {"image_size": 33})
    with pytest.raises(ConfigError, match="samples_per_source"):
        parse_config(SynthConfig, {"samples_per_source": 0})
    with pytest.raises(ConfigError, match="sampels"):
        parse_config(SynthConfig, {"sampels_per_source": 3})


def test_lerobot_writer_takes_any_episodes(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [
        Episode(
            task=f"task {i % 2}",
            frames=[rng.integers(0, 255, (16, 24, 3), dtype=np.uint8) for _ in range(n)],
            state=rng.standard_normal((n, 8)).astype(np.float32),
            action=rng.standard_normal((n, 7)).astype(np.float32),
        )
        for i, n in enumerate([3, 5, 4])
    ]
    info = write_lerobot_dataset(str(tmp_path / "ds"), iter(episodes), fps=5, video=True, episodes_per_file=3)
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 12, 2)
    ep = pq.read_table(tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet").to_pandas()
    assert list(ep[f"videos/{CAMERA}/from_timestamp"]) == [0.0, 0.6, 1.6]
    assert list(ep["dataset_to_index"]) == [3, 8, 12]


def test_lerobot_stats_serve_lerobot_normalisers(corpus):
    """meta/stats.json and the per-episode stats/* columns hold every feature, cameras included, with the
    quantiles LeRobot's QUANTILES / QUANTILE10 normalisers read."""
    for spec in corpus.robot:
        root = Path(spec.uri)
        info = json.loads((root / "meta/info.json").read_text())
        stats = json.loads((root / "meta/stats.json").read_text())
        assert set(stats) == set(info["features"])
        wanted = {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
        assert all(set(s) == wanted for s in stats.values())
        assert np.asarray(stats[CAMERA]["q50"]).shape == (3, 1, 1)
        assert 0 <= np.min(stats[CAMERA]["q01"]) <= np.max(stats[CAMERA]["q99"]) <= 1
        data = pd.concat([pq.read_table(p).to_pandas() for p in sorted((root / "data").rglob("*.parquet"))])
        actions = np.stack(data["action"])
        assert np.allclose(stats["action"]["mean"], actions.mean(0), atol=1e-5)
        assert stats["action"]["count"] == [len(actions)]
        q01, q99 = np.asarray(stats["action"]["q01"]), np.asarray(stats["action"]["q99"])
        assert np.all(q01 <= np.asarray(stats["action"]["q50"])) and np.all(q01 <= q99)
        episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
        for feature in info["features"]:
            for name in wanted:
                assert f"stats/{feature}/{name}" in episodes.column_names
        assert episodes[f"stats/{CAMERA}/count"].to_pylist() == [[n] for n in episodes["length"].to_pylist()]
