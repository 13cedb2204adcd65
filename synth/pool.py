"""Pool sources of the synthetic corpus and the writer of one pool shard.

Each source is a mixture of scene kinds, stored the way such pools are stored in the wild: img2dataset-style
WebDataset tars or Parquet with encoded image bytes. A shard is a pure function of (seed, source, shard
index), so shards can be rendered in any order, by any number of processes, with byte-identical results.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from core.contracts import make_sample_id
from core.settings import SourceSpec, StorageConfig
from core.storage import join, publish_bytes, write_parquet
from synth.junk import PLANTED, Sample, encode, plant
from synth.robot import ROBOT_TASKS, Wording, word_instruction
from synth.scenes import ALIGNMENT, draw_scene, stable_rng
from synth.tabletop import COLORS

GROUND_TRUTH = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("scene", pa.string(), nullable=False),
        pa.field("aligned", pa.bool_(), nullable=False),  # scene == "tabletop"
        pa.field("alignment", pa.float32(), nullable=False),  # 1.0 tabletop ... 0.0 chart/document
    ]
)


@dataclass(frozen=True)
class PoolSource:
    """How one pool source is stored and what it contains."""

    name: str
    format: Literal["webdataset", "parquet"]
    image_format: Literal["JPEG", "PNG"]
    qa: bool  # question/answer texts (VQA-style) rather than captions
    mixture: tuple[tuple[str, float], ...]  # (scene kind, probability)
    json_meta: bool = False  # img2dataset writes a KEY.json beside each image
    # Where the text comes from: the scene's own caption/QA, uninformative web alt-text, or a robot-style
    # instruction (in the robot data's wording) unrelated to the image.
    texts: Literal["scene", "alt", "instruction"] = "scene"

    @property
    def suffix(self) -> str:
        return ".tar" if self.format == "webdataset" else ".parquet"

    @property
    def extension(self) -> str:
        return "jpg" if self.image_format == "JPEG" else "png"


POOL_SOURCES: tuple[PoolSource, ...] = (
    PoolSource(
        "photos", "webdataset", "JPEG", False, (("photo", 0.8), ("indoor", 0.12), ("tabletop", 0.08)), True
    ),
    PoolSource("tabletop", "webdataset", "PNG", True, (("tabletop", 0.7), ("indoor", 0.2), ("photo", 0.1))),
    PoolSource("docs", "parquet", "JPEG", True, (("document", 0.95), ("tabletop", 0.05))),
    PoolSource("charts", "parquet", "PNG", True, (("chart", 0.95), ("indoor", 0.05))),
)
# Sources whose texts disagree with their images, to expose a text shortcut (``SynthConfig.mismatched_sources``):
# robot-like pictures under texts that say nothing of them, and far pictures under robot-like instructions.
MISMATCHED_SOURCES: tuple[PoolSource, ...] = (
    PoolSource("scrapes", "webdataset", "JPEG", False, (("tabletop", 0.7), ("photo", 0.3)), texts="alt"),
    PoolSource("howto", "parquet", "PNG", False, (("document", 0.6), ("chart", 0.2), ("photo", 0.2)),
               texts="instruction"),
)
# The toy world's web source: spatial QA over rendered tables that are not robot frames (``SynthConfig.toyworld``).
TOYWORLD_SOURCES: tuple[PoolSource, ...] = (
    PoolSource("spatial", "webdataset", "PNG", True, (("spatial", 0.9), ("indoor", 0.1))),
)
SOURCES_BY_NAME = {s.name: s for s in POOL_SOURCES + MISMATCHED_SOURCES + TOYWORLD_SOURCES}
_ALT = ("IMG_{n:04d}.JPG", "product photo {n}", "click to enlarge ({n} views)", "free shipping on orders over ${n}",
        "DSC{n:05d}", "thumbnail {n} of 12", "sale: {n}% off today only", "image courtesy of user{n}")


def source_text(source: PoolSource, scene_text: str, rng: np.random.Generator, wording: Wording) -> str:
    """The text stored with a sample: the scene's own, or the source's mismatched kind (drawn from ``rng``)."""
    if source.texts == "scene":
        return scene_text
    if source.texts == "alt":
        return _ALT[int(rng.integers(len(_ALT)))].format(n=int(rng.integers(1, 10_000)))
    task = ROBOT_TASKS[int(rng.integers(len(ROBOT_TASKS)))]
    color, place = (str(c) for c in rng.permutation(list(COLORS))[:2])
    return word_instruction(task, color, "bowl" if task == "pick_place" else place, wording)


def shard_sizes(samples: int, shard_size: int) -> list[int]:
    """Samples per shard: full shards and a smaller last one."""
    full, rest = divmod(samples, shard_size)
    return [shard_size] * full + ([rest] if rest else [])


def shard_name(source: PoolSource, shard: int) -> str:
    """The shard's file name relative to the source root (also the shard part of its sample ids)."""
    return f"{shard:05d}{source.suffix}"


