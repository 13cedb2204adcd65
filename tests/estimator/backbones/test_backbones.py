"""Backbones load tiny random models through the real loading code (local dirs, S3 prefixes, open_clip names)."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.storage import filesystem
from estimator.backbones import BackboneSpec, load_backbone, validate_backbone_spec
from estimator.backbones.fingerprint import describe
from estimator.backbones.tensors import resolved_dtype
from estimator.backbones.tiny import save_tiny_backbone
from tasks.embed import prepare_rows

KINDS = ["open_clip", "hf_clip", "hf_vlm"]
TEXTS = ["pick up the red cube", "a photo of a cat on a sofa", "open the top drawer"]


def images(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40 + 4 * i, 48, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BackboneSpec]:
    root = tmp_path_factory.mktemp("tiny")
    return {k: save_tiny_backbone(k, str(root / k), seed=0).model_copy(update={"device": "cpu"}) for k in KINDS}


def cpu(spec: BackboneSpec, **update: object) -> BackboneSpec:
    return spec.model_copy(update={"device": "cpu", **update})


@pytest.mark.parametrize("kind", KINDS)
def test_embeds_one_distinct_finite_row_per_sample_deterministically(tiny: dict, kind: str) -> None:
    backbone = load_backbone(tiny[kind])
    vectors = backbone.embed(images(), TEXTS)
    assert vectors.shape == (3, backbone.embed_dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    assert len({row.tobytes() for row in vectors}) == 3
    np.testing.assert_array_equal(vectors, backbone.embed(images(), TEXTS))
    # a row depends on its own sample only, not on the rest of the batch
    np.testing.assert_allclose(backbone.embed(images()[:1], TEXTS[:1])[0], vectors[0], rtol=1e-4, atol=1e-5)
    assert backbone.embed([], []).shape == (0, backbone.embed_dim)
    assert load_backbone(tiny[kind]).fingerprint == backbone.fingerprint


@pytest.mark.parametrize("kind", KINDS)
def test_the_preprocessor_travels_alone_and_its_arrays_give_the_same_vectors(tiny: dict, kind: str) -> None:
    backbone = load_backbone(tiny[kind])
    preprocessor = pickle.loads(pickle.dumps(backbone.preprocessor))  # what a CPU task on another node gets
    batch = preprocessor(images(), TEXTS)
    assert batch and all(isinstance(v, np.ndarray) and len(v) == 3 for v in batch.values())
    for array in batch.values():
        array.flags.writeable = False  # as Ray's object store hands them over
    np.testing.assert_array_equal(backbone.forward(batch), backbone.embed(images(), TEXTS))


def test_open_clip_ships_uint8_pixels_and_matches_its_own_whole_transform(tiny: dict) -> None:
    backbone = load_backbone(cpu(tiny["open_clip"], modality="image"))
    batch = backbone.preprocessor(images(), [])
    assert list(batch) == ["pixels_u8"]
    assert batch["pixels_u8"].dtype == np.uint8 and batch["pixels_u8"].shape == (3, 32, 32, 3)
    with torch.inference_mode():  # open_clip's own path: resize, crop, ToTensor and Normalize on the CPU
        whole = torch.stack([backbone.preprocess(im) for im in images()])
        expected = F.normalize(backbone.model.encode_image(whole), dim=-1).numpy()
    np.testing.assert_array_equal(backbone.forward(batch), expected)


def test_reduced_decoding_is_its_own_fingerprint_and_close_to_full(tiny: dict) -> None:
    reduced = cpu(tiny["open_clip"], decode="reduced")
    assert describe(reduced).fingerprint != describe(tiny["open_clip"]).fingerprint
    assert load_backbone(reduced).preprocessor.draft_size == 32  # the tiny model's input side
    buf = io.BytesIO()
    images()[0].resize((512, 512)).save(buf, format="JPEG", quality=95)
    batch = pa.table({"image": [buf.getvalue()], "text": ["t"], "error": pa.nulls(1, pa.string())})
    a, b = (load_backbone(s) for s in (tiny["open_clip"], reduced))
    a, b = (m.forward(prepare_rows(m.preprocessor, batch, 1).chunks[0]) for m in (a, b))
    assert not np.array_equal(a, b)  # the 512-px JPEG was decoded at 1/8 scale, then resized
    cosine = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
    assert cosine > 0.95


@pytest.mark.parametrize("kind", ["open_clip", "hf_clip"])
def test_clip_modalities_set_embed_dim_and_match_the_concatenated_towers(tiny: dict, kind: str) -> None:
    both = load_backbone(tiny[kind])
    image = load_backbone(cpu(tiny[kind], modality="image"))
    text = load_backbone(cpu(tiny[kind], modality="text"))
    assert both.embed_dim == image.embed_dim + text.embed_dim and image.embed_dim == text.embed_dim
    joint = both.embed(images(), TEXTS)
    np.testing.assert_allclose(joint[:, : image.embed_dim], image.embed(images(), TEXTS), atol=1e-5)
    np.testing.assert_allclose(joint[:, image.embed_dim:], text.embed([], TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(joint, axis=1), np.sqrt(2), rtol=1e-5)
    assert len({both.fingerprint, image.fingerprint, text.fingerprint}) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_fingerprint_changes_with_weights(tiny: dict, kind: str, tmp_path: Path) -> None:
    other = load_backbone(cpu(save_tiny_backbone(kind, str(tmp_path / "seed1"), seed=1)))
    same = load_backbone(cpu(save_tiny_backbone(kind, str(tmp_path / "seed0"), seed=0)))
    assert same.fingerprint == load_backbone(tiny[kind]).fingerprint
    assert other.fingerprint != same.fingerprint
    assert not np.allclose(other.embed(images(), TEXTS), same.embed(images(), TEXTS))


def test_vlm_pooling_changes_vectors_and_fingerprint(tiny: dict) -> None:
    mean = load_backbone(tiny["hf_vlm"])
    last = load_backbone(cpu(tiny["hf_vlm"], pooling="last"))
    assert mean.fingerprint != last.fingerprint
    assert not np.allclose(mean.embed(images(), TEXTS), last.embed(images(), TEXTS))


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_on_cpu_has_its_own_fingerprint_and_close_vectors(tiny: dict, kind: str) -> None:
    """bfloat16 on CPU workers (much faster where the CPU has AVX512-BF16 or AMX) embeds what float32 does, to
    bfloat16's precision, under another fingerprint."""
    fp32 = load_backbone(tiny[kind])
    bf16 = load_backbone(cpu(tiny[kind], dtype="bfloat16"))
    assert bf16.fingerprint != fp32.fingerprint
    a, b = fp32.embed(images(), TEXTS), bf16.embed(images(), TEXTS)
    assert b.dtype == np.float32 and b.shape == a.shape
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99, cosine
    assert not np.array_equal(a, b)  # it did run in bfloat16


