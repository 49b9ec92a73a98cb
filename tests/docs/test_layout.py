"""The package's layout stays one a reader can hold in their head: no import cycle among the
modules of e2e/ (every import counts, also inside functions and under TYPE_CHECKING), no
module of 800 lines or more, and the layers import downwards only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "e2e"
MAX_LINES = 800


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the e2e modules it imports. ``from a import b`` counts as an import of the
    module ``a.b`` if there is one, else of ``a``; a parent package is not an import of its
    children's importers."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in mods)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    if full in mods:
                        graph[name].add(full)
                    elif base in mods:
                        graph[name].add(base)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_e2e() -> None:
    graph = import_graph()
    assert len(graph) > 80 and graph["e2e.relay.sqlite"] >= {"e2e.relay.store"}
    assert cycles(graph) == []


def test_no_module_of_800_lines_or_more() -> None:
    sizes = {m: len(p.read_text().splitlines()) for m, p in _modules().items()}
    assert max(sizes.values()) < MAX_LINES, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_layers_import_downwards() -> None:
    """The core and the shared formats know nothing of the service or the client; the relay
    store's interface knows nothing of its backends; the service never imports the client."""
    graph = import_graph()
    mods = _modules()
    entry = ("e2e.demo", "e2e.__main__", "e2e.bench")  # command-line entry points use it all
    core = [m for m, p in mods.items() if p.parent == PACKAGE and p.name != "__init__.py"]
    core = [m for m in core if m not in entry]
    for m in [*core, *(m for m in graph if m.startswith("e2e.platform"))]:
        reached = _reaches(graph, m)
        assert not any(r.startswith(("e2e.relay", "e2e.client")) for r in reached), m
    assert not _reaches(graph, "e2e.relay.store") & {"e2e.relay.sqlite", "e2e.relay.postgres"}
    for m in (m for m in graph if m.startswith("e2e.relay")):
        assert not any(r.startswith("e2e.client") for r in _reaches(graph, m)), m
