"""A consumer's view of a manifest: a light install reads it, and the README's snippet runs as written."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from core.manifest import iter_selected, write_manifest
from core.read import Quarantine, read_source

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "ray", "prefect", "mlflow", "transformers", "open_clip", "av", "pandas"}


def test_manifest_reader_imports_no_heavy_stack():
    code = f"import sys, core.manifest; print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def _manifest(corpus, storage, uri: str) -> int:
    """A manifest over two pool sources with every third sample selected; returns the number selected."""
    parts = []
    for spec in corpus.pool[1:3]:
        samples = pa.concat_tables(read_source(spec, quarantine=Quarantine()))
        n = samples.num_rows
        parts.append(
            samples.select(["sample_id", "source", "shard_uri", "key"])
            .append_column("score", pa.array([1.0 - i / n for i in range(n)], pa.float32()))
            .append_column("rank", pa.array(range(n), pa.int64()))
            .append_column("selected", pa.array([i % 3 == 0 for i in range(n)]))
        )
    sidecar = {"pool": [s.model_dump(mode="json") for s in corpus.pool]}
    return write_manifest(uri, parts, sidecar, storage)["selected"]


def test_readme_snippet_streams_the_selected_samples(s3, s3_corpus, capsys):
    bucket = s3.make_bucket("consumer")
    uri = f"{bucket}/runs/r1/manifest.parquet"
    selected = _manifest(s3_corpus, s3.storage, uri)
    readme = (ROOT / "README.md").read_text()
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "iter_selected" in b)
    storage = s3.storage.model_dump(mode="json") | {
        "key": s3.storage.key.get_secret_value(), "secret": s3.storage.secret.get_secret_value()
    }
    snippet = re.sub(r"^MANIFEST = .*$", f"MANIFEST = {uri!r}", snippet, flags=re.M)
    snippet = re.sub(r"^storage = .*$", f"storage = StorageConfig.model_validate({storage!r})", snippet, flags=re.M)
    exec(compile(snippet, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{selected} selected samples" and len(lines) == 1 + selected


def test_selected_samples_come_shard_by_shard_with_score_and_rank(local_corpus, tmp_path):
    uri = str(tmp_path / "manifest.parquet")
    selected = _manifest(local_corpus, None, uri)
    batches = list(iter_selected(uri, batch_size=4))
    table = pa.concat_tables(batches)
    assert table.num_rows == selected and all(r % 3 == 0 for r in table["rank"].to_pylist())
    assert pc.all(pc.greater(table["score"], 0)).as_py()
    shard_order = [b["shard_uri"][0].as_py() for b in batches]
    assert shard_order == sorted(shard_order)


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda req: re.split(r"[<>=!\[ ;]", req, maxsplit=1)[0].lower().replace("_", "-")  # noqa: E731
    return {name(r) for r in project["dependencies"]}, {name(r) for r in project["optional-dependencies"]["curate"]}


def _imported(packages: list[str], *, module_level: bool = False) -> set[str]:
    """The distributions that the third-party modules imported under ``packages`` come from (``module_level``:
    only imports run when a module is imported, not those deferred into a function)."""
    dists = importlib.metadata.packages_distributions()
    found = set()
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in tree.body if module_level else ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"__future__"}:
                    if (ROOT / top).is_dir():
                        continue  # the product's own packages
                    names = [d.lower().replace("_", "-") for d in dists[top]]
                    found.add("mlflow" if "mlflow" in names else names[0])  # mlflow ships as three distributions
    return found


def test_base_install_is_the_light_reader_and_covers_core():
    base, _ = _declared()
    assert not {"torch", "ray", "prefect", "mlflow", "transformers", "av", "pandas"} & base
    assert _imported(["core"], module_level=True) <= base  # PyAV, for LeRobot video, is imported on first use


def test_every_imported_dependency_is_declared_and_every_declared_one_used():
    base, curate = _declared()
    dev = {r.split("[")[0].split(">")[0].lower() for r in tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]["dev"]}
    imported = _imported(["core", "synth", "tasks", "flows", "estimator", "training", "infra"])
    assert imported <= base | curate | dev  # infra's embedded S3 (moto) is a development dependency
    # s3fs: fsspec loads it for s3:// URIs; fastapi: pinned for Prefect's server; num2words: SmolVLM's processor
    assert (base | curate) - imported == {"s3fs", "fastapi", "num2words"}
