"""LeRobot dataset v3: robot steps (episode, frame, instruction, image, action, state) and, from them, samples.

Layout read (relative to the dataset root): ``meta/info.json`` (features, fps, path templates),
``meta/tasks.parquet`` (task string -> task_index), ``meta/episodes/**.parquet`` (per-episode file locations and
video timestamps) and ``data/chunk-*/file-*.parquet``. A camera stored as an ``image`` feature is read from the
data files; a ``video`` feature is decoded from its MP4 files with PyAV, one episode at a time (seek to the
episode's start, decode forward), so memory stays bounded. A frame's place in the video follows LeRobot's own
rule: the episode's ``from_timestamp`` plus the frame's ``timestamp``. Decoded frames are kept lossless (PNG).
A *shard* is one data file.

The episode metadata is read once per dataset and process (only the columns used, never the ``stats/*``
ones): at 50k episodes it is tens of MB, and every data file needs it. An episode whose video cannot be
decoded loses its own frames only, each quarantined as ``unreadable_video``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from core.contracts import ROBOT_STEP, make_sample_id, table_from_rows
from core.errors import is_transient
from core.location import Location
from core.read.checks import ImageCheck, Quarantine, Reading, accept_sample, batched
from core.read.parquet import image_bytes
from core.settings import StorageConfig
from core.storage import filesystem, join, read_bytes, relative_name

_VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")


@dataclass(frozen=True)
class LeRobotMeta:
    root: str
    fps: float
    tasks: dict[int, str]
    episodes: list[dict]  # rows of meta/episodes (the columns used only), ordered by episode_index
    image_key: str
    image_dtype: str  # "image" or "video"
    data_path: str
    video_path: str | None

    def data_uri(self, chunk: int, file: int) -> str:
        return join(self.root, self.data_path.format(chunk_index=chunk, file_index=file))

    def video_uri(self, chunk: int, file: int) -> str:
        return join(self.root, self.video_path.format(video_key=self.image_key, chunk_index=chunk, file_index=file))


_META_CACHE: OrderedDict[tuple, LeRobotMeta] = OrderedDict()
_META_CACHE_SIZE = 16


def _episode_columns(image_key: str, image_dtype: str) -> list[str]:
    cols = ["episode_index", "length", "data/chunk_index", "data/file_index"]
    return cols + ([f"videos/{image_key}/{c}" for c in _VIDEO_COLUMNS] if image_dtype == "video" else [])


def _episode_files(root: str, storage: StorageConfig | None) -> dict[str, str]:
    """The ``meta/episodes`` Parquet files, each with a version stamp (size + mtime or ETag): one listing."""
    fs, path = filesystem(join(root, "meta/episodes"), storage)
    found = fs.find(path, detail=True) if fs.exists(path) else {}
    return {
        name: f"{info.get('size')}:{info.get('mtime') or info.get('ETag') or info.get('LastModified')}"
        for name, info in sorted(found.items())
        if name.endswith(".parquet")
    }


def _read_episodes(root: str, storage: StorageConfig | None, files: list[str], columns: list[str]) -> list[dict]:
    """The rows of the ``meta/episodes`` ``files``, ``columns`` only, ordered by episode_index."""
    fs, _ = filesystem(root, storage)
    episodes: list[dict] = []
    for ep_file in files:
        with fs.open(ep_file, "rb") as f:
            # pre_buffer off wherever pyarrow reads a Python file object: its background reads would call into
            # Python after the read returned, and one still running as the interpreter exits aborts the process
            episodes.extend(pq.read_table(f, columns=columns, pre_buffer=False).to_pylist())
    episodes.sort(key=lambda e: e["episode_index"])
    return episodes


def load_meta(
    where: str | Location, storage: StorageConfig | None = None, *, image_key: str | None = None
) -> LeRobotMeta:
    """Read the metadata of the v3 dataset at ``where`` (a location, or a root URI reached with ``storage``);
    raises ``ValueError`` if it is not a usable v3 dataset.

    Memoised per process by (root, camera, storage, ``info.json`` content, episode files' versions), so a data
    file's reader pays one small read and one listing, and a dataset rewritten in place is read again."""
    where = Location.of(where, storage)
    root, storage = where.uri, where.storage
    raw = read_bytes(join(root, "meta/info.json"), storage)
    info = json.loads(raw)
    version = str(info.get("codebase_version", "")) if isinstance(info, dict) else ""
    if not version.startswith("v3"):
        raise ValueError(f"{root}: codebase_version {version!r} is not LeRobot v3")
    if missing := [k for k in ("features", "fps", "data_path") if k not in info]:
        raise ValueError(f"{root}: meta/info.json lacks {missing}")
    cameras = {k: f["dtype"] for k, f in info["features"].items() if f.get("dtype") in ("image", "video")}
    if not cameras:
        raise ValueError(f"{root}: no image or video feature in meta/info.json")
    key = image_key or next(iter(cameras))
    if key not in cameras:
        raise ValueError(f"{root}: image_key {key!r} is not a camera feature (has {sorted(cameras)})")
    storage_key = json.dumps(storage.s3_options(), sort_keys=True, default=str) if storage else ""
    episode_files = _episode_files(root, storage)
    stamp = hashlib.sha256(raw + json.dumps(episode_files).encode()).hexdigest()
    cache_key = (root.rstrip("/"), key, storage_key, stamp)
    if (meta := _META_CACHE.get(cache_key)) is not None:
        _META_CACHE.move_to_end(cache_key)
        return meta
    fs, path = filesystem(join(root, "meta"), storage)
    with fs.open(f"{path}/tasks.parquet", "rb") as f:
        tasks_table = pq.read_table(f, pre_buffer=False)
    task_col = "task" if "task" in tasks_table.column_names else "__index_level_0__"
    if missing := {"task_index", task_col} - set(tasks_table.column_names):
        raise ValueError(f"{root}: meta/tasks.parquet lacks columns {sorted(missing)}")
    tasks = dict(zip(tasks_table["task_index"].to_pylist(), tasks_table[task_col].to_pylist(), strict=True))
    meta = LeRobotMeta(
        root=root.rstrip("/"),
        fps=float(info["fps"]),
        tasks=tasks,
        episodes=_read_episodes(root, storage, list(episode_files), _episode_columns(key, cameras[key])),
        image_key=key,
        image_dtype=cameras[key],
        data_path=info["data_path"],
        video_path=info.get("video_path"),
    )
    _META_CACHE[cache_key] = meta
    while len(_META_CACHE) > _META_CACHE_SIZE:
        _META_CACHE.popitem(last=False)
    return meta


def data_files(meta: LeRobotMeta) -> list[str]:
    """The data files (shards) the episodes live in, in order."""
    seen = dict.fromkeys((e["data/chunk_index"], e["data/file_index"]) for e in meta.episodes)
    return [meta.data_uri(c, f) for c, f in seen]


def _png(frame: np.ndarray) -> bytes:
    """Lossless, so a decoded frame reaches the backbone as the video holds it (no second lossy encode)."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class _EpisodeVideo:
    """The decoded frames of one episode, looked up by the data's ``timestamp`` (frames in time order)."""

    def __init__(self, meta: LeRobotMeta, episode: dict[str, Any], storage: StorageConfig | None) -> None:
        prefix = f"videos/{meta.image_key}/"
        self.uri = meta.video_uri(episode[prefix + "chunk_index"], episode[prefix + "file_index"])
        self.start, self.stop = episode[prefix + "from_timestamp"], episode[prefix + "to_timestamp"]
        self.tolerance = 0.5 / meta.fps  # a frame matches the timestamp nearest to it
        self.storage = storage
        self._frames = self._decode()
        self._current: tuple[float, np.ndarray] | None = None

    def _decode(self) -> Iterator[tuple[float, np.ndarray]]:
        import av  # only video datasets need PyAV

        fs, path = filesystem(self.uri, self.storage)
        with fs.open(path, "rb") as f, av.open(f) as container:
            stream = container.streams.video[0]
            seek = max(self.start - self.tolerance, 0)
            container.seek(int(seek / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base)
                if t >= self.stop - self.tolerance:
                    return
                if t >= self.start - self.tolerance:
                    yield t - self.start, frame.to_ndarray(format="rgb24")

    def frame_at(self, timestamp: float) -> np.ndarray | None:
        """The frame shown at ``timestamp`` (seconds from the episode's start); None if the video lacks it."""
        while self._current is None or self._current[0] < timestamp - self.tolerance:
            self._current = next(self._frames, None)
            if self._current is None:
                return None
        t, array = self._current
        return array if abs(t - timestamp) <= self.tolerance else None


class _VideoEpisodes:
    """Frames of a video camera, one episode at a time; an episode whose video fails is lost alone."""

    def __init__(self, meta: LeRobotMeta, storage: StorageConfig | None) -> None:
        import av  # only video datasets need PyAV

        self.meta, self.storage, self.errors = meta, storage, (av.FFmpegError, OSError)
        self.by_episode = {e["episode_index"]: e for e in meta.episodes}
        self.episode_index: int | None = None
        self.video: _EpisodeVideo | None = None
        self.lost: str | None = None  # why the current episode's frames cannot be had

    def frame(self, episode_index: int, timestamp: float) -> tuple[bytes | None, str | None]:
        """(PNG bytes or None if the video has no frame there, None) or (None, why the episode is lost)."""
        if episode_index != self.episode_index:
            self.episode_index, self.video, self.lost = episode_index, None, None
            if (episode := self.by_episode.get(episode_index)) is None:
                self.lost = f"episode {episode_index} is not in meta/episodes"
            else:
                self.video = _EpisodeVideo(self.meta, episode, self.storage)
        if self.lost is None:
            try:
                array = self.video.frame_at(timestamp)
            except self.errors as err:
                if is_transient(err) or isinstance(err, PermissionError):
                    raise  # not the video's fault: the shard fails and is read again, never cached half-read
                self.lost = f"{self.video.uri}: {type(err).__name__}: {err}"
            else:
                return (None if array is None else _png(array)), None
        return None, self.lost


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
    video = _VideoEpisodes(meta, storage) if meta.image_dtype == "video" else None
    fs, path = filesystem(shard_uri, storage)
    try:
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f, pre_buffer=False)
            names = pf.schema_arrow.names
            wanted = ["episode_index", "frame_index", "task_index", "action"]
            wanted += ["timestamp"] if video is not None else [meta.image_key]
            if missing := [c for c in wanted if c not in names]:
                quarantine.add(shard_uri=shard_uri, reason="wrong_schema", detail=f"missing columns {missing}")
                return
            has_state = "observation.state" in names
            wanted += ["observation.state"] if has_state else []
            for rb in pf.iter_batches(batch_size=read_batch, columns=wanted):
                batch = rb.to_pydict()
                images = image_bytes(rb.column(meta.image_key)).to_pylist() if video is None else None
                for i, (ep, fr) in enumerate(zip(batch["episode_index"], batch["frame_index"], strict=True)):
                    if fr % frame_stride:
                        continue
                    key = f"ep{ep:06d}_fr{fr:06d}"
                    sample_id = make_sample_id(source, shard, key)
                    if images is not None:
                        image = images[i]
                    else:
                        image, lost = video.frame(ep, batch["timestamp"][i])
                        if lost is not None:
                            quarantine.add(
                                shard_uri=shard_uri, reason="unreadable_video", detail=lost, sample_id=sample_id
                            )
                            continue
                    yield {
                        "sample_id": sample_id,
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
    except (pa.ArrowException, OSError) as err:
        if is_transient(err) or isinstance(err, PermissionError):
            raise  # not the content's fault: the shard fails and is read again, never cached half-read
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


def read_lerobot_shard(reading: Reading, shard_uri: str) -> Iterator[pa.Table]:
    """Stream one data file of a LeRobot dataset as samples: a frame and its task instruction."""
    spec = reading.spec
    rows = _step_rows(
        load_meta(reading.root, reading.storage, image_key=spec.image_key),
        shard_uri,
        source=spec.name,
        quarantine=reading.quarantine,
        storage=reading.storage,
        frame_stride=spec.frame_stride,
        read_batch=reading.batch_size,
    )
    samples = (
        {
            **r,
            "text": r["task"],
            "meta": json.dumps({"episode_index": r["episode_index"], "frame_index": r["frame_index"]}),
        }
        for r in rows
    )
    yield from batched(samples, reading.quarantine, reading.image_check, reading.batch_size)
