"""A small LeRobot v3.0 dataset writer: episodes in, the v3 file layout out (through ``core.storage``).

It writes what LeRobot itself writes — ``meta/info.json``, ``meta/tasks.parquet``, ``meta/stats.json``,
``meta/episodes/chunk-000/file-000.parquet`` (with per-episode ``stats/*`` columns),
``data/chunk-CCC/file-FFF.parquet`` and, for a video camera, ``videos/{camera}/chunk-CCC/file-FFF.mp4`` — so the
product's robot reader can be tested on the real layout and LeRobot's normalisers work on what it writes.
Episodes are consumed as a stream, ``episodes_per_file`` at a time, so a dataset never has to fit in memory.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from itertools import count, islice
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from core.settings import StorageConfig
from core.storage import join, publish_bytes, write_parquet
from synth.lerobot_stats import Stats, episode_columns, feature_stats, image_stats, stats_json

CAMERA = "observation.images.front"
STATE_NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper_left", "gripper_right"]
ACTION_NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # the HF datasets Image layout


@dataclass
class Episode:
    """One recorded episode: a camera frame, a state and an action per step, and the instruction."""

    task: str
    frames: list[np.ndarray]  # uint8 (H, W, 3)
    state: np.ndarray  # float32 (T, len(STATE_NAMES))
    action: np.ndarray  # float32 (T, len(ACTION_NAMES))

    def __len__(self) -> int:
        return len(self.frames)


def video_codec() -> str:
    """libx264 where this FFmpeg build has it, else the always-built-in mpeg4."""
    import av  # PyAV and pandas are imported on use: `emt` starts without them

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except av.codec.codec.UnknownCodecError:
        return "mpeg4"


def encode_mp4(frames: list[np.ndarray], fps: int, codec: str) -> bytes:
    """Encode RGB frames as one yuv420p MP4 whose bytes depend on the frames alone.

    Reproducibility needs one thread and x264's macroblock-tree rate control off: with mbtree on, the same
    frames encoded twice in one process came out different now and then (at 18, 46, 64 and 96 px).
    """
    import av

    height, width = frames[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.codec_context.options = {"crf": "18", "x264-params": "mbtree=0"}
        else:
            stream.codec_context.bit_rate = 2_000_000
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush delayed frames
    return buf.getvalue()


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)  # fast: level 6 costs 2-3x the time
    return buf.getvalue()


def _list_column(rows: np.ndarray) -> pa.Array:
    """A (N, D) float32 array as list<float32> without a Python loop."""
    offsets = pa.array(np.arange(0, rows.size + 1, rows.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(rows.reshape(-1).astype(np.float32)))


def _episode_stats(ep: Episode, row: dict[str, Any], task_index: int, fps: int) -> dict[str, Stats]:
    """Every feature's statistics over one episode (LeRobot keeps them per episode and in ``meta/stats.json``)."""
    n, frame_index = len(ep), np.arange(len(ep))
    return {
        CAMERA: image_stats(ep.frames),
        "observation.state": feature_stats(ep.state),
        "action": feature_stats(ep.action),
        "timestamp": feature_stats(frame_index.astype(np.float32) / np.float32(fps)),
        "frame_index": feature_stats(frame_index),
        "episode_index": feature_stats(np.full(n, row["episode_index"])),
        "index": feature_stats(np.arange(row["dataset_from_index"], row["dataset_to_index"])),
        "task_index": feature_stats(np.full(n, task_index)),
    }


def _features(shape: list[int], video: bool, fps: int, codec: str) -> dict[str, Any]:
    camera: dict[str, Any] = {
        "dtype": "video" if video else "image",
        "shape": shape,
        "names": ["height", "width", "channel"],
    }
    if video:
        camera["info"] = {
            "video.height": shape[0],
            "video.width": shape[1],
            "video.channels": shape[2],
            "video.codec": "h264" if codec == "libx264" else codec,
            "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False,
            "video.fps": fps,
            "has_audio": False,
        }
    scalar = lambda dtype: {"dtype": dtype, "shape": [1], "names": None}  # noqa: E731
    return {
        CAMERA: camera,
        "observation.state": {"dtype": "float32", "shape": [len(STATE_NAMES)], "names": STATE_NAMES},
        "action": {"dtype": "float32", "shape": [len(ACTION_NAMES)], "names": ACTION_NAMES},
        "timestamp": scalar("float32"),
        "frame_index": scalar("int64"),
        "episode_index": scalar("int64"),
        "index": scalar("int64"),
        "task_index": scalar("int64"),
    }


def _check(ep: Episode, shape: tuple[int, ...], where: str) -> None:
    """A broken episode is a caller's bug: say which one and how, before anything is written for it."""
    n = len(ep)
    if n == 0 or ep.state.shape != (n, len(STATE_NAMES)) or ep.action.shape != (n, len(ACTION_NAMES)):
        raise ValueError(
            f"{where}: episode {ep.task!r} needs >= 1 frame, state ({n}, {len(STATE_NAMES)}) and action "
            f"({n}, {len(ACTION_NAMES)}); got {n} frames, state {ep.state.shape}, action {ep.action.shape}"
        )
    if any(f.shape != shape or f.dtype != np.uint8 for f in ep.frames):
        raise ValueError(f"{where}: episode {ep.task!r} has frames that are not uint8 {shape}")


