"""A run's configuration validates with pydantic alone: the CLI, the Prefect form and a consumer's script check a
config without importing torch (or Ray, Prefect, MLflow), so a mistake is reported in a second, and the CLI reads
its YAML once."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "prefect", "mlflow", "transformers", "open_clip")


def heavy_imports(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter holds after running ``code`` (which must succeed)."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def test_every_example_config_validates_without_torch() -> None:
    code = (
        "from core.settings import load_config\n"
        "from flows.params import CurateParams\n"
        "from flows.training_params import FinetuneParams, MidtrainParams, PipelineParams\n"
        "from flows.ablation_params import AblationParams\n"
        "for model, name in [(CurateParams, 'curate'), (MidtrainParams, 'midtrain'), (FinetuneParams, 'finetune'),\n"
        "                    (PipelineParams, 'pipeline'), (AblationParams, 'ablation')]:\n"
        "    load_config(model, f'deploy/{name}.example.yaml')\n"
    )
    assert heavy_imports(code) == []


def test_a_backbone_spec_validates_without_torch() -> None:
    code = (
        "from estimator.backbones import BackboneSpec, validate_backbone_spec\n"
        "validate_backbone_spec(BackboneSpec(kind='hf_clip', model='org/name'))\n"
    )
    assert heavy_imports(code) == []


def test_recording_a_curation_does_not_import_torch(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = (
        "from core.settings import MlflowConfig\n"
        "import tasks.curation_record\n"
        "from training.recording import record_run\n"
        f"config = MlflowConfig(tracking_uri={store!r})\n"
        "record_run(config, run_name='c1', params={'k': 3}, metrics={'selected': 3.0}, tags={'kind': 'curation'},\n"
        "           files={'manifest.json': b'{}'})\n"
    )
    assert [m for m in heavy_imports(code) if m != "mlflow"] == []
