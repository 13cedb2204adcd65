"""What open_clip calls its models, checked without building one: the config file a model directory holds,
the hub prefix, and whether a name or weights tag is one open_clip knows. The fingerprint (driver side) and the
backbone (worker side) both need these; the open_clip library itself is imported only when a name is checked.
"""

from __future__ import annotations

import difflib

from core.model_files import looks_like_path, require_dir_with, require_file
from core.settings import StorageConfig
from estimator.backbones.spec import BackboneSpec

OPEN_CLIP_CONFIG = "open_clip_config.json"
HF_HUB_PREFIX = "hf-hub:"


def unknown_arch_message(name: str) -> str:
    """Why ``name`` cannot be an open_clip model, and where valid names come from."""
    import open_clip  # only when a name must be checked: it imports torch and torchvision

    close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (
        f"open_clip model {name!r} is not a known architecture.{hint} Valid names: open_clip.list_models() "
        f"(e.g. ViT-B-32, ViT-L-14); weights tags: open_clip.list_pretrained(). Or give a directory or S3 "
        f"prefix holding {OPEN_CLIP_CONFIG} and the weights."
    )


def validate_open_clip(spec: BackboneSpec, storage: StorageConfig | None = None) -> None:
    """Reject a spec open_clip cannot resolve, without loading weights."""
    import open_clip  # only now: it imports torch and torchvision

    if looks_like_path(spec.model):
        if spec.pretrained:
            raise ValueError(
                f"open_clip model {spec.model!r} is a directory: its weights are inside it, so "
                f"pretrained must be unset (got {spec.pretrained!r})"
            )
        require_dir_with(spec.model, OPEN_CLIP_CONFIG, storage, what="open_clip model")
        return
    if spec.model.startswith(HF_HUB_PREFIX):
        return  # resolved against the hub at load time
    if spec.model.replace("/", "-") not in open_clip.list_models():
        raise ValueError(unknown_arch_message(spec.model))
    if spec.pretrained is None:
        return
    if looks_like_path(spec.pretrained):
        require_file(spec.pretrained, storage, what=f"open_clip weights for {spec.model!r}")
    elif spec.pretrained not in open_clip.list_pretrained_tags_by_model(spec.model):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(spec.model)) or "none"
        raise ValueError(
            f"open_clip model {spec.model!r} has no weights tag {spec.pretrained!r}; known tags: "
            f"{tags}. Or give a local file or S3 URI of a checkpoint."
        )
