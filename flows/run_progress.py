"""A curation run's progress as the Prefect UI shows it: one progress artifact (the bar on the run's page) and a
log line per step. While Ray embeds, the bar follows the executor's own progress feed (``tasks.progress``: shards
done, samples/s, ETA, as the summary rows of the workers come back), so there is one feed and the driver reads
nothing from storage to show it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger

from tasks.progress import Progress, following

# Share of the bar at the *start* of each step (embedding dominates a run that is not cached).
STEPS = {"preflight": 0, "embed": 5, "fit": 75, "score": 82, "manifest": 88, "report": 90, "mlflow": 97, "done": 100}


class CurationProgress:
    """Reports the steps of one run; ``following_embedding`` moves the bar as the embedding job's units finish."""

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
    def following_embedding(self, shards: int, *, every: float = 5.0) -> Iterator[None]:
        """While the block runs, the embedding job's progress moves the bar between the embed and fit shares, at
        most every ``every`` seconds (and when it ends)."""
        self.step("embed", f"{shards} shards to embed")
        last = [time.monotonic()]
        span = STEPS["fit"] - STEPS["embed"]

        def moved(progress: Progress) -> None:
            now = time.monotonic()
            if progress.step != "embed" or not progress.done or (
                    now - last[0] < every and progress.done < progress.total):
                return
            last[0] = now
            text = f"run {self.run_id}: {progress.line()}"
            update_progress_artifact(self.artifact, STEPS["embed"] + span * progress.done / progress.total,
                                     description=text)
            self.logger.info(text)

        with following(moved):
            yield
