"""The VLA as an MLflow model: a ``python_function`` flavour over the saved VLA directory, so the ML team loads a
registered version with ``mlflow.pyfunc.load_model("models:/emt-vla/N")`` and calls ``predict`` on a table of
camera images and instructions, writing no code of their own (the model names this product's package among its
requirements: it loads through ``training.vla``).

Layout of the logged model (no pickle anywhere: the model is built from code, its weights are safetensors)::

    MLmodel              flavour, signature (image: binary, instruction: string -> float32 [-1, H, A])
    vla_mlflow_model.py  the code MLflow runs to build ``VLAPyfunc`` (a copy of ``training/vla_mlflow_model.py``)
    artifacts/model/     the VLA exactly as ``save_vla`` wrote it (vlm/, head.safetensors, vla.json, ...); the
                         folder takes the saved directory's name (``model`` when the flows register it)
    requirements.txt     this product's package and the torch / transformers it was trained with

Importing this module needs no torch: a flow registers a model without loading it; ``load_context`` loads it.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

ARTIFACT = "vla"
MODEL_CODE = Path(__file__).with_name("vla_mlflow_model.py")
PACKAGE = "embodied-midtrain"
_REQUIRED = ("torch", "transformers", "tokenizers", "safetensors", "pillow", "numpy", "pandas")


class VLAPyfunc(mlflow.pyfunc.PythonModel):
    """``predict`` takes a DataFrame (or one dict, or a list of dicts) with an ``image`` column of encoded image
    bytes (PNG, JPEG, ...) and an ``instruction`` column; it returns float32 actions [N, H, A] in the dataset's
    units, row i being what ``VLA.predict_action`` gives for row i."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from training.vla import load_vla  # torch is needed from here on, not to register the model

        self.vla = load_vla(context.artifacts[ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """MLflow hands a DataFrame (it converts a dict against the signature); a direct call may pass a dict or
        a list of dicts. (``pd.DataFrame`` is the hint MLflow's type-hint check accepts without a warning.)"""
        from PIL import Image

        rows = _frame(model_input)
        missing = {"image", "instruction"} - set(rows.columns)
        if missing:
            raise ValueError(f"VLA input needs the columns image and instruction (missing: {sorted(missing)})")
        actions = [
            self.vla.predict_action(Image.open(io.BytesIO(_bytes(image))), str(instruction))
            for image, instruction in zip(rows["image"], rows["instruction"], strict=True)
        ]
        spec = self.vla.spec
        if not actions:
            return np.zeros((0, spec.chunk_size, spec.action_dim), np.float32)
        return np.stack(actions).astype(np.float32)


def _frame(model_input: Any) -> pd.DataFrame:
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, dict):  # one sample, or columns of several
        values = list(model_input.values())
        one = values and not isinstance(values[0], list | tuple | np.ndarray | pd.Series)
        return pd.DataFrame([model_input]) if one else pd.DataFrame(model_input)
    return pd.DataFrame(list(model_input))


def _bytes(image: Any) -> bytes:
    """Encoded image bytes; a REST request's base64 text is decoded by MLflow against the binary column already."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    raise ValueError(f"VLA input: image must be encoded image bytes, got {type(image).__name__}")


def signature(*, chunk_size: int, action_dim: int) -> ModelSignature:
    """Input: one camera image (encoded bytes) and one instruction per row; output: [rows, H, A] float32."""
    return ModelSignature(
        inputs=Schema([ColSpec("binary", "image"), ColSpec("string", "instruction")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, chunk_size, action_dim), "actions")]),
    )


def requirements() -> list[str]:
    """Pinned to what this process runs (local build tags such as ``+cpu`` dropped: pip cannot resolve them from
    an index). Listed, not inferred: MLflow's inference would load the model in a subprocess to watch imports."""
    pins = []
    for name in (PACKAGE, *_REQUIRED):
        try:
            pins.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def save_vla_pyfunc(vla_dir: str, path: str) -> None:
    """Write the MLflow model of the VLA saved at the local directory ``vla_dir`` to the new directory ``path``
    (its chunk size and action size, for the signature, come from ``vla.json``; nothing is loaded)."""
    with open(os.path.join(vla_dir, "vla.json")) as f:
        spec = json.load(f)
    shape = {"chunk_size": int(spec["chunk_size"]), "action_dim": int(spec["action_dim"])}
    with warnings.catch_warnings():
        # No input example on purpose: MLflow would load the model (a VLM, maybe billions of parameters) at
        # registration to check it; the signature carries the contract.
        warnings.filterwarnings("ignore", message=".*An input example was not provided")
        mlflow.pyfunc.save_model(
            path,
            python_model=str(MODEL_CODE),
            artifacts={ARTIFACT: vla_dir},
            signature=signature(**shape),
            pip_requirements=requirements(),
            metadata={"emt.format": "vla", "emt.vla_format_version": spec.get("format_version"), **shape},
        )
