"""The data order is the seed's and the global batch's alone: 1 and 2 DataLoader workers give the same shuffled
curve, and a run interrupted on one worker count resumes on another with the uninterrupted curve, says it resumes,
and sends the tracker each step once."""

from __future__ import annotations

import pytest

from training.config import MidtrainConfig, TrainConfig
from training.metrics import MemoryTracker
from training.recipes import midtrain

TRAIN = {"steps": 6, "lr": 1e-3, "batch_size": 2, "shuffle_buffer": 8, "seed": 3, "log_every": 1}


def _config(tiny_vlm: str, manifest: str, out: str, **train) -> MidtrainConfig:
    return MidtrainConfig(model=tiny_vlm, manifest_uri=manifest, output_uri=out, train=TrainConfig(**(TRAIN | train)))


def test_one_and_two_dataloader_workers_give_the_same_shuffled_curve(tiny_vlm: str, manifest: str, tmp_path):
    one = midtrain(_config(tiny_vlm, manifest, str(tmp_path / "one"), num_workers=1))
    two = midtrain(_config(tiny_vlm, manifest, str(tmp_path / "two"), num_workers=2))
    assert two.losses == pytest.approx(one.losses, rel=1e-6, abs=1e-7)
    assert len(set(one.losses)) == len(one.losses)  # 8 samples, batches of 2: the steps see different data


class _Interrupt(MemoryTracker):
    """Stops the run (as a crash would) when step ``at`` is about to be logged; keeps what came before, as the
    MLflow run of an interrupted run does."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at: int | None = at

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step == self.at:
            raise KeyboardInterrupt
        super().log_metrics(metrics, step)


@pytest.mark.parametrize(("before", "after"), [(2, 0), (0, 1)])
def test_resuming_on_another_worker_count_continues_and_logs_each_step_once(tiny_vlm: str, manifest: str, tmp_path,
                                                                            capsys, before: int, after: int):
    straight = midtrain(_config(tiny_vlm, manifest, str(tmp_path / "straight")))

    def run(workers: int, tracker: MemoryTracker):
        config = _config(tiny_vlm, manifest, str(tmp_path / "resumed"), num_workers=workers, checkpoint_every=2,
                         checkpoint_uri=str(tmp_path / "ckpt"))
        return midtrain(config, tracker)

    tracker = _Interrupt(at=4)  # steps 1-3 logged, the checkpoint at step 2
    with pytest.raises(KeyboardInterrupt):
        run(before, tracker)
    tracker.at = None
    capsys.readouterr()
    resumed = run(after, tracker)
    assert "resuming from step 2" in capsys.readouterr().out
    assert resumed.resumed_from == 2
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-6, abs=1e-7)
    assert [s for s, _ in tracker.series("loss")] == [1, 2, 3, 4, 5, 6]  # step 3 not sent again
    assert [v for _, v in tracker.series("loss")] == pytest.approx(straight.losses, rel=1e-6, abs=1e-7)
