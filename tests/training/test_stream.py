"""The streaming batch source: shares per rank and worker, shuffling, skipping and exact resumption."""

from __future__ import annotations

import torch

from training.stream import BatchStream, Skipped, SkipSample, loader


def _encode(item):
    if isinstance(item, Skipped) or item % 7 == 3:
        raise SkipSample(item.reason if isinstance(item, Skipped) else "bad")
    return {"x": torch.tensor([item])}


def _collate(samples):
    return {"x": torch.cat([s["x"] for s in samples])}


def _forty(epoch: int) -> range:  # module-level: spawned DataLoader workers unpickle it
    return range(40)


def _stream(**kw) -> BatchStream:
    args = {"source": _forty, "encode": _encode, "collate": _collate, "batch_size": 3, "shuffle_buffer": 8,
            "seed": 1} | kw
    return BatchStream(**args)


def test_no_sample_twice_in_an_epoch_across_ranks_and_workers():
    seen = []
    for rank in range(2):
        seen += [x for b in loader(_stream(rank=rank, world_size=2, epochs=1), num_workers=2)
                 for x in b["x"].tolist()]
    usable = [i for i in range(40) if i % 7 != 3]
    assert sorted(seen) == usable  # each usable sample exactly once over 2 ranks x 2 workers


def test_shuffle_is_seeded_and_differs_per_epoch():
    epochs = [[x for b in _stream(epochs=e + 1, seed=1, positions={0: (e, 0)}) for x in b["x"].tolist()]
              for e in range(2)]
    again = [x for b in _stream(epochs=1, seed=1) for x in b["x"].tolist()]
    assert epochs[0] == again != sorted(again)
    assert epochs[0] != epochs[1] and sorted(epochs[0]) == sorted(epochs[1])


def test_skipped_samples_are_counted_by_reason():
    source = lambda epoch: [Skipped("unreadable_shard"), *range(10)]  # noqa: E731
    batches = list(BatchStream(source=source, encode=_encode, collate=_collate, batch_size=4, epochs=1))
    assert sum(b["_skipped"].get("bad", 0) for b in batches) == 1  # item 3
    assert sum(b["_skipped"].get("unreadable_shard", 0) for b in batches) == 1
    assert sorted(x for b in batches for x in b["x"].tolist()) == [0, 1, 2, 4, 5, 6, 7, 8, 9]


def test_resuming_from_positions_continues_the_same_batches():
    full = [b for b, _ in zip(loader(_stream(), num_workers=2), range(15), strict=False)]
    positions = {b["_consumer"]: b["_position"] for b in full[:7]}  # as a checkpoint after 7 batches holds
    resumed = loader(_stream(positions=positions, role_offset=7 % 2), num_workers=2)
    rest = [b["x"].tolist() for b, _ in zip(resumed, range(8), strict=False)]
    assert rest == [b["x"].tolist() for b in full[7:]]
