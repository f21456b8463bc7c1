"""The shape of the package: pillars as folders, layers that import one way, no cycles.

The import graph is read from the source (every import, at module level or inside a
function, ``TYPE_CHECKING`` blocks included), so a hidden function-level import counts.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import phalanx

SRC = Path(phalanx.__file__).parent
TOP_LEVEL_LIMIT = 12
# bottom to top: a module may import its own layer and those below it, never above
LAYERS: list[set[str]] = [
    {"ids", "exceptions", "redaction", "cost", "events", "journal", "_util"},
    {"providers"},
    {"agents"},  # better agents: spec, styles, hooks, context, tools, workspace
    {"plan"},  # a plan is made of agent specs and tasks
    {"comms"},
    {"runtime"},  # more agents: never imports status or cli
    {"status"},  # visibility: reads events and the journal
    {"api", "patterns", "testing", "evals"},
    {"cli", "__main__", ""},  # "" is phalanx/__init__.py
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in SRC.rglob("*.py"):
        rel = p.relative_to(SRC.parent).with_suffix("")
        if "examples" in rel.parts:
            continue
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = p
    return out


MODULES = modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "phalanx")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "phalanx":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                yield sub if sub in MODULES else target


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges[name] = {t for t in _imports(name, path) if t in MODULES and t != name}
    return edges


def pillar(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer() -> None:
    assert {pillar(m) for m in MODULES} - set(RANK) == set()


def test_top_level_is_small() -> None:
    top = [p.name for p in SRC.glob("*.py")]
    assert len(top) <= TOP_LEVEL_LIMIT, sorted(top)


def test_layers_import_one_way() -> None:
    wrong = sorted(
        f"{a} -> {b}"
        for a, targets in graph().items()
        for b in targets
        if RANK[pillar(b)] > RANK[pillar(a)]
    )
    assert wrong == []


def test_plan_and_runtime_rules_named_in_the_design() -> None:
    edges = graph()
    for a, targets in edges.items():
        for b in targets:
            if pillar(a) == "plan":
                assert pillar(b) not in {"runtime", "comms", "status", "cli", "api"}, (a, b)
            if pillar(a) == "runtime":
                assert pillar(b) not in {"status", "cli"}, (a, b)


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_checker_sees_cycles_and_function_level_imports() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    src = "def f():\n    from .agents.spec import AgentSpec\n"
    tree = ast.parse(src)
    found = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert found and found[0].module == "agents.spec"


def test_no_package_name_hides_one_of_its_modules() -> None:
    """``from .x import x`` in a package's ``__init__`` makes ``pkg.x`` the function, not the
    module (``phalanx.status.fold.render_text`` would fail): no exported name is a module's."""
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(phalanx.__path__, "phalanx."):
        if not info.ispkg or ".examples" in info.name:
            continue
        pkg = importlib.import_module(info.name)
        modules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
        assert modules & set(getattr(pkg, "__all__", ())) == set(), info.name
