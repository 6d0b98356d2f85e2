"""The package's shape: dependencies point one way (no import cycles, lazy imports included) and no
module imports another module's private names. Checked on the installed layout (`pip install
--target`), where the stage folders are subpackages of `cdp`, with grimp's import graph."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("installed")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-compile",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative enough for ~100 modules)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def edges(installed) -> dict[str, set[str]]:
    """module -> the cdp modules it imports (lazy imports included), from the installed package."""
    saved = {m: sys.modules.pop(m) for m in [m for m in sys.modules if m == "cdp" or m.startswith("cdp.")]}
    sys.path.insert(0, str(installed))
    try:
        graph = grimp.build_graph("cdp", include_external_packages=False, cache_dir=None)
        return {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    finally:
        sys.path.remove(str(installed))
        for name in [m for m in sys.modules if m == "cdp" or m.startswith("cdp.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_no_import_cycles(edges):
    assert {"cdp.ingest.staging", "cdp.identity.resolve", "cdp.features.views", "cdp.serving.service"} <= set(edges)
    assert _cycles(edges) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_names_imported_across_modules(installed):
    offenders = []
    for path in (installed / "cdp").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cdp"):
                offenders += [
                    f"{path.relative_to(installed)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
    assert offenders == []


# cli -> pipeline -> stages -> workspace/settings: a lower layer never imports a higher one
LAYERS = (
    ("cdp.cli",),
    ("cdp.pipeline", "cdp.retrain"),
    (
        "cdp.ingest",
        "cdp.identity",
        "cdp.features",
        "cdp.privacy",
        "cdp.models",
        "cdp.training",
        "cdp.serving",
        "cdp.featurestore",
        "cdp.engines",
        "cdp.synthetic",
        "cdp.feature_repo",
    ),
    ("cdp.workspace", "cdp.settings", "cdp.atomic", "cdp.generations", "cdp.faults", "cdp.config"),
)


def _layer_of(module: str) -> int | None:
    for rank, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return rank
    return None


def _upward_imports(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in edges.items():
        own = _layer_of(module)
        for other in imported:
            theirs = _layer_of(other)
            if own is not None and theirs is not None and theirs < own:
                found.append(f"{module} -> {other}")
    return sorted(found)


def test_dependencies_point_down_the_layers(edges):
    unlayered = sorted(m for m in edges if _layer_of(m) is None and m != "cdp")
    assert unlayered == [], "give each module a layer in LAYERS"
    assert _upward_imports(edges) == []


def test_the_layer_check_finds_an_upward_import():
    assert _upward_imports({"cdp.training.promote": {"cdp.pipeline"}, "cdp.pipeline": {"cdp.workspace"}}) == [
        "cdp.training.promote -> cdp.pipeline"
    ]
