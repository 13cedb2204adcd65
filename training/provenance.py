"""What a run says about where it came from, for a reader of the MLflow UI: the code that ran (git commit or package
version) and its lineage as a markdown description with links to the upstream runs and registered models.

Links are relative to the MLflow UI (``#/experiments/E/runs/R``), so they work on whichever server shows the run
(a tracking server, or ``mlflow ui`` over a SQLite store). No torch, no MLflow client: plain strings in and out.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

PACKAGE = "embodied-midtrain"
GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own tag: the run page shows it as "Git commit"
CODE_VERSION = "code.version"
NOTE = "mlflow.note.content"  # MLflow's run description (markdown on the run page)
_ROOT = Path(__file__).resolve().parents[1]  # the checkout (or site-packages) holding this package


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def code_tags() -> dict[str, str]:
    """``code.version`` (the git commit when this package runs from a git checkout, else the package version),
    ``code.package_version``, and in a checkout MLflow's git commit tag and ``code.git_dirty`` (tracked files
    changed since the commit, so the commit alone does not name the code). Read once per process: the code a
    process runs is what it imported, whatever the checkout holds later."""
    tags = {"code.package_version": package_version()}
    top = _git("rev-parse", "--show-toplevel")
    commit = _git("rev-parse", "HEAD") if top and Path(top).resolve() == _ROOT else None
    if not commit:  # an installed package, or a checkout of something else around site-packages
        return tags | {CODE_VERSION: tags["code.package_version"]}
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return tags | {CODE_VERSION: commit, GIT_COMMIT: commit, "code.git_dirty": str(bool(dirty)).lower()}


def run_link(experiment_id: str, run_id: str, text: str) -> str:
    return f"[{text}](#/experiments/{experiment_id}/runs/{run_id})"


def model_link(name: str, version: str | int) -> str:
    return f"[{name} v{version}](#/models/{quote(name, safe='')}/versions/{version})"


def _stage_line(stage: Mapping[str, Any], *, this: bool) -> str:
    name = stage["run_name"] or stage["run_id"]
    parts = [f"**{stage['kind']}**" + (" (this run)" if this else ""),
             run_link(stage["experiment_id"], stage["run_id"], f"run {name}")]
    if stage.get("manifest_uri"):
        parts.append(f"manifest `{stage['manifest_uri']}`")
    if stage.get("model"):
        model, version = stage["model"].rsplit("/", 1)
        parts.append(f"model {model_link(model, version)}")
    return " · ".join(parts)


def lineage_note(chain: Sequence[Mapping[str, Any]], *, code_version: str | None = None) -> str:
    """The run description of the first run of ``chain`` (``training.tracking.lineage``: downstream first, each
    with ``run_id``, ``run_name``, ``kind``, ``experiment_id``, ``model`` as NAME/VERSION, ``manifest_uri``):
    its upstream runs in pipeline order, then how to load its model."""
    lines = ["### Lineage (upstream first)", ""]
    lines += [f"{i}. {_stage_line(stage, this=stage is chain[0])}" for i, stage in enumerate(reversed(chain), 1)]
    model = chain[0].get("model") if chain else None
    if model:
        lines += ["", f'Load it: `mlflow.pyfunc.load_model("models:/{model}")`' if chain[0]["kind"] == "finetune"
                  else f"Its files: `models:/{model}` (`mlflow.artifacts.download_artifacts`)"]
    if code_version:
        lines += ["", f"Code: `{code_version}`"]
    return "\n".join(lines)
