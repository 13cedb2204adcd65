"""The training run's progress lines: one per logged step, the wrapped tracker still getting everything."""

from __future__ import annotations

import pickle

from tasks.training_run import ProgressTracker
from training.metrics import MemoryTracker


def test_progress_lines_and_pass_through(capsys):
    inner = MemoryTracker()
    progress = ProgressTracker(inner, "finetune", total=4)
    progress.log_params({"train.lr": 1e-4})
    progress.log_metrics({"loss": 0.5, "lr": 1e-4, "grad_norm": 2.0}, step=2)
    progress.log_metrics({"eval/l1/arm": 0.25}, step=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("finetune step 2/4 loss=0.5 lr=0.0001 (") and "ETA" in lines[0]
    assert "grad_norm" not in lines[0] and lines[1].startswith("finetune step 2/4 eval/l1/arm=0.25")
    assert inner.params == {"train.lr": 1e-4} and inner.series("grad_norm") == [(2, 2.0)]
    assert pickle.loads(pickle.dumps(progress)).total == 4  # what a Ray Train rank zero receives
