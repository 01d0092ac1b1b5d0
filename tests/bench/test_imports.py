"""The bench's modules import one another without cycles (counting imports inside functions
too): a cycle such as compare <-> plots makes each module's meaning depend on the other's."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for path in sorted(BENCH.rglob("*.py")):
        rel = path.relative_to(BENCH.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        deps = g.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("bench.")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "bench":
                    deps |= {f"bench.{a.name}" for a in node.names}
                elif node.module.startswith("bench."):
                    deps.add(node.module)
        deps.discard(name)
    # a dependency on a package means its __init__; on a module's submodule, that module
    return {k: {d for d in v if d in g or d.rsplit(".", 1)[0] in g} for k, v in g.items()}


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)
    return found


def test_bench_has_no_import_cycles() -> None:
    g = _graph()
    assert "bench.plots" in g and "bench.compare" in g  # the walk found the package
    assert not _cycles(g), "import cycles: " + "; ".join(" -> ".join(c) for c in _cycles(g))


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
