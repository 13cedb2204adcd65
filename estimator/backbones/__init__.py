"""Frozen backbones, chosen by name in configuration: ``load_backbone(BackboneSpec(kind=..., model=...))``.

``validate_backbone_spec`` checks a spec without loading any weights, so a flow can reject bad configuration
before work starts. Model libraries (and torch) are imported only when a backbone of their kind is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.settings import StorageConfig
from estimator.backbones.kinds import KINDS
from estimator.backbones.spec import BackboneSpec

if TYPE_CHECKING:  # the loaded model's class imports torch; a spec validates without it
    from estimator.backbones.backbone import Backbone

__all__ = ["BackboneSpec", "load_backbone", "validate_backbone_spec"]


def validate_backbone_spec(spec: BackboneSpec, storage: StorageConfig | None = None) -> None:
    """Raise ValueError (naming the model) unless ``spec`` can be resolved; cheap: no weights are read."""
    KINDS[spec.kind].validate(spec, storage)


def load_backbone(spec: BackboneSpec, storage: StorageConfig | None = None, *,
                  cache_dir: str | Path | None = None) -> Backbone:
    """Validate ``spec``, then load its model once (call it in a stage's ``setup()``, never per batch).

    Remote model directories are copied under ``cache_dir`` (default: a folder in the system temp dir).
    """
    validate_backbone_spec(spec, storage)
    return KINDS[spec.kind].backbone_class()(spec, storage, cache_dir=cache_dir)
