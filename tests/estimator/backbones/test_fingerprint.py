"""The fingerprint a driver computes from a backbone's files, without loading it, is the one the workers get."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from estimator.backbones import BackboneSpec, load_backbone
from estimator.backbones.fingerprint import describe
from estimator.backbones.tiny import save_tiny_backbone

KINDS = ["open_clip", "hf_clip", "hf_vlm"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BackboneSpec]:
    root = tmp_path_factory.mktemp("tiny")
    return {k: save_tiny_backbone(k, str(root / k), seed=0) for k in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_cpu_driver_planning_for_gpu_actors_names_what_the_actors_load(
    tiny: dict, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the driver has no GPU
    for_gpu, for_cpu = describe(tiny[kind], gpu=True), describe(tiny[kind], gpu=False)
    assert for_gpu.parts["dtype"] == "bfloat16" and for_cpu.parts["dtype"] == "float32"
    assert for_gpu.fingerprint != for_cpu.fingerprint
    # A GPU actor loads the spec placed for a GPU (cuda, bf16); device is not part of the fingerprint, so the
    # same model in bf16 on this CPU stands in for it.
    gpu_actor = load_backbone(tiny[kind].placed(gpu=True).model_copy(update={"device": "cpu"}))
    cpu_actor = load_backbone(tiny[kind].placed(gpu=False))
    assert gpu_actor.fingerprint == for_gpu.fingerprint
    assert cpu_actor.fingerprint == for_cpu.fingerprint
    assert cpu_actor.embed_dim == for_cpu.embed_dim == for_gpu.embed_dim


def test_a_gpu_driver_planning_for_cpu_actors_does_not_use_its_gpu(tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert describe(tiny["hf_clip"], gpu=False).parts["dtype"] == "float32"


@pytest.mark.parametrize("kind", KINDS)
def test_same_weights_anywhere_same_fingerprint(s3, tiny: dict, kind: str, tmp_path: Path) -> None:
    bucket = s3.make_bucket(f"fp-{kind.replace('_', '-')}")
    remote = save_tiny_backbone(kind, f"{bucket}/{kind}", s3.storage, seed=0)
    elsewhere = save_tiny_backbone(kind, str(tmp_path / "moved"), seed=0)
    other = save_tiny_backbone(kind, str(tmp_path / "seed1"), seed=1)
    here = describe(tiny[kind]).fingerprint
    assert describe(remote, s3.storage).fingerprint == here == describe(elsewhere).fingerprint
    assert describe(other).fingerprint != here
    assert describe(tiny[kind].model_copy(update={"modality": "image"})).fingerprint != here


def test_pooling_is_part_of_the_vlm_fingerprint(tiny: dict) -> None:
    assert describe(tiny["hf_vlm"]).fingerprint != describe(tiny["hf_vlm"].model_copy(update={"pooling": "last"}))


_PEAK = """
import json, resource, sys
from estimator.backbones import BackboneSpec
from estimator.backbones.fingerprint import describe
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
info = describe(BackboneSpec(kind="open_clip", model=sys.argv[1]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (after - before) / 1024, "peak_mb": after / 1024, "fp": info.fingerprint}))
"""


def test_a_1gb_checkpoint_is_fingerprinted_in_little_memory(tiny: dict, tmp_path: Path) -> None:
    """A ~1 GB safetensors checkpoint (the tiny model plus one huge extra tensor) is hashed, not loaded."""
    model = tmp_path / "big"
    model.mkdir()
    (model / "open_clip_config.json").write_text(Path(tiny["open_clip"].model, "open_clip_config.json").read_text())
    small = Path(tiny["open_clip"].model, "open_clip_model.safetensors").read_bytes()
    header_len = int.from_bytes(small[:8], "little")
    header = json.loads(small[8 : 8 + header_len])
    data_end = max(t["data_offsets"][1] for k, t in header.items() if k != "__metadata__")
    big = 1 << 30
    header["padding"] = {"dtype": "U8", "shape": [big], "data_offsets": [data_end, data_end + big]}
    raw = json.dumps(header).encode()
    with open(model / "open_clip_model.safetensors", "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + small[8 + header_len : 8 + header_len + data_end])
        f.truncate(8 + len(raw) + data_end + big)  # sparse: ~1 GB of zero bytes without writing them
    out = subprocess.run([sys.executable, "-c", _PEAK, str(model)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(result)
    assert result["growth_mb"] < 100, result  # well under the checkpoint's 1,024 MB
    assert result["fp"] != describe(tiny["open_clip"]).fingerprint


def test_a_weights_file_is_hashed_once_per_version(tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   s3) -> None:
    """The driver and every worker fingerprint the same checkpoint: a file's digest is remembered per version
    (URI, size, ETag or mtime, inode), and a new version is hashed again."""
    import os

    import fsspec

    from core.storage import filesystem
    from estimator.backbones import digest

    monkeypatch.setattr(digest, "default_cache_dir", lambda: tmp_path / "models")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(Path(tiny["open_clip"].model, "open_clip_model.safetensors").read_bytes())
    local = fsspec.filesystem("file")
    first = digest.weights_digest(local, str(weights))
    assert first == digest._weights_digest(local, str(weights))

    opened = []
    real_open = local.open
    monkeypatch.setattr(local, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    assert digest.weights_digest(local, str(weights)) == first and opened == []  # remembered: not read again

    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the same size, other bytes, written in place (same inode) ...
    weights.write_bytes(bytes(data))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # ... at a later time
    second = digest.weights_digest(local, str(weights))
    assert opened and second != first and second == digest._weights_digest(local, str(weights))

    # on S3 the version is the object's ETag: an upload of other bytes under the same key is hashed again
    bucket = s3.make_bucket("digest")
    fs, _ = filesystem(bucket, s3.storage)
    remote = bucket.removeprefix("s3://") + "/w.safetensors"
    fs.pipe_file(remote, bytes(data))
    assert digest.weights_digest(fs, remote) == second
    data[-1] ^= 0xFF
    fs.pipe_file(remote, bytes(data))
    fs.invalidate_cache()
    assert digest.weights_digest(fs, remote) == first