@pytest.mark.parametrize("kind", KINDS)
def test_s3_round_trip_gives_the_same_fingerprint_and_vectors(s3, tiny: dict, kind: str, tmp_path: Path) -> None:
    bucket = s3.make_bucket("backbones")
    spec = cpu(save_tiny_backbone(kind, f"{bucket}/{kind}", s3.storage, seed=0))
    validate_backbone_spec(spec, s3.storage)
    remote = load_backbone(spec, s3.storage, cache_dir=tmp_path)
    local = load_backbone(tiny[kind])
    assert remote.fingerprint == local.fingerprint
    np.testing.assert_array_equal(remote.embed(images(), TEXTS), local.embed(images(), TEXTS))
    assert load_backbone(spec, s3.storage, cache_dir=tmp_path).fingerprint == local.fingerprint  # from the cache


def test_open_clip_architecture_name_with_weights_from_a_file_or_s3(s3, tiny: dict, tmp_path: Path) -> None:
    import open_clip

    model_dir = Path(tiny["open_clip"].model)
    arch_dir = tmp_path / "configs"
    arch_dir.mkdir()
    model_cfg = json.loads((model_dir / "open_clip_config.json").read_text())["model_cfg"]
    (arch_dir / "EmtTiny-test.json").write_text(json.dumps(model_cfg))
    open_clip.add_model_config(arch_dir)
    weights = str(model_dir / "open_clip_model.safetensors")
    bucket = s3.make_bucket("weights")
    fs, _ = filesystem(bucket, s3.storage)
    fs.put_file(weights, "weights/tiny/open_clip_model.safetensors")

    by_dir = load_backbone(tiny["open_clip"])
    for pretrained in (weights, f"{bucket}/tiny/open_clip_model.safetensors"):
        spec = BackboneSpec(kind="open_clip", model="EmtTiny-test", pretrained=pretrained, device="cpu")
        by_name = load_backbone(spec, s3.storage, cache_dir=tmp_path / "cache")
        by_dir_files = describe(tiny["open_clip"]).parts["files"]
        assert describe(spec, s3.storage).parts["weights"] == by_dir_files["open_clip_model.safetensors"]
        half = by_dir.embed_dim // 2  # the text tower agrees; the image tower does not, since a bare name
        # gets open_clip's default normalisation instead of the directory's 0.5/0.5, and the fingerprint says so
        np.testing.assert_allclose(by_name.embed(images(), TEXTS)[:, half:], by_dir.embed(images(), TEXTS)[:, half:],
                                   atol=1e-6)
        assert by_name.fingerprint != by_dir.fingerprint


