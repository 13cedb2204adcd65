"""The modality-shortcut diagnostic: can the text part alone tell robot from pool, where the image part cannot?

Robot instructions ("put the carrot on the plate") are worded unlike web captions and questions, so a probe on
text features separates robot from pool by style alone, and an estimator that reads the text ranks the pool by
wording rather than by what the images show — while its validation accuracy looks excellent. Every run trains a
small probe on each part of the vector (the estimator's own recipe, trained to convergence rather than stopped at
its target) and reports their validation accuracies beside the estimator's; a gap in favour of the text part is
flagged, with what to change.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from estimator.probe import EstimatorConfig, train_estimator

SEPARATES = 0.85  # a probe at or above this balanced validation accuracy "separates" robot from pool
MARGIN = 0.05  # the text probe must beat the image probe by this much to call it a shortcut
PROBE_STEPS = 300


def probe_accuracies(robot: np.ndarray, pool: np.ndarray, parts: dict[str, slice],
                     config: EstimatorConfig) -> dict[str, dict[str, float]]:
    """Validation accuracy and AUC of a linear probe on each part's columns (same split and seed as the
    estimator, no early stop before ``PROBE_STEPS``)."""
    probe = config.model_copy(update={"head": "linear", "target_val_accuracy": 1.0, "max_steps": PROBE_STEPS})
    out = {}
    for name, cols in parts.items():
        _, m = train_estimator(robot, pool, probe, backbone_fingerprint="", columns=(cols.start, cols.stop))
        out[name] = {"val_accuracy": float(m["val_accuracy"]), "val_auc": float(m["val_auc"])}
    return out


def shortcut_diagnostic(robot: np.ndarray, pool: np.ndarray, parts: dict[str, slice], config: EstimatorConfig,
                        *, scorer_reads: str) -> dict[str, Any]:
    """Flat metrics (``probe_<part>_val_accuracy``/``_auc``, ``shortcut``, ``shortcut_note``) for the run record.

    ``scorer_reads`` names the columns the scorer uses (``image``, ``text``, ``all`` or ``fused``): the note says
    whether the flagged shortcut reaches the selection and what to change.
    """
    if "image" not in parts or "text" not in parts:
        reason = ("the vector fuses image and text tokens (hf_vlm): no per-part probe; compare with a run on a "
                  "CLIP backbone, or render robot instructions and pool texts in one format"
                  if "fused" in parts else f"the vector holds only the {next(iter(parts))} part "
                  "(backbone.modality): embed image+text to probe each part")
        return {"shortcut": False, "shortcut_note": f"diagnostic unavailable: {reason}"}
    probes = probe_accuracies(robot, pool, parts, config)
    metrics: dict[str, Any] = {f"probe_{p}_{k}": round(v, 4) for p, m in probes.items() for k, v in m.items()}
    image, text = probes["image"]["val_accuracy"], probes["text"]["val_accuracy"]
    flagged = text >= SEPARATES and text - image >= MARGIN
    metrics["shortcut"] = flagged
    if not flagged:
        metrics["shortcut_note"] = f"no text shortcut: text probe {text:.3f}, image probe {image:.3f}"
    elif scorer_reads in ("image", "fused"):
        metrics["shortcut_note"] = (
            f"text alone separates robot from pool (probe {text:.3f}) better than images ({image:.3f}): the texts' "
            "wording differs. The scorer reads the image part only, so the selection does not follow it; keep "
            "scorer.features='image'.")
    else:
        metrics["shortcut_note"] = (
            f"WARNING: text alone separates robot from pool (probe {text:.3f}) while images do not ({image:.3f}): "
            f"the scorer reads the {scorer_reads} part and may rank the pool by the wording of its texts, not by "
            "what the images show. Set scorer.features='image' (the default), or render robot instructions and "
            "pool texts in one format before embedding.")
    return metrics
