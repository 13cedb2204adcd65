"""The house rules of the package layout: imports run one way only (flows -> tasks -> estimator/training -> core),
and the libraries each layer may use stay where they belong."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = {"core", "synth", "estimator", "training", "tasks", "flows", "infra", "bench"}
# Which product packages each package may import (besides itself).
ALLOWED = {
    "core": set(),
    "synth": {"core"},
    "estimator": {"core"},
    "training": {"core", "estimator"},
    "tasks": {"core", "estimator", "training"},
    # Local infrastructure sits beside flows at the top: it starts services and seeds the demo into them.
    "infra": {"core", "synth", "estimator", "training"},
    "flows": {"core", "synth", "estimator", "training", "tasks", "infra"},
}
# Libraries a package must never import (orchestration stays in flows/tasks; the foundation stays light).
FORBIDDEN_LIBS = {
    "core": {"torch", "ray", "prefect", "mlflow", "transformers", "open_clip"},
    "estimator": {"prefect", "ray", "mlflow"},
    "training": {"prefect"},
}


def _imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (at any depth in the file, lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_one_way(package: str) -> None:
    wrong = {
        str(f.relative_to(ROOT)): sorted(bad)
        for f in _files(package)
        if (bad := (_imports(f) & PRODUCT) - ALLOWED[package] - {package})
    }
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}: {wrong}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN_LIBS))
def test_layers_keep_to_their_libraries(package: str) -> None:
    wrong = {
        str(f.relative_to(ROOT)): sorted(bad) for f in _files(package) if (bad := _imports(f) & FORBIDDEN_LIBS[package])
    }
    assert not wrong, f"{package} must not import {sorted(FORBIDDEN_LIBS[package])}: {wrong}"


def test_every_package_is_checked() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()} - {"bench"}
    assert packages == set(ALLOWED)


def _names_used(path: Path) -> set[str]:
    """Every name ``path`` refers to (``x``, ``mod.x``) and every word of its short strings (``__all__``)."""
    used = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 80:
            used.add(node.value)
    return used


def test_core_holds_nothing_only_tests_reach() -> None:
    """The light package a consumer installs carries no function or class that product code never calls."""
    used = set().union(*(_names_used(f) for package in PRODUCT for f in _files(package)))
    defined = {
        node.name: str(f.relative_to(ROOT))
        for f in _files("core")
        for node in ast.parse(f.read_text()).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }
    assert {name: where for name, where in defined.items() if name not in used} == {}