def test_open_clip_skips_its_random_init_only_where_a_checkpoint_overwrites_it(
        tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import open_clip
    from safetensors.torch import load_file

    inits = []
    normal = torch.nn.init.normal_
    monkeypatch.setattr(torch.nn.init, "normal_", lambda t, *a, **k: inits.append(t.shape) or normal(t, *a, **k))
    model_dir = Path(tiny["open_clip"].model)
    loaded = load_backbone(cpu(tiny["open_clip"])).model
    assert inits == []  # the directory holds weights: nothing was initialised only to be overwritten
    saved = load_file(str(model_dir / "open_clip_model.safetensors"))
    state = loaded.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(state[k], v) for k, v in saved.items())
    built = open_clip.create_model(f"local-dir:{model_dir}")  # open_clip's own path, init included
    assert inits  # the counter sees open_clip's init where it runs
    assert all(torch.equal(a, b) for a, b in zip(loaded.buffers(), built.buffers(), strict=True))  # e.g. attn_mask

    # a bare architecture without weights is its seeded initialisation: the same model on every worker
    arch_dir = tmp_path / "configs"
    arch_dir.mkdir()
    model_cfg = json.loads((model_dir / "open_clip_config.json").read_text())["model_cfg"]
    (arch_dir / "EmtTiny-random.json").write_text(json.dumps(model_cfg))
    open_clip.add_model_config(arch_dir)
    inits.clear()
    a, b = (load_backbone(BackboneSpec(kind="open_clip", model="EmtTiny-random", device="cpu")).model for _ in "ab")
    assert inits and all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                           strict=True))
    # the tiny model was saved from the same seeded init, so a fully initialised random build equals it
    assert all(torch.equal(a.state_dict()[k], v) for k, v in saved.items())


def test_skipping_the_init_while_a_model_is_built_leaves_other_threads_initialising() -> None:
    import threading

    from estimator.backbones.open_clip import _init_skipped

    def linear() -> torch.nn.Linear:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return torch.nn.Linear(64, 64)

    reference, inside, release, built = linear().weight, threading.Event(), threading.Event(), {}

    def skipping() -> None:
        with _init_skipped(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # so only the skip can make it differ from the reference
            inside.set()
            release.wait(10)
            built["skipped"] = torch.nn.Linear(64, 64).weight

    thread = threading.Thread(target=skipping)
    thread.start()
    inside.wait(10)
    built["other"] = linear().weight  # in this thread, while the other one skips
    release.set()
    thread.join()
    assert torch.equal(built["other"], reference)
    assert not torch.equal(built["skipped"], reference)  # torch.empty's memory, not the seeded init
    assert torch.equal(linear().weight, reference)  # and everything is restored after


def test_validate_rejects_unknown_open_clip_architectures_before_loading() -> None:
    validate_backbone_spec(BackboneSpec(kind="open_clip", model="ViT-B-32"))
    validate_backbone_spec(BackboneSpec(kind="open_clip", model="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    with pytest.raises(ValueError, match=r"'ViT-B-33'.*list_models\(\)"):
        load_backbone(BackboneSpec(kind="open_clip", model="ViT-B-33"))
    with pytest.raises(ValueError, match="no weights tag 'nonsense'"):
        validate_backbone_spec(BackboneSpec(kind="open_clip", model="ViT-B-32", pretrained="nonsense"))


@pytest.mark.parametrize("kind", KINDS)
def test_validate_rejects_missing_or_incomplete_directories(kind: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match="no-such-model.*no such directory"):
        validate_backbone_spec(BackboneSpec(kind=kind, model=missing))
    with pytest.raises(ValueError, match="the directory has no"):
        validate_backbone_spec(BackboneSpec(kind=kind, model=str(tmp_path)))


def test_validate_hf_specs(tiny: dict, s3) -> None:
    validate_backbone_spec(BackboneSpec(kind="hf_clip", model="openai/clip-vit-base-patch32"))  # a hub id
    validate_backbone_spec(tiny["hf_vlm"])
    with pytest.raises(ValueError, match="neither a hub id"):
        validate_backbone_spec(BackboneSpec(kind="hf_vlm", model="not a model id!"))
    with pytest.raises(ValueError, match="pretrained applies to open_clip only"):
        validate_backbone_spec(tiny["hf_clip"].model_copy(update={"pretrained": "x.safetensors"}))
    with pytest.raises(ValueError, match="s3://backbones-missing/x"):
        validate_backbone_spec(BackboneSpec(kind="hf_clip", model="s3://backbones-missing/x"), s3.storage)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_bfloat16_agrees_with_cpu_float32(tiny: dict, kind: str) -> None:
    import torch

    assert torch.cuda.is_available(), "gpu test selected on a machine without CUDA"
    on_cpu = load_backbone(tiny[kind]).embed(images(), TEXTS)
    gpu = load_backbone(tiny[kind].model_copy(update={"device": "auto", "dtype": "auto"}))
    assert resolved_dtype(gpu.spec) == torch.bfloat16
    on_gpu = gpu.embed(images(), TEXTS)
    cosine = (on_cpu * on_gpu).sum(1) / np.linalg.norm(on_cpu, axis=1) / np.linalg.norm(on_gpu, axis=1)
    assert on_gpu.dtype == np.float32 and (cosine > 0.98).all()
