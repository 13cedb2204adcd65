"""The streaming batch source: one global data order whatever the ranks x DataLoader workers, shuffling, skipping
counted once, weightless stand-ins for emptied micro-batches, and exact resumption on another layout."""

from __future__ import annotations

from itertools import islice

import pytest
import torch

from training.stream import BatchStream, Skipped, SkipSample, close, loader, loader_workers


def _encode(item):
    if item % 7 == 3:
        raise SkipSample("bad")
    return {"x": torch.tensor([item])}


def _collate(samples):
    return {"x": torch.cat([s["x"] for s in samples])}


def _forty(epoch: int) -> list:  # module-level: spawned DataLoader workers unpickle it
    return [Skipped("unreadable_shard"), *range(20), Skipped("missing_shard"), *range(20, 40)]


def _stream(**kw) -> BatchStream:
    args = {"source": _forty, "encode": _encode, "collate": _collate, "batch_size": 4, "shuffle_buffer": 8,
            "seed": 1} | kw
    return BatchStream(**args)


def _steps(*, world: int, workers: int, global_batch: int, steps: int, **kw) -> list[dict]:
    """Per global micro-batch: the values of every rank's slice (in rank order), the skip counts of all ranks
    added up, and the position every rank reported."""
    per_rank = [list(islice(loader(_stream(rank=r, world_size=world, batch_size=global_batch // world, **kw),
                                   num_workers=workers), steps)) for r in range(world)]
    out = []
    for parts in zip(*per_rank, strict=True):
        skipped: dict[str, int] = {}
        for b in parts:
            for k, v in b["_skipped"].items():
                skipped[k] = skipped.get(k, 0) + v
        assert len({tuple(b["_position"]) for b in parts}) == 1  # every rank agrees where the stream stands
        out.append({"x": [x for b in parts if b["_weight"] for x in b["x"].tolist()], "skipped": skipped,
                    "position": tuple(parts[0]["_position"])})
    return out


def test_the_data_order_does_not_depend_on_ranks_or_workers():
    one = _steps(world=1, workers=0, global_batch=4, steps=24)
    assert one == _steps(world=1, workers=2, global_batch=4, steps=24)
    assert one == _steps(world=2, workers=0, global_batch=4, steps=24)
    assert one == _steps(world=2, workers=2, global_batch=4, steps=24)
    epoch = [x for s in one[:10] for x in s["x"]]  # 40 slots: the first epoch
    assert sorted(epoch) == [i for i in range(40) if i % 7 != 3] and epoch != sorted(epoch)  # shuffled, once each
    totals = {k: sum(s["skipped"].get(k, 0) for s in one[:10]) for k in ("bad", "unreadable_shard", "missing_shard")}
    assert totals == {"bad": 6, "unreadable_shard": 1, "missing_shard": 1}  # each counted once, by one consumer


def test_shuffle_is_seeded_and_differs_per_epoch():
    def epoch(e: int, seed: int = 1) -> list[int]:
        return [x for b in _stream(epochs=e + 1, seed=seed, start=(e, 0)) for x in b["x"].tolist()]

    assert epoch(0) == epoch(0) != epoch(1) and sorted(epoch(0)) == sorted(epoch(1))
    assert epoch(0) != epoch(0, seed=2)


@pytest.mark.parametrize(("world", "workers"), [(1, 1), (2, 0)])
def test_resuming_on_another_layout_continues_the_same_batches(world, workers):
    full = _steps(world=1, workers=2, global_batch=4, steps=16)
    position = full[6]["position"]  # as a checkpoint after 7 micro-batches holds it
    resumed = _steps(world=world, workers=workers, global_batch=4, steps=9, start=position)
    assert [s["x"] for s in resumed] == [s["x"] for s in full[7:]]


def test_a_micro_batch_whose_samples_were_all_skipped_carries_a_weightless_stand_in():
    def source(epoch: int) -> list[int]:
        return [0, 1, 3, 10, 17, 24, 4, 5]  # 3, 10, 17, 24 are skipped: the second micro-batch is empty

    batches = list(islice(BatchStream(source=source, encode=_encode, collate=_collate, batch_size=2), 4))
    assert [b["_weight"] for b in batches] == [1.0, 0.0, 0.0, 1.0]
    assert batches[1]["x"].tolist() == [1] and batches[3]["x"].tolist() == [4, 5]  # the last good sample stands in
    assert [b["_skipped"] for b in batches] == [{}, {"bad": 2}, {"bad": 2}, {}]
    held_out = list(BatchStream(source=source, encode=_encode, collate=_collate, batch_size=2, epochs=1))
    assert [b["_weight"] for b in held_out] == [1.0, 1.0]  # a finite pass just leaves the empty ones out


def test_an_epoch_with_no_sample_is_refused():
    stream = BatchStream(source=lambda e: [Skipped("missing_shard")] * 3, encode=_encode, collate=_collate,
                         batch_size=2)
    with pytest.raises(ValueError, match="no sample to train on .*missing_shard': 3"):
        next(iter(stream))


@pytest.mark.parametrize(("requested", "cuda", "cpus", "workers"), [
    (None, False, 16, 0),  # CPU: a worker would take the step's own cores
    (None, True, 1, 1),    # CUDA: at least one, so reading overlaps the step
    (None, True, 3, 2),    # one per CPU beyond the step's own
    (None, True, 64, 4),   # at most 4
    (0, True, 16, 0),      # a setting is kept as set
    (3, False, 2, 3),
])
def test_loader_workers_default_to_the_host_left_idle_by_the_step(requested, cuda, cpus, workers):
    assert loader_workers(requested, cuda=cuda, cpus=cpus) == workers


class _Stopping:
    def __init__(self, err: Exception):
        self.err = err

    def _shutdown_workers(self):
        raise self.err


def test_a_worker_dying_as_it_is_stopped_is_a_warning_and_other_errors_are_not_hidden():
    with pytest.warns(RuntimeWarning, match="did not exit cleanly"):
        close(_Stopping(RuntimeError("DataLoader worker (pid 1) is killed by signal: Aborted.")))
    with pytest.raises(RuntimeError, match="something else"):
        close(_Stopping(RuntimeError("something else")))
