"""The package's layers: every import runs down a layer or stays in its own, and no modules import each other.

The layers, bottom to top, are the ones docs/architecture.md describes. A module that is in no layer fails the
test, so a new module has to be given its place. The package's face, ``benchmark/__init__.py``, is in none: it
holds the version and registers rnnbench's own cells and tasks by importing their declarations.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "benchmark"
LAYERS = [
    ("names", ["schema", "catalog", "files", "stats", "errors", "registry"]),
    ("settings and the store", ["config", "store", "notebook"]),
    ("models and tasks", ["data", "losses", "loop", "fused", "kernel_choice", "plugins", "cells", "models", "tasks",
                          "stacked_loop"]),
    ("training and runs", ["train", "stacked", "checkpoint", "plots", "tracking"]),
    ("tuning and the commands' work", ["tuning", "champion", "served_model", "confirm", "reproduce", "predict",
                                       "server", "dashboard", "perf"]),
    ("the report", ["report"]),
    ("commands", ["bench", "commands", "cli", "__main__"]),
]
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = ["benchmark", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FACE = "benchmark"


def modules() -> dict[str, Path]:
    return {name: path for path in PACKAGE.rglob("*.py") if (name := module_name(path)) != FACE}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in it (functions included)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "benchmark"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "benchmark":
                target = node.module
            else:
                continue
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known
            found |= submodules or {target}
    return {target for target in found if target in known and target != name}


def layer_of(name: str) -> int:
    top = name.split(".")[1] if "." in name else name
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS here and to docs/architecture.md")


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def test_every_import_runs_down_or_stays_in_its_layer():
    upward = [f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
              for name, targets in graph().items() for target in sorted(targets) if layer_of(target) > layer_of(name)]
    assert upward == []


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle found by a depth-first walk, each as the path that closes it."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    found = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_circles():
    assert circles(graph()) == []


def test_the_checker_sees_a_circle_and_imports_of_every_form():
    """The two tests above would pass on a checker that sees nothing: show that it sees."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    edges = graph()
    assert "benchmark.schema" in edges["benchmark.store"]
    assert "benchmark.train" in edges["benchmark.tuning.objective"]  # an import inside a function counts too
    assert "benchmark.fused" in edges["benchmark.kernel_choice"]  # `from . import fused`
    assert layer_of("benchmark.report.sections.digits") > layer_of("benchmark.predict")


def test_no_module_is_longer_than_the_limit():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
