"""``emt midtrain`` then ``emt finetune`` on VLM families other than the demo's Llava, as an ML team would run
them: a Qwen2.5-VL mid-trained with LoRA on the pipeline's curated manifest, fine-tuned with the vision tower and
the lower half of the LLM frozen; PaliGemma (a prefix-LM, no chat template) mid-trained. Each run is tracked and
its model registered; the VLA reloads from the registry's model directory."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import yaml
from PIL import Image

from estimator.backbones.tiny_vlms import save_tiny_family
from flows.cli import main
from training.vla import load_vla

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

TRAIN = {"steps": 2, "batch_size": 3, "log_every": 1, "shuffle_buffer": 8}


def _run(command: str, config: dict, path) -> None:
    path.write_text(yaml.safe_dump(config))
    assert main([command, "--config", str(path)]) == 0


@pytest.mark.parametrize("family", ["qwen2_5_vl", "paligemma"])
def test_emt_midtrain_then_finetune(family, local_pipeline, local_corpus, mlflow_store, tmp_path, capsys):
    model = save_tiny_family(family, str(tmp_path / family))
    manifest = local_pipeline[1].curate.manifest_uri
    tracking = {"tracking_uri": mlflow_store}
    _run("midtrain", {"model": model, "manifest_uri": manifest, "output_uri": str(tmp_path / "mid"),
                      "run_name": family, "mlflow": tracking,
                      "train": {**TRAIN, "lora": {"rank": 4, "alpha": 8}}}, tmp_path / "midtrain.yaml")
    _run("finetune", {"model": str(tmp_path / "mid" / family / "model"), "output_uri": str(tmp_path / "vla"),
                      "run_name": family, "mlflow": tracking,
                      "robot": {"sources": [s.model_dump() for s in local_corpus.robot], "heldout_fraction": 0.3},
                      "train": {**TRAIN, "freeze": {"vision": True, "llm_layers": "half"}}},
         tmp_path / "finetune.yaml")
    out = capsys.readouterr().out
    assert "midtrain run" in out and "finetune run" in out
    client = mlflow.MlflowClient(mlflow_store)
    runs = {r.data.tags["kind"]: r for r in client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"attributes.run_name = '{family}'")}
    assert runs["midtrain"].data.params["train.lora.rank"] == "4"
    assert runs["finetune"].data.params["train.freeze.llm_layers"] == "half"
    assert 0 < float(runs["finetune"].data.params["trainable_share"]) < 1
    vla = load_vla(str(tmp_path / "vla" / family / "model"))
    actions = vla.predict_action(Image.new("RGB", (48, 40), "red"), "pick up the red cube")
    assert actions.shape == (4, 7) and np.isfinite(actions).all()
