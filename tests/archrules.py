"""The checkers behind ``tests/test_architecture.py``: each reads sources (``{path: text}``, paths
relative to the repository, e.g. ``graph/store.py``) and returns its violations as lines. They
take sources rather than the tree so that a test can feed them a planted violation and see each
rule fail (a check that cannot fail is a defect)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterable, Mapping

PACKAGES = ["lamina", "runtime", "graph", "drivers", "bench"]

# what each package may import from the project (the arrows lamina -> runtime -> graph -> drivers)
ARROWS = {
    "drivers": {"drivers"},
    "graph": {"graph", "drivers"},
    "runtime": {"runtime", "graph", "drivers"},
    "lamina": {"lamina", "runtime", "graph", "drivers"},
    "bench": {"bench", "lamina", "runtime", "graph", "drivers"},
}

# every table of lamina.db and the one module that writes and reads it (graph/db.py holds the
# schema and its migrations, and may name them all)
TABLE_OWNERS = {
    "layers": "graph.layers",
    "pending": "graph.layers",
    "layer_blobs": "graph.layer_blobs",
    "images": "graph.images",
    "manifests": "graph.images",
    "refs": "graph.references",
    "containers": "graph.containers",
    "leases": "graph.leases",
    "lease_resources": "graph.leases",
    "networks": "graph.networks",
    "network_endpoints": "graph.networks",
    "volumes": "graph.volumes",
    "volume_users": "graph.volumes",
}
SCHEMA_MODULE = "graph.db"

# reads (SELECT only, never writes) of another module's table, each with its reason
READS_ALLOWED = {
    ("graph.layer_blobs", "layers"): "live()/prune() keep the rows of registered layers (one query)",
    ("graph.layers", "images"): "references(): one atomic count of the rows that need a layer",
    ("graph.layers", "containers"): "references() and recover(): RW layers and layers under containers",
    ("graph.layers", "lease_resources"): "references(): leased layers count as needed",
    ("graph.networks", "containers"): "remove(): names of running members, in the delete's transaction",
}

# import cycles inside a package that are known and owned by a piece of work in flight
CYCLES_ALLOWED: dict[frozenset[str], str] = {}  # none now (runtime's went with the split, bench's with its split)

# (path prefix, module or "" for any) of bench/runtime that may reach below graph's public face
PRIVATE_IMPORTS_ALLOWED = {
    ("bench/micro/", ""): "micro benchmarks time internals (the applier, the differ, mounts) on purpose",
    ("bench/phases.py", "graph.pull"): "A/B runs drive an older base revision, whose pull lived in graph.pull",
    ("bench/phases.py", "graph.registry"): "A/B runs drive an older base revision (graph.registry)",
    ("bench/worker.py", "drivers.tar"): "the test-only slowdown knob of the A/B instrument sits in the applier",
}
BOTTOM_LAYER = "drivers.sys"   # libc, locks, durable writes, mounts: shared by every package


def module_name(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.AST) -> Iterable[tuple[str, list[str], int]]:
    """(module, imported names, line) for every absolute import, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names], node.lineno


def arrow_violations(sources: Mapping[str, str]) -> list[str]:
    """Imports against the arrows (e.g. drivers importing graph)."""
    bad = []
    for path, text in sources.items():
        pkg = path.split("/")[0]
        for mod, _names, line in _imports(ast.parse(text)):
            top = mod.split(".")[0]
            if top in PACKAGES and top not in ARROWS[pkg]:
                bad.append(f"{path}:{line} imports {mod}")
    return bad


def import_cycles(sources: Mapping[str, str]) -> list[list[str]]:
    """Cycles of imports (any depth, lazy ones included) among the modules of one package."""
    mods = {module_name(p): text for p, text in sources.items()}

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    for m, text in mods.items():
        out = set()
        for mod, names, _line in _imports(ast.parse(text)):
            targets = [f"{mod}.{n}" if f"{mod}.{n}" in mods else mod for n in names] or [mod]
            out |= {r for r in map(resolve, targets) if r is not None}
        edges[m] = {o for o in out if o != m and o.split(".")[0] == m.split(".")[0]}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


_SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|WITH|REPLACE|DROP|ALTER)\b", re.I)
_WRITE = r"(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|UPDATE(?:\s+OR\s+\w+)?|DELETE\s+FROM|DROP\s+TABLE|ALTER\s+TABLE|CREATE\s+TABLE(?:\s+IF\s+NOT\s+EXISTS)?)"
_NAMED = r"(?:FROM|INTO|UPDATE|JOIN|TABLE)"


def _sql_strings(tree: ast.AST) -> Iterable[tuple[str, int]]:
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
        if text and _SQL_START.match(text):
            yield text, node.lineno


def table_violations(sources: Mapping[str, str]) -> list[str]:
    """SQL naming a table outside its owner module: any write, and reads not in READS_ALLOWED."""
    bad = []
    for path, text in sources.items():
        mod = module_name(path)
        if mod == SCHEMA_MODULE:
            continue
        for sql, line in _sql_strings(ast.parse(text)):
            for table, owner in TABLE_OWNERS.items():
                if owner == mod:
                    continue
                if re.search(rf"\b{_WRITE}\s+{table}\b", sql, re.I):
                    bad.append(f"{path}:{line} writes table {table} (owner: {owner})")
                elif re.search(rf"\b{_NAMED}\s+{table}\b", sql, re.I) and (mod, table) not in READS_ALLOWED:
                    bad.append(f"{path}:{line} reads table {table} (owner: {owner})")
    return list(dict.fromkeys(bad))  # an f-string's pieces are visited with it: report once


def private_graph_imports(sources: Mapping[str, str], public: Iterable[str]) -> list[str]:
    """In runtime and bench: imports of graph other than its public names (``graph.__all__``),
    and of drivers other than the package's face and the bottom layer ``drivers.sys``."""
    public = set(public)
    bad = []
    for path, text in sources.items():
        if path.split("/")[0] not in ("runtime", "bench"):
            continue
        for mod, names, line in _imports(ast.parse(text)):
            if any(path.startswith(p) and m in ("", mod) for p, m in PRIVATE_IMPORTS_ALLOWED):
                continue
            if mod == "graph" or mod.startswith("graph."):
                if mod != "graph":
                    bad.append(f"{path}:{line} imports {mod} (use graph's public names)")
                else:
                    bad += [f"{path}:{line} imports graph.{n}, not public" for n in names if n not in public]
            elif mod.startswith("drivers.") and not (mod == BOTTOM_LAYER or mod.startswith(BOTTOM_LAYER + ".")):
                bad.append(f"{path}:{line} imports {mod} (drivers' face or {BOTTOM_LAYER} only)")
    return bad
