"""Which frozen model embeds the samples, as configuration: a pydantic model that imports no model library, so
a run's configuration validates (in the CLI, the Prefect form, a consumer's script) without torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.settings import Settings


class BackboneSpec(Settings):
    """Which frozen model embeds the samples."""

    kind: Literal["open_clip", "hf_clip", "hf_vlm"] = Field(
        description="open_clip: an open_clip model; hf_clip: a transformers CLIP/SigLIP model; "
        "hf_vlm: a transformers vision-language model (last hidden state)."
    )
    model: str = Field(
        description="open_clip: architecture name (ViT-B-32) or a local/S3 directory holding "
        "open_clip_config.json + weights; hf_*: hub id, local directory or S3 prefix (from_pretrained)."
    )
    pretrained: str | None = Field(
        None,
        description="open_clip only: weights tag (laion2b_s34b_b79k), local file or S3 URI; None = random.",
    )
    modality: Literal["image", "text", "image+text"] = Field(
        "image+text", description="CLIP kinds: which towers form the vector (image+text concatenates both)."
    )
    decode: Literal["full", "reduced"] = Field(
        "full",
        description="reduced: JPEGs at least twice the model's input size are decoded at 1/2, 1/4 or 1/8 scale "
        "(libjpeg DCT scaling, Pillow's draft) before the resize: ~1.7x fewer CPU-seconds per large JPEG, slightly "
        "different pixels, so a different fingerprint. Other formats decode in full either way.",
    )
    pooling: Literal["mean", "last"] = Field(
        "mean",
        description="hf_vlm: mean over valid tokens of the last hidden state, or the last valid token.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on GPU workers, float32 on CPU workers."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = CUDA for workers that declare a GPU, else CPU."
    )

    def placed(self, *, gpu: bool) -> BackboneSpec:
        """This spec with device and dtype decided by the workers' declared resources, never by the machine
        that asks (a CPU driver planning for GPU actors must name the dtype they will embed in)."""
        device = self.device if self.device != "auto" else ("cuda" if gpu else "cpu")
        dtype = self.dtype if self.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
        return self.model_copy(update={"device": device, "dtype": dtype})
