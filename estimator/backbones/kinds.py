"""The backbone kinds as classes in one registry: what differs between open_clip models, transformers two-tower
models (CLIP, SigLIP) and transformers VLMs — how a spec is checked, which module builds the model, what its
fingerprint is made of, whether the vector fuses image and text, how wide it is — said once per kind instead of
switched on where it is used. Torch-free: a kind checks a spec without loading a model; the model itself is the
kind's own module (``open_clip.py``, ``hf_clip.py``, ``hf_vlm.py``), imported only when one is loaded.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, ClassVar

from core.model_files import looks_like_path, require_dir_with, strip_local_prefix
from core.settings import StorageConfig
from core.storage import filesystem
from estimator.backbones.digest import clean_config, directory_parts, hub_parts, weights_digest
from estimator.backbones.open_clip_names import (
    HF_HUB_PREFIX,
    OPEN_CLIP_CONFIG,
    unknown_arch_message,
    validate_open_clip,
)
from estimator.backbones.spec import BackboneSpec

# A hub id: "name" or "org/name" (letters, digits, '-', '_', '.').
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class BackboneKind:
    """A transformers model by default: a hub id or a directory holding ``config.json``, weights inside it."""

    name: ClassVar[str]
    module: ClassVar[str]  # the module whose ``backbone`` class loads the model (imports torch and its library)
    backbone: ClassVar[str]
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

    def backbone_class(self) -> type:
        """The class that loads a model of this kind, from the kind's own module: importing it imports torch and
        the model library, so only a worker that loads a model calls this."""
        return getattr(importlib.import_module(self.module), self.backbone)

    def model_parts(self, spec: BackboneSpec, storage: StorageConfig | None) -> tuple[dict, int]:
        """(what the model is made of, for the fingerprint; the width of one tower's features), from its files."""
        from transformers import AutoConfig

        if looks_like_path(spec.model):
            raw, files = directory_parts(spec.model, storage, "config.json")
        else:
            raw, files = hub_parts(spec.model, "config.json")
        config = AutoConfig.for_model(**raw)
        return {"config": clean_config(config.to_dict()), "files": files}, self.feature_width(config)

    def feature_width(self, config: Any) -> int:
        """One tower's output width: CLIP projects to projection_dim; SigLIP's towers end at their hidden size."""
        text = getattr(config, "text_config", config)
        return int(getattr(config, "projection_dim", None) or getattr(text, "projection_size", None)
                   or config.vision_config.hidden_size)

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
    module = "estimator.backbones.open_clip"
    backbone = "OpenClipBackbone"

    def validate(self, spec: BackboneSpec, storage: StorageConfig | None) -> None:
        validate_open_clip(spec, storage)

    def model_parts(self, spec: BackboneSpec, storage: StorageConfig | None) -> tuple[dict, int]:
        """A directory or hub model by its files; a built-in architecture by name, config and weights."""
        import open_clip

        if looks_like_path(spec.model):
            config, files = directory_parts(spec.model, storage, OPEN_CLIP_CONFIG)
            model_cfg = config.get("model_cfg", config)
            return {"config": config, "files": files}, int(model_cfg["embed_dim"])
        if spec.model.startswith(HF_HUB_PREFIX):
            config, files = hub_parts(spec.model[len(HF_HUB_PREFIX) :], OPEN_CLIP_CONFIG)
            return {"config": config, "files": files}, int(config["model_cfg"]["embed_dim"])
        model_cfg = open_clip.get_model_config(spec.model)
        if model_cfg is None:
            raise ValueError(unknown_arch_message(spec.model))
        if spec.pretrained is None:
            weights: str = "random-init-seed-0"  # OpenClipBackbone seeds a model without weights
        elif looks_like_path(spec.pretrained):
            fs, path = filesystem(strip_local_prefix(spec.pretrained), storage)
            weights = weights_digest(fs, path)
        else:
            weights = f"tag:{spec.pretrained}"  # open_clip's registry pins a tag to one file and its preprocessing
        return {"arch": spec.model, "config": model_cfg, "weights": weights}, int(model_cfg["embed_dim"])


class HFClipKind(BackboneKind):
    name = "hf_clip"
    module = "estimator.backbones.hf_clip"
    backbone = "HFClipBackbone"


class HFVLMKind(BackboneKind):
    name = "hf_vlm"
    module = "estimator.backbones.hf_vlm"
    backbone = "HFVLMBackbone"
    fused = True

    def feature_width(self, config: Any) -> int:
        """The language model's last hidden state."""
        return int(config.get_text_config().hidden_size)


KINDS: dict[str, BackboneKind] = {kind.name: kind() for kind in (OpenClipKind, HFClipKind, HFVLMKind)}
