"""A small LeRobot v3.0 dataset writer: episodes in, the v3 file layout out (through ``tasks.storage``).

It writes what LeRobot itself writes — ``meta/info.json``, ``meta/tasks.parquet``, ``meta/stats.json``,
``meta/episodes/chunk-000/file-000.parquet``, ``data/chunk-CCC/file-FFF.parquet`` and, for a video camera,
``videos/{camera}/chunk-CCC/file-FFF.mp4`` — so the product's robot reader can be tested on the real layout.
Episodes are consumed as a stream, ``episodes_per_file`` at a time, so a dataset never has to fit in memory.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from typing import Any

import av
import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from tasks.config import StorageConfig
from tasks.storage import join, publish_bytes, write_parquet

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
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except av.codec.codec.UnknownCodecError:
        return "mpeg4"


def encode_mp4(frames: list[np.ndarray], fps: int, codec: str) -> bytes:
    """Encode RGB frames as one yuv420p MP4 (single-threaded, so the bytes are reproducible)."""
    height, width = frames[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.codec_context.options = {"crf": "18"}
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
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _list_column(rows: np.ndarray) -> pa.Array:
    """A (N, D) float32 array as list<float32> without a Python loop."""
    offsets = pa.array(np.arange(0, rows.size + 1, rows.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(rows.reshape(-1).astype(np.float32)))


def _stats(values: np.ndarray) -> dict[str, list[float]]:
    return {
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "count": [int(len(values))],
        "q01": np.quantile(values, 0.01, axis=0).tolist(),
        "q99": np.quantile(values, 0.99, axis=0).tolist(),
    }


def _features(shape: list[int], video: bool, fps: int, codec: str) -> dict[str, Any]:
    camera: dict[str, Any] = {"dtype": "video" if video else "image", "shape": shape,
                              "names": ["height", "width", "channel"]}
    if video:
        camera["info"] = {
            "video.height": shape[0], "video.width": shape[1], "video.channels": shape[2],
            "video.codec": "h264" if codec == "libx264" else codec, "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False, "video.fps": fps, "has_audio": False,
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
    (``video=True``, the episodes of that file back to back).
    """
    tasks: dict[str, int] = {}
    meta: dict[str, list] = {}
    states, actions = [], []
    frame_total = episode_total = file_total = 0
    shape: list[int] = []
    codec = video_codec() if video else ""
    it = iter(episodes)
    while group := list(islice(it, episodes_per_file)):
        chunk_index, file_index = divmod(file_total, CHUNKS_SIZE)
        shape = shape or list(group[0].frames[0].shape)
        columns: dict[str, list] = {k: [] for k in ("frame_index", "episode_index", "index", "task_index")}
        timestamps, file_frames = [], 0
        for ep in group:
            n = len(ep)
            task_index = tasks.setdefault(ep.task, len(tasks))
            row = {
                "episode_index": episode_total, "tasks": [ep.task], "length": n,
                "data/chunk_index": chunk_index, "data/file_index": file_index,
                "dataset_from_index": frame_total, "dataset_to_index": frame_total + n,
            }
            if video:
                prefix = f"videos/{CAMERA}/"
                row |= {prefix + "chunk_index": chunk_index, prefix + "file_index": file_index,
                        prefix + "from_timestamp": file_frames / fps, prefix + "to_timestamp": (file_frames + n) / fps}
            row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
            for key, value in row.items():
                meta.setdefault(key, []).append(value)
            columns["frame_index"].append(np.arange(n))
            columns["episode_index"].append(np.full(n, episode_total))
            columns["index"].append(np.arange(frame_total, frame_total + n))
            columns["task_index"].append(np.full(n, task_index))
            timestamps.append(np.arange(n, dtype=np.float32) / np.float32(fps))
            states.append(ep.state.astype(np.float32))
            actions.append(ep.action.astype(np.float32))
            frame_total, episode_total, file_frames = frame_total + n, episode_total + 1, file_frames + n
        data: dict[str, pa.Array] = {}
        if not video:
            pngs = [{"bytes": _png(f), "path": None} for ep in group for f in ep.frames]
            data[CAMERA] = pa.array(pngs, type=IMAGE_TYPE)
        data["observation.state"] = _list_column(np.concatenate([ep.state for ep in group]))
        data["action"] = _list_column(np.concatenate([ep.action for ep in group]))
        data["timestamp"] = pa.array(np.concatenate(timestamps), type=pa.float32())
        for key, parts in columns.items():
            data[key] = pa.array(np.concatenate(parts).astype(np.int64), type=pa.int64())
        where = dict(chunk_index=chunk_index, file_index=file_index)
        write_parquet(pa.table(data), join(root_uri, DATA_PATH.format(**where)), storage)
        if video:
            mp4 = encode_mp4([f for ep in group for f in ep.frames], fps, codec)
            publish_bytes(join(root_uri, VIDEO_PATH.format(video_key=CAMERA, **where)), mp4, storage)
        file_total += 1
    if not episode_total:
        raise ValueError(f"{root_uri}: no episodes to write")

    episodes_table = pa.table({k: pa.array(v, type=pa.list_(pa.string()) if k == "tasks" else None)
                               for k, v in meta.items()})
    write_parquet(episodes_table, join(root_uri, "meta/episodes/chunk-000/file-000.parquet"), storage)
    task_df = pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task"))
    buf = io.BytesIO()
    task_df.to_parquet(buf)  # the way LeRobot writes it: the task string is the (named) index
    publish_bytes(join(root_uri, "meta/tasks.parquet"), buf.getvalue(), storage)
    stats = {"observation.state": _stats(np.concatenate(states)), "action": _stats(np.concatenate(actions))}
    publish_bytes(join(root_uri, "meta/stats.json"), json.dumps(stats, indent=2).encode(), storage)
    info = {
        "codebase_version": "v3.0",
        "robot_type": robot_type,
        "fps": fps,
        "total_episodes": episode_total,
        "total_frames": frame_total,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "splits": {"train": f"0:{episode_total}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if video else None,
        "features": _features(shape, video, fps, codec),
    }
    publish_bytes(join(root_uri, "meta/info.json"), json.dumps(info, indent=4).encode(), storage)
    return info