def _episode_rows(
    group: list[Episode], first_episode: int, first_frame: int, chunk: int, file: int, fps: int, video: bool
) -> list[dict[str, Any]]:
    """The ``meta/episodes`` rows of one data file's episodes (frame ranges global, timestamps in-file)."""
    rows, in_file = [], 0
    for i, ep in enumerate(group):
        n, start = len(ep), first_frame + in_file
        row = {
            "episode_index": first_episode + i,
            "tasks": [ep.task],
            "length": n,
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": start,
            "dataset_to_index": start + n,
        }
        if video:
            prefix = f"videos/{CAMERA}/"
            row[prefix + "chunk_index"], row[prefix + "file_index"] = chunk, file
            row[prefix + "from_timestamp"], row[prefix + "to_timestamp"] = in_file / fps, (in_file + n) / fps
        rows.append(row | {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        in_file += n
    return rows


def _data_table(
    group: list[Episode], rows: list[dict[str, Any]], task_index: dict[str, int], fps: int, video: bool
) -> pa.Table:
    """The frames of one data file, one row per frame."""
    data: dict[str, pa.Array] = {}
    if not video:
        images = [{"bytes": _png(f), "path": None} for ep in group for f in ep.frames]
        data[CAMERA] = pa.array(images, IMAGE_TYPE)
    data["observation.state"] = _list_column(np.concatenate([ep.state for ep in group]))
    data["action"] = _list_column(np.concatenate([ep.action for ep in group]))
    frame_index = np.concatenate([np.arange(len(ep)) for ep in group])
    data["timestamp"] = pa.array(frame_index.astype(np.float32) / np.float32(fps), pa.float32())
    per_frame = {
        "frame_index": frame_index,
        "episode_index": np.concatenate([np.full(r["length"], r["episode_index"]) for r in rows]),
        "index": np.arange(rows[0]["dataset_from_index"], rows[-1]["dataset_to_index"]),
        "task_index": np.concatenate([np.full(len(ep), task_index[ep.task]) for ep in group]),
    }
    for key, values in per_frame.items():
        data[key] = pa.array(values.astype(np.int64), pa.int64())
    return pa.table(data)


def write_lerobot_dataset(
    root_uri: str,
    episodes: Iterable[Episode],
    *,
    fps: int = 10,
    video: bool = False,
    episodes_per_file: int = 4,
    robot_type: str = "synthetic_arm",
    storage: StorageConfig | None = None,
) -> dict[str, Any]:
    """Write ``episodes`` as a LeRobot v3.0 dataset at ``root_uri``; return the ``info.json`` contents.

    The camera is stored as PNG images inside the data files (``video=False``) or as one MP4 per data file
    (``video=True``, the episodes of that file back to back). Every frame must have the first frame's shape.
    """
    tasks: dict[str, int] = {}
    meta: list[dict[str, Any]] = []
    episode_stats: list[dict[str, Stats]] = []  # a few KB per episode, like the episodes table itself
    frame_total = 0
    shape: tuple[int, ...] = ()
    codec = video_codec() if video else ""
    it = iter(episodes)
    for number in count():
        group = list(islice(it, episodes_per_file))
        if not group:
            break
        chunk_index, file_index = divmod(number, CHUNKS_SIZE)
        shape = shape or group[0].frames[0].shape
        for ep in group:
            _check(ep, shape, root_uri)
            tasks.setdefault(ep.task, len(tasks))
        rows = _episode_rows(group, len(meta), frame_total, chunk_index, file_index, fps, video)
        for ep, row in zip(group, rows, strict=True):
            episode_stats.append(_episode_stats(ep, row, tasks[ep.task], fps))
            row |= episode_columns(episode_stats[-1])
        where = {"chunk_index": chunk_index, "file_index": file_index}
        table = _data_table(group, rows, tasks, fps, video)
        write_parquet(table, join(root_uri, DATA_PATH.format(**where)), storage)
        if video:
            mp4 = encode_mp4([f for ep in group for f in ep.frames], fps, codec)
            publish_bytes(join(root_uri, VIDEO_PATH.format(video_key=CAMERA, **where)), mp4, storage)
        meta += rows
        frame_total += table.num_rows
    if not meta:
        raise ValueError(f"{root_uri}: no episodes to write")

    episodes_table = pa.Table.from_pylist(meta)  # inferred: int64, float64 and list<string> for tasks
    write_parquet(episodes_table, join(root_uri, "meta/episodes/chunk-000/file-000.parquet"), storage)
    import pandas as pd

    task_df = pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task"))
    buf = io.BytesIO()
    task_df.to_parquet(buf)  # the way LeRobot writes it: the task string is the (named) index
    publish_bytes(join(root_uri, "meta/tasks.parquet"), buf.getvalue(), storage)
    stats = stats_json(episode_stats)
    publish_bytes(join(root_uri, "meta/stats.json"), json.dumps(stats, indent=2).encode(), storage)
    info = {
        "codebase_version": "v3.0",
        "robot_type": robot_type,
        "fps": fps,
        "total_episodes": len(meta),
        "total_frames": frame_total,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "splits": {"train": f"0:{len(meta)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if video else None,
        "features": _features(list(shape), video, fps, codec),
    }
    publish_bytes(join(root_uri, "meta/info.json"), json.dumps(info, indent=4).encode(), storage)
    return info