def source_uri(root_uri: str, source: PoolSource) -> str:
    return join(root_uri, "pool", source.name)


def source_spec(root_uri: str, source: PoolSource) -> SourceSpec:
    """How the product should read this source."""
    return SourceSpec(name=source.name, format=source.format, uri=source_uri(root_uri, source))


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    """A tar with fixed metadata (mtime 0, root owner), so equal members give equal bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_pool_shard(
    root_uri: str,
    source_name: str,
    shard: int,
    samples: int,
    *,
    seed: int,
    image_size: int,
    wording: Wording = "instruction",
    junk_rate: float = 0.0,
    storage: StorageConfig | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Render and publish one shard of ``source_name``; return its ground-truth rows (``GROUND_TRUTH``) and its
    planted samples (``PLANTED``, see ``synth.junk``). ``wording`` is the robot data's, for a source whose texts
    are robot-style instructions."""
    source = SOURCES_BY_NAME[source_name]
    rng = stable_rng(seed, source.name, shard)
    kinds, probs = zip(*source.mixture, strict=True)
    rows = []
    for kind in (str(k) for k in rng.choice(kinds, size=samples, p=probs)):
        image, text = draw_scene(kind, rng, image_size, qa=source.qa)
        rows.append(Sample(encode(image, source.image_format), source_text(source, text, rng, wording), kind))
    planted = plant(rows, source=source.name, shard=shard, seed=seed, size=image_size, rate=junk_rate)
    name = shard_name(source, shard)
    keys, members = [], []
    for i, row in enumerate(rows):
        key = f"{shard:05d}{i:04d}" if source.format == "webdataset" else str(i)
        if source.format == "webdataset":
            members += [(f"{key}.{source.extension}", row.image), (f"{key}.txt", row.text.encode())]
            if source.json_meta:
                meta = {"key": key, "caption": row.text, "scene": row.scene}
                members.append((f"{key}.json", json.dumps(meta, sort_keys=True).encode()))
        keys.append(key)
    uri = join(source_uri(root_uri, source), name)
    if source.format == "webdataset":
        publish_bytes(uri, _tar(members), storage)
    else:
        table = pa.table({"image": pa.array([r.image for r in rows], pa.binary()),
                          "text": pa.array([r.text for r in rows], pa.string())})
        write_parquet(table, uri, storage)
    ids = [make_sample_id(source.name, name, k) for k in keys]
    truth = pa.table(
        {
            "sample_id": ids,
            "source": [source.name] * samples,
            "scene": [r.scene for r in rows],
            "aligned": [r.scene == "tabletop" for r in rows],
            "alignment": pa.array([ALIGNMENT.get(r.scene, 0.0) for r in rows], pa.float32()),
        },
        schema=GROUND_TRUTH,
    )
    plants = pa.table({"sample_id": [ids[i] for i, _, _ in planted], "case": [c for _, c, _ in planted],
                       "copy_of": [o for _, _, o in planted]}, schema=PLANTED)
    return truth, plants
