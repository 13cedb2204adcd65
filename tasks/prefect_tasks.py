"""The curation steps of ``tasks/curation.py`` as Prefect tasks: one ``<step>_task`` per step, running as the
Prefect task ``<step>``. Each is Prefect's ``task`` applied to the step itself, so its signature and docstring are
the step's own, stated once (retries on storage I/O only)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from tasks import curation
from tasks.report import build

# Inputs are models and arrays: hashing them for Prefect's result cache would cost more than the step.
_task = {"cache_policy": NONE}
_retried = {"retries": 2, "retry_delay_seconds": 5, **_task}

preflight_task = task(name="preflight", **_task)(curation.preflight)
embed_task = task(name="embed", **_task)(curation.embed)
fit_task = task(name="fit-scorer", **_task)(curation.fit)
score_select_write_task = task(name="score-select-write", **_retried)(curation.score_select_write)
report_task = task(name="report", **_retried)(build.build_report)
