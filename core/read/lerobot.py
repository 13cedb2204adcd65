"""LeRobot dataset v3: robot steps (episode, frame, instruction, image, action, state) and, from them, samples.

Layout read (relative to the dataset root): ``meta/info.json`` (features, fps, path templates),
``meta/tasks.parquet`` (task string -> task_index), ``meta/episodes/**.parquet`` (per-episode file locations and
video timestamps) and ``data/chunk-*/file-*.parquet``. A camera stored as an ``image`` feature is read from the
data files; a ``video`` feature is decoded from its MP4 files with PyAV, one episode at a time (seek to the
episode's start, decode forward), so memory stays bounded. A *shard* is one data file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from core.contracts import ROBOT_STEP, make_sample_id, table_from_rows
from core.read.base import ImageCheck, Quarantine, accept_sample, batched
from core.read.parquet import image_bytes
from core.settings import SourceSpec, StorageConfig
from core.storage import filesystem, join, read_bytes, relative_name


@dataclass(frozen=True)
class LeRobotMeta:
    root: str
    fps: float
    tasks: dict[int, str]
    episodes: list[dict]  # rows of meta/episodes, ordered by episode_index
    image_key: str
    image_dtype: str  # "image" or "video"
    data_path: str
    video_path: str | None

    def data_uri(self, chunk: int, file: int) -> str:
        return join(self.root, self.data_path.format(chunk_index=chunk, file_index=file))

    def video_uri(self, chunk: int, file: int) -> str:
        return join(self.root, self.video_path.format(video_key=self.image_key, chunk_index=chunk, file_index=file))


def load_meta(root: str, storage: StorageConfig | None = None, *, image_key: str | None = None) -> LeRobotMeta:
    """Read a v3 dataset's metadata; raises ``ValueError`` if it is not a usable v3 dataset."""
    info = json.loads(read_bytes(join(root, "meta/info.json"), storage))
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise ValueError(f"{root}: codebase_version {version!r} is not LeRobot v3")
    cameras = {k: f["dtype"] for k, f in info["features"].items() if f.get("dtype") in ("image", "video")}
    if not cameras:
        raise ValueError(f"{root}: no image or video feature in meta/info.json")
    key = image_key or next(iter(cameras))
    if key not in cameras:
        raise ValueError(f"{root}: image_key {key!r} is not a camera feature (has {sorted(cameras)})")
    fs, path = filesystem(join(root, "meta"), storage)
    with fs.open(f"{path}/tasks.parquet", "rb") as f:
        tasks_table = pq.read_table(f)
    task_col = "task" if "task" in tasks_table.column_names else "__index_level_0__"
    tasks = dict(zip(tasks_table["task_index"].to_pylist(), tasks_table[task_col].to_pylist(), strict=True))
    episodes: list[dict] = []
    for ep_file in sorted(fs.glob(f"{path}/episodes/**/*.parquet")):
        with fs.open(ep_file, "rb") as f:
            episodes.extend(pq.read_table(f).to_pylist())
    episodes.sort(key=lambda e: e["episode_index"])
    return LeRobotMeta(
        root=root.rstrip("/"),
        fps=float(info["fps"]),
        tasks=tasks,
        episodes=episodes,
        image_key=key,
        image_dtype=cameras[key],
        data_path=info["data_path"],
        video_path=info.get("video_path"),
    )


def data_files(meta: LeRobotMeta) -> list[str]:
    """The data files (shards) the episodes live in, in order."""
    seen = dict.fromkeys((e["data/chunk_index"], e["data/file_index"]) for e in meta.episodes)
    return [meta.data_uri(c, f) for c, f in seen]


