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


def test_no_flow_file_shadows_a_package() -> None:
    """Prefect loads a deployment's entrypoint as a script, with its folder first on ``sys.path``: a
    ``flows/training.py`` would then be what ``import training`` finds, and every deployed run would crash."""
    shadows = {p.stem for p in (ROOT / "flows").glob("*.py")} & {p.name for p in ROOT.iterdir() if p.is_dir()}
    assert not shadows


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


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The product modules ``path`` imports, lazy and ``TYPE_CHECKING`` imports included: ``from a.b import c`` is
    module ``a.b.c`` where that is a file, else ``a.b``."""
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: ``from . import x``, ``from ..a import x``
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    targets = set()
    for name in found:
        parts = name.split(".")
        while parts and ".".join(parts) not in modules:  # ``import a.b.c`` of a name inside a module
            parts.pop()
        if parts:
            targets.add(".".join(parts))
    return targets


def _import_cycle() -> list[str]:
    """One chain of file imports that comes back to where it started, or [] when the file graph has none."""
    files = {_module_name(f): f for package in PRODUCT for f in _files(package)}
    graph = {m: _imported_modules(f, set(files)) - {m} for m, f in files.items()}
    done: set[str] = set()

    def visit(module: str, chain: list[str]) -> list[str]:
        if module in chain:
            return [*chain[chain.index(module):], module]
        if module in done:
            return []
        for target in sorted(graph[module]):
            if cycle := visit(target, [*chain, module]):
                return cycle
        done.add(module)
        return []

    return next((cycle for module in sorted(graph) if (cycle := visit(module, []))), [])


def test_no_file_imports_one_that_imports_it_back() -> None:
    """Two files that need each other are one module split in two, kept apart by a lazy import: what both need
    belongs in a third file (or the lower one)."""
    assert _import_cycle() == [], f"import cycle: {' -> '.join(_import_cycle())}"
