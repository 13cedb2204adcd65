"""The Embed stage on small inline tables with a recording stand-in model (no Ray)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
from PIL import Image

from estimator.backbones.backbone import BackboneSpec
from tasks.embed import Embed, prepare_rows


class CountingPreprocessor:
    """Passes the sample count through; decodes in full."""

    draft_size = None

    def __call__(self, images, texts):
        return {"n": np.zeros(len(images))}


class CountingBackbone:
    """Returns the forward call number in every component (ones, then twos...), so each row's output is
    traceable. Its preprocessor passes the sample count through."""

    embed_dim = 4

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.preprocessor = CountingPreprocessor()

    def forward(self, batch):
        self.calls.append(len(batch["n"]))
        return np.full((len(batch["n"]), self.embed_dim), len(self.calls), np.float32)


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(buf, format="PNG")
    return buf.getvalue()


def batch(images: list[bytes], errors: list[str | None]) -> pa.Table:
    n = len(images)
    return pa.table(
        {
            "sample_id": [f"s/0.tar/{i}" for i in range(n)],
            "source": ["s"] * n,
            "shard_uri": ["/0.tar"] * n,
            "key": [str(i) for i in range(n)],
            "image": pa.array(images, pa.binary()),
            "text": ["t"] * n,
            "error": pa.array(errors, pa.string()),
            "detail": pa.nulls(n, pa.string()),
            "stage": pa.array([None if e is None else "read" for e in errors], pa.string()),
        }
    )


def embed(model: CountingBackbone, rows: pa.Table, batch_size: int = 2) -> pa.Table:
    """Both halves of the stage in this process: prepare the rows, then the forward passes."""
    stage = Embed(backbone=BackboneSpec(kind="open_clip", model="ViT-B-32"), model=model, batch_size=batch_size)
    return stage.finish(rows, prepare_rows(model.preprocessor, rows, batch_size))


def test_every_row_gets_its_own_vector_and_bad_rows_are_marked():
    model = CountingBackbone()
    out = embed(model, batch([png(), b"junk", png(), png(), b""], [None, None, None, None, "missing_image"]))
    assert model.calls == [2, 1]  # micro-batches of 2 over the 3 decodable images
    assert out["error"].to_pylist() == [None, "undecodable_image", None, None, "missing_image"]
    assert out["stage"].to_pylist() == [None, "embed", None, None, "read"]
    vectors = out["embedding"].to_pylist()
    assert [v[0] if v else None for v in vectors] == [1.0, None, 1.0, 2.0, None]
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), 4)


def test_each_row_carries_its_image_bytes_hash_and_not_the_bytes():
    red = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(red, format="PNG")
    out = embed(CountingBackbone(), batch([png(), red.getvalue(), png(), b"junk"], [None] * 4))
    hashes = out["content_hash"].to_pylist()
    assert hashes[0] == hashes[2] != hashes[1]  # equal bytes, equal hash (a sample's copy in another shard)
    assert hashes[0] == int.from_bytes(hashlib.sha256(png()).digest()[:8], "big", signed=True)
    assert hashes[3] is not None  # an undecodable image is quarantined, but its bytes hash as well
    assert "image" not in out.column_names


def test_batch_without_usable_rows_keeps_the_vector_type():
    out = embed(CountingBackbone(), batch([b"", b""], ["missing_text", "__end_of_shard__"]))
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), 4)
    assert out["embedding"].null_count == 2


def jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    gradient = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None].repeat(height, 0).repeat(3, 2)
    Image.fromarray(gradient).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_reduced_decoding_shrinks_large_jpegs_to_no_less_than_the_model_input():
    from tasks.embed import decode_image

    assert decode_image(jpeg(512, 384)).size == (512, 384)
    assert decode_image(jpeg(512, 384), draft_size=32).size == (64, 48)  # 1/8: both sides still >= 32
    assert decode_image(jpeg(512, 384), draft_size=224).size == (512, 384)  # 1/2 would cut 384 below 224
    assert decode_image(jpeg(60, 40), draft_size=32).size == (60, 40)
    assert decode_image(png(), draft_size=4).size == (8, 8)  # not a JPEG: decoded in full