def _jpeg(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


class _VideoFrames:
    """Decoded frames of one episode from the MP4 files of a video feature."""

    def __init__(self, meta: LeRobotMeta, storage: StorageConfig | None) -> None:
        self.meta, self.storage = meta, storage
        self.by_episode = {e["episode_index"]: e for e in meta.episodes}

    def episode(self, episode_index: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame_index, RGB array) for one episode, in order."""
        ep = self.by_episode[episode_index]
        prefix = f"videos/{self.meta.image_key}/"
        uri = self.meta.video_uri(ep[prefix + "chunk_index"], ep[prefix + "file_index"])
        start, stop = ep[prefix + "from_timestamp"], ep[prefix + "to_timestamp"]
        half = 0.5 / self.meta.fps  # frame times are matched to the nearest frame
        fs, path = filesystem(uri, self.storage)
        with fs.open(path, "rb") as f, av.open(f) as container:
            stream = container.streams.video[0]
            container.seek(int(max(start - half, 0) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base)
                if t < start - half:
                    continue
                if t >= stop - half:
                    break
                yield round((t - start) * self.meta.fps), frame.to_ndarray(format="rgb24")


def _next_frame(frames: Iterator[tuple[int, np.ndarray]], frame_index: int, encode: bool) -> bytes | None:
    """Advance an episode's decoded frames to ``frame_index``; its JPEG bytes if ``encode`` (None if missing)."""
    for index, array in frames:
        if index == frame_index:
            return _jpeg(array) if encode else None
        if index > frame_index:
            return None
    return None


def _step_rows(
    meta: LeRobotMeta,
    shard_uri: str,
    *,
    source: str,
    quarantine: Quarantine,
    storage: StorageConfig | None,
    frame_stride: int,
    read_batch: int = 256,
) -> Iterator[dict]:
    """Candidate step rows of one data file (every ``frame_stride``-th frame), with their sample ids."""
    shard = relative_name(meta.root, shard_uri)
    video = _VideoFrames(meta, storage) if meta.image_dtype == "video" else None
    frames: Iterator[tuple[int, np.ndarray]] = iter(())
    current_episode = None
    fs, path = filesystem(shard_uri, storage)
    try:
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            wanted = ["episode_index", "frame_index", "task_index", "action"]
            wanted += [meta.image_key] if video is None else []
            if missing := [c for c in wanted if c not in names]:
                quarantine.add(shard_uri=shard_uri, reason="wrong_schema", detail=f"missing columns {missing}")
                return
            has_state = "observation.state" in names
            wanted += ["observation.state"] if has_state else []
            for rb in pf.iter_batches(batch_size=read_batch, columns=wanted):
                batch = rb.to_pydict()
                images = image_bytes(rb.column(meta.image_key)).to_pylist() if video is None else None
                for i, (ep, fr) in enumerate(zip(batch["episode_index"], batch["frame_index"], strict=True)):
                    if video is not None and ep != current_episode:
                        frames, current_episode = video.episode(ep), ep
                    keep = fr % frame_stride == 0
                    image = images[i] if images is not None else _next_frame(frames, fr, keep)
                    if not keep:
                        continue
                    key = f"ep{ep:06d}_fr{fr:06d}"
                    yield {
                        "sample_id": make_sample_id(source, shard, key),
                        "source": source,
                        "shard_uri": shard_uri,
                        "key": key,
                        "episode_index": ep,
                        "frame_index": fr,
                        "task": meta.tasks.get(batch["task_index"][i]),
                        "image": image,
                        "action": batch["action"][i],
                        "state": batch["observation.state"][i] if has_state else None,
                    }
    except FileNotFoundError as err:
        quarantine.add(shard_uri=shard_uri, reason="unreadable_shard", detail=f"not found: {err}")
    except (pa.ArrowException, av.FFmpegError, OSError, KeyError) as err:
        quarantine.add(shard_uri=shard_uri, reason="unreadable_shard", detail=f"{type(err).__name__}: {err}")


def read_robot_steps(
    meta: LeRobotMeta,
    shard_uri: str,
    *,
    source: str,
    quarantine: Quarantine,
    storage: StorageConfig | None = None,
    batch_size: int = 256,
    frame_stride: int = 1,
    image_check: ImageCheck = "header",
) -> Iterator[pa.Table]:
    """Stream one data file as robot-step tables; frames without image or instruction are quarantined."""
    rows: list[dict] = []
    for row in _step_rows(
        meta, shard_uri, source=source, quarantine=quarantine, storage=storage, frame_stride=frame_stride
    ):
        row["text"] = row["task"]
        if not accept_sample(row, quarantine, image_check):
            continue
        rows.append(row)
        if len(rows) >= batch_size:
            yield table_from_rows(rows, ROBOT_STEP)
            rows = []
    if rows:
        yield table_from_rows(rows, ROBOT_STEP)


def read_lerobot_shard(
    spec: SourceSpec,
    shard_uri: str,
    *,
    root: str,
    quarantine: Quarantine,
    storage: StorageConfig | None = None,
    batch_size: int = 256,
    image_check: ImageCheck = "header",
    meta: LeRobotMeta | None = None,
) -> Iterator[pa.Table]:
    """Stream one data file of a LeRobot dataset as samples: a frame and its task instruction."""
    meta = meta or load_meta(root, storage, image_key=spec.image_key)
    rows = _step_rows(
        meta,
        shard_uri,
        source=spec.name,
        quarantine=quarantine,
        storage=storage,
        frame_stride=spec.frame_stride,
        read_batch=batch_size,
    )
    samples = (
        {
            **r,
            "text": r["task"],
            "meta": json.dumps({"episode_index": r["episode_index"], "frame_index": r["frame_index"]}),
        }
        for r in rows
    )
    yield from batched(samples, quarantine, image_check, batch_size)
