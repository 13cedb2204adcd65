"""A step's progress lines: one at the start, then at most one per interval, and one at the end."""

from __future__ import annotations

import pytest

import tasks.progress
from tasks.progress import Progress, following


def test_lines_are_rate_limited_and_state_rate_eta_and_total(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(tasks.progress.time, "monotonic", lambda: now[0])
    lines: list[str] = []
    with Progress("embed", total=4, log=lines.append, every_s=10) as progress:
        for seconds in (2, 9, 1, 1):  # one line at 11 s; nothing in between
            now[0] += seconds
            progress.update(samples=100)
    assert lines == [
        "embed: 0/4 shards",
        "embed: 2/4 shards, 18 samples/s, ETA 0:00:11",
        "embed: 4/4 shards, 31 samples/s, in 0:00:13",
    ]


def test_a_failed_step_does_not_claim_to_have_finished():
    lines: list[str] = []
    with pytest.raises(RuntimeError), Progress("report", total=5, unit="steps", log=lines.append) as progress:
        progress.update()
        raise RuntimeError("figure failed")
    assert lines == ["report: 0/5 steps"]


def test_a_follower_hears_every_move_of_the_steps_made_in_its_context():
    heard: list[tuple[str, int, int]] = []
    with (following(lambda p: heard.append((p.step, p.done, p.samples))),
          Progress("embed", total=2, log=lambda _: None, every_s=1e9) as progress):
        progress.update(samples=3)
        progress.update(samples=4)
    with Progress("score", total=1, log=lambda _: None) as progress:  # made outside the context: not heard
        progress.update()
    assert heard == [("embed", 0, 0), ("embed", 1, 3), ("embed", 2, 7), ("embed", 2, 7)]
