"""A curation run's progress as the Prefect UI shows it: one progress artifact (the bar on the run's page) and a
log line per step. While Ray embeds, shards done, samples/s and the ETA come from the embedding cache the
workers commit to, so the Ray job needs no callback into the flow and the driver holds nothing per shard."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger

from tasks.embed_shards import ShardJob

# Share of the bar at the *start* of each step (embedding dominates a run that is not cached).
STEPS = {"preflight": 0, "embed": 5, "fit": 75, "score": 82, "manifest": 88, "report": 90, "mlflow": 97, "done": 100}


class CurationProgress:
    """Reports the steps of one run; ``watch_embedding`` follows the Ray job shard by shard."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.logger = get_run_logger()
        self.artifact = create_progress_artifact(
            0.0, key="curation-progress", description=f"run {run_id}: preflight"
        )

    def step(self, name: str, detail: str = "") -> None:
        text = f"run {self.run_id}: {name}" + (f" ({detail})" if detail else "")
        update_progress_artifact(self.artifact, float(STEPS[name]), description=text)
        self.logger.info(text)

    def report_step(self, name: str, done: int, total: int) -> None:
        """The report's step ``name`` starts (``done`` of ``total`` finished): the bar moves between the report's
        and the next step's share, so a report that takes minutes shows which part runs."""
        value = STEPS["report"] + (STEPS["mlflow"] - STEPS["report"]) * done / total
        text = f"run {self.run_id}: report, {name} ({done + 1}/{total})"
        update_progress_artifact(self.artifact, value, description=text)
        self.logger.info(text)

    @contextlib.contextmanager
    def watch_embedding(self, todo: list[ShardJob], *, every: float = 5.0) -> Iterator[None]:
        """Poll the cache entries of the shards of ``todo`` every ``every`` seconds while the block runs."""
        self.step("embed", f"{len(todo)} shards to embed")
        stop = threading.Event()
        watcher = threading.Thread(target=self._poll, args=(todo, stop, every), daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join(timeout=30)

    def _poll(self, todo: list[ShardJob], stop: threading.Event, every: float) -> None:
        start, left, done, samples = time.monotonic(), list(todo), 0, 0
        span = STEPS["fit"] - STEPS["embed"]
        while not stop.wait(every) and left:
            finished = [job for job in left if job.entry.exists()]
            if not finished:
                continue
            left = [job for job in left if job not in finished]
            done += len(finished)
            samples += sum(job.entry.rows() for job in finished)
            elapsed = time.monotonic() - start
            eta = elapsed / done * len(left)
            text = (
                f"run {self.run_id}: embedding {done}/{len(todo)} shards, {samples / elapsed:.1f} samples/s, "
                f"ETA {eta:.0f} s"
            )
            update_progress_artifact(self.artifact, STEPS["embed"] + span * done / len(todo), description=text)
            self.logger.info(text)
