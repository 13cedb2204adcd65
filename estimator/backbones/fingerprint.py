"""A backbone's fingerprint and embedding width, read from its files without building the model.

The driver plans a job for workers it does not resemble (a CPU head node, GPU actors): it must name the vectors
they will produce without loading a 7B model. So the fingerprint is computed from what the model is made of —
the weight files' contents (streamed in chunks, never held whole), the config, the preprocessing and tokenizer
files, the pooling, the modality and the dtype the *workers* will run in (``BackboneSpec.placed``) — and every
actor recomputes it from the files it loaded, so a mismatch is an error rather than a mislabelled cache.
Where the files live (local path, S3 prefix) is left out: the same weights from anywhere give the same fingerprint.
What each kind's model is made of is the kind's own (``kinds.py``); the hashing of files is ``digest.py``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from core.settings import StorageConfig
from estimator.backbones.kinds import KINDS
from estimator.backbones.spec import BackboneSpec

FINGERPRINT_VERSION = 2


@dataclass(frozen=True)
class BackboneInfo:
    """What a plan needs to know about a backbone: its fingerprint, its vector width and what was hashed."""

    fingerprint: str
    embed_dim: int
    parts: dict[str, Any]


def describe(spec: BackboneSpec, storage: StorageConfig | None = None, *, gpu: bool = False) -> BackboneInfo:
    """Fingerprint and ``embed_dim`` of ``spec`` as workers with (``gpu=True``) or without a GPU will run it.

    Reads configs and streams weight files through a hash; builds no model, so memory stays small.
    """
    spec = spec.placed(gpu=gpu)
    kind = KINDS[spec.kind]
    kind_parts, width = kind.model_parts(spec, storage)
    embed_dim = kind.vector_dim(spec, width)
    parts = {
        "version": FINGERPRINT_VERSION,
        "kind": spec.kind,
        "modality": spec.modality,
        "pooling": spec.pooling,
        "dtype": spec.dtype,
        "embed_dim": embed_dim,
        **({"decode": spec.decode} if spec.decode != "full" else {}),  # full decoding: as before the option
        **kind_parts,
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return BackboneInfo(fingerprint=digest, embed_dim=embed_dim, parts=parts)
