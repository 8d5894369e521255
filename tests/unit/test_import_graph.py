"""The package's import graph: no circles, and arrows only one way (protocol <- learn <- detect <- edge, cloud, bench).

Every ``import``/``from ... import`` anywhere in a module counts, including those inside
functions and under ``if TYPE_CHECKING:``: a circle hidden by a local import is still a
circle for a reader, and breaks as soon as someone moves the import to the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pipeline"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The module ``name`` refers to (a module, or a package's ``__init__``), or None if not ours."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """Our modules that ``module`` imports, anywhere in its file."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None and resolved != module:
                found.add(resolved)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, colours)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt, BLACK) == GREY:
                return [*stack[stack.index(nxt):], nxt]
            if colour.get(nxt) == WHITE and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_hidden_in_a_function() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_import_is_seen_including_local_and_type_checking_ones() -> None:
    # pipeline.detect.base imports DetectorPrior under TYPE_CHECKING only
    assert "pipeline.learn.sync_stats" in GRAPH["pipeline.detect.base"]


def test_no_import_circle_in_the_package() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


LOWER_LAYERS = ("pipeline.detect", "pipeline.learn")
FORBIDDEN = ("pipeline.edge", "pipeline.cloud", "pipeline.mqtt", "pipeline.config", "pipeline.services", "pipeline.bench")


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("layer", LOWER_LAYERS)
def test_detection_and_learning_import_no_io_settings_or_node(layer: str) -> None:
    wrong = sorted(
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        if _within(m, layer)
        for t in targets
        if any(_within(t, f) for f in FORBIDDEN)
    )
    assert wrong == []


def test_learning_primitives_import_no_detection() -> None:
    wrong = sorted(
        f"{m} -> {t}" for m, ts in GRAPH.items() if _within(m, "pipeline.learn") for t in ts if _within(t, "pipeline.detect")
    )
    assert wrong == []


@pytest.mark.parametrize("layer", ["pipeline.protocol"])
def test_the_protocol_imports_nothing_above_it(layer: str) -> None:
    above = ("pipeline.learn", "pipeline.detect", "pipeline.edge", "pipeline.cloud", "pipeline.bench")
    wrong = sorted(
        f"{m} -> {t}" for m, ts in GRAPH.items() if _within(m, layer) for t in ts if any(_within(t, a) for a in above)
    )
    assert wrong == []


def test_the_cloud_imports_nothing_of_the_edge() -> None:
    wrong = sorted(
        f"{m} -> {t}" for m, ts in GRAPH.items() if _within(m, "pipeline.cloud") for t in ts if _within(t, "pipeline.edge")
    )
    assert wrong == []
