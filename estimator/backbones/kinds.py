"""The backbone kinds as classes in one registry: what differs between open_clip models, transformers two-tower
models (CLIP, SigLIP) and transformers VLMs — how a spec is checked, whether the vector fuses image and text, how
wide it is — said once per kind instead of switched on where it is used. Torch-free: a kind checks a spec
without loading a model; the model itself is the kind's own module (``open_clip.py``, ``hf_clip.py``,
``hf_vlm.py``).
"""

from __future__ import annotations

import re
from typing import ClassVar

from core.model_files import looks_like_path, require_dir_with
from core.settings import StorageConfig
from estimator.backbones.open_clip_names import validate_open_clip
from estimator.backbones.spec import BackboneSpec

# A hub id: "name" or "org/name" (letters, digits, '-', '_', '.').
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class BackboneKind:
    """A transformers model by default: a hub id or a directory holding ``config.json``, weights inside it."""

    name: ClassVar[str]
    fused: ClassVar[bool] = False  # one hidden state over image and text: the vector has no per-tower halves

    def validate(self, spec: BackboneSpec, storage: StorageConfig | None) -> None:
        """Raise ValueError (naming the model) unless ``spec`` can be resolved; reads no weights."""
        if spec.pretrained is not None:
            raise ValueError(f"{spec.kind} model {spec.model!r}: pretrained applies to open_clip only; "
                             "put the weights in the model directory")
        if looks_like_path(spec.model):
            require_dir_with(spec.model, "config.json", storage, what=f"{spec.kind} model")
        elif not _HUB_ID.match(spec.model):
            raise ValueError(f"{spec.kind} model {spec.model!r} is neither a hub id (org/name) nor a directory, "
                             "file:// or s3:// prefix holding config.json")

    def vector_dim(self, spec: BackboneSpec, width: int) -> int:
        """The sample vector's width from the model's feature ``width``: two towers concatenated for
        image+text, one otherwise."""
        return width if self.fused or spec.modality != "image+text" else 2 * width

    def parts(self, modality: str, embed_dim: int) -> dict[str, slice]:
        """Column slices of the vector by part: ``image`` and/or ``text`` for two towers, ``fused`` for one."""
        if self.fused:
            return {"fused": slice(0, embed_dim)}
        if modality == "image+text":
            half = embed_dim // 2
            return {"image": slice(0, half), "text": slice(half, embed_dim)}
        return {modality: slice(0, embed_dim)}


class OpenClipKind(BackboneKind):
    """An open_clip architecture name (with a weights tag or file) or a directory with open_clip's config."""

    name = "open_clip"

    def validate(self, spec: BackboneSpec, storage: StorageConfig | None) -> None:
        validate_open_clip(spec, storage)


class HFClipKind(BackboneKind):
    name = "hf_clip"


class HFVLMKind(BackboneKind):
    name = "hf_vlm"
    fused = True


KINDS: dict[str, BackboneKind] = {kind.name: kind() for kind in (OpenClipKind, HFClipKind, HFVLMKind)}
