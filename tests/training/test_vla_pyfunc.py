"""The registered VLA as an MLflow model: ``mlflow.pyfunc.load_model("models:/NAME/VERSION")`` on a fine-tuned
tiny VLA predicts exactly what ``load_vla(...).predict_action`` does, from a DataFrame or a dict, with no pickle in
the logged model."""

from __future__ import annotations

import io
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.settings import MlflowConfig
from synth import CorpusInfo
from training.config import FinetuneConfig, RobotDataConfig, TrainConfig
from training.recipes import finetune
from training.tracking import log_model, training_run
from training.vla import load_vla
from training.vla_pyfunc import PACKAGE, save_vla_pyfunc

NAME = "emt-test-vla-pyfunc"


def _encoded(color: str, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def registered(tiny_vlm: str, local_corpus: CorpusInfo, mlflow_store: str, tmp_path_factory) -> tuple[str, str]:
    """(saved VLA directory, registered version) of a VLA fine-tuned for 2 steps on the tiny robot corpus."""
    out = str(tmp_path_factory.mktemp("vla") / "model")
    finetune(FinetuneConfig(model=tiny_vlm, output_uri=out, robot=RobotDataConfig(sources=local_corpus.robot),
                            train=TrainConfig(steps=2, lr=1e-3, batch_size=4, shuffle_buffer=1)))
    config = MlflowConfig(tracking_uri=mlflow_store, experiment="emt-test-pyfunc")
    with training_run(config, run_name="ft", kind="finetune", tags={}) as run:
        version = log_model(run, out, registered_name=NAME, storage=None, tags={}, mlflow_model=save_vla_pyfunc)
    return out, str(version)


def test_the_registered_vla_loads_with_pyfunc_and_predicts_like_the_vla(registered):
    saved, version = registered
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{version}")
    vla = load_vla(saved)
    rows = pd.DataFrame({"image": [_encoded("orange", "PNG"), _encoded("navy", "JPEG")],
                         "instruction": ["pick up the red cube", "place it in the bowl"]})
    actions = model.predict(rows)
    h, a = vla.spec.chunk_size, vla.spec.action_dim
    assert actions.shape == (2, h, a) and actions.dtype == np.float32
    for i, (image, instruction) in enumerate(zip(rows["image"], rows["instruction"], strict=True)):
        expected = vla.predict_action(Image.open(io.BytesIO(image)), instruction)
        np.testing.assert_array_equal(actions[i], expected)
    assert not np.array_equal(actions[0], actions[1])  # each row gets its own prediction
    one = model.predict({"image": rows["image"][0], "instruction": rows["instruction"][0]})
    np.testing.assert_array_equal(one, actions[:1])


def test_the_logged_model_declares_its_contract_and_holds_no_pickle(registered):
    _, version = registered
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{version}")
    inputs = model.metadata.get_input_schema()
    assert inputs.input_names() == ["image", "instruction"]
    assert [str(t) for t in inputs.input_types()] == ["DataType.binary", "DataType.string"]
    (output,) = model.metadata.get_output_schema().inputs
    assert output.shape == (-1, 4, 7) and output.type == np.dtype(np.float32)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/{version}"))
    files = {str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()}
    assert {"MLmodel", "artifacts/model/vla.json", "artifacts/model/head.safetensors"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pt", ".bin"))]  # code + safetensors, never pickle
    assert any(line.startswith(f"{PACKAGE}==") for line in (local / "requirements.txt").read_text().splitlines())


def test_an_input_without_the_columns_is_refused(registered):
    _, version = registered
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{version}")
    with pytest.raises(Exception, match="instruction"):
        model.predict(pd.DataFrame({"image": [_encoded("red", "PNG")]}))


def test_saving_needs_only_the_vla_directory(registered, tmp_path):
    saved, _ = registered
    save_vla_pyfunc(saved, str(tmp_path / "m"))
    assert os.path.exists(tmp_path / "m" / "MLmodel")
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    assert loaded.predict({"image": _encoded("red", "PNG"), "instruction": "go"}).shape == (1, 4, 7)
