"""Layering is tested, not hoped for (STYLE.md 10): imports are read with ``ast`` and checked
against the one-way arrows lamina -> runtime -> graph -> drivers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests import archrules

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = archrules.PACKAGES
HEAVY = {"numpy", "matplotlib", "scipy", "pandas"}


def _modules(pkg: str) -> list[Path]:
    return sorted(p for p in (ROOT / pkg).rglob("*.py") if ".venv" not in p.parts)


def _sources(*pkgs: str) -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for pkg in pkgs for p in _modules(pkg)}


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level module, line, at module level) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(n) for n in tree.body}
    for node in tree.body:  # imports under `if TYPE_CHECKING:` count as module level too
        if isinstance(node, ast.If):
            top_level |= {id(n) for n in node.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], node.lineno, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module.split(".")[0], node.lineno, id(node) in top_level))
    return out


@pytest.mark.parametrize("pkg", PACKAGES)
def test_arrows_point_one_way(pkg: str) -> None:
    """lamina -> runtime -> graph -> drivers; in particular drivers never import graph."""
    bad = archrules.arrow_violations(_sources(pkg))
    assert not bad, "imports against the arrows:\n" + "\n".join(bad)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_import_cycle_inside_a_package(pkg: str) -> None:
    cycles = [c for c in archrules.import_cycles(_sources(pkg)) if frozenset(c) not in archrules.CYCLES_ALLOWED]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_allowed_cycles_still_exist() -> None:
    """An allowed cycle that is gone must leave the allow-list (it would hide a new one)."""
    found = {frozenset(c) for pkg in PACKAGES for c in archrules.import_cycles(_sources(pkg))}
    stale = [sorted(c) for c in archrules.CYCLES_ALLOWED if c not in found]
    assert not stale, f"remove from CYCLES_ALLOWED: {stale}"


def test_every_table_has_one_owner() -> None:
    """No SQL names a table outside its owner module (graph/db.py holds the schema)."""
    bad = archrules.table_violations(_sources(*PACKAGES))
    assert not bad, "\n".join(bad)


def test_owner_map_covers_the_schema() -> None:
    import re

    schema = (ROOT / "graph" / "db.py").read_text()
    tables = set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", schema))
    assert tables == set(archrules.TABLE_OWNERS), tables ^ set(archrules.TABLE_OWNERS)


def test_runtime_and_bench_use_graphs_public_names() -> None:
    import graph

    bad = archrules.private_graph_imports(_sources("runtime", "bench"), graph.__all__)
    assert not bad, "\n".join(bad)


# ---- each rule fails on a planted violation ---------------------------------------------------


def test_rule_arrows_fails_on_a_driver_importing_graph() -> None:
    bad = archrules.arrow_violations({"drivers/planted.py": "from graph import Store\n"})
    assert bad == ["drivers/planted.py:1 imports graph"]


def test_rule_cycles_fails_on_a_planted_cycle() -> None:
    planted = {"graph/a.py": "from graph.b import x\n", "graph/b.py": "def f():\n    from graph import a\n",
               "graph/__init__.py": "", "graph/c.py": "import graph.a\n"}
    assert archrules.import_cycles(planted) == [["graph.a", "graph.b"]]


def test_rule_tables_fails_on_sql_outside_the_owner() -> None:
    planted = {"graph/store.py": 'def f(db):\n    db.execute("DELETE FROM manifests WHERE digest = ?")\n'
                                 '    db.query(f"SELECT * FROM refs WHERE x = {1}")\n',
               "graph/images.py": 'SQL = "INSERT INTO manifests (digest) VALUES (?)"\n',
               "graph/layers.py": 'SQL = "SELECT count(*) FROM images WHERE top_layer = ?"\n'
                                  'W = "UPDATE images SET top_layer = NULL"\n'}
    assert archrules.table_violations(planted) == [
        "graph/store.py:2 writes table manifests (owner: graph.images)",
        "graph/store.py:3 reads table refs (owner: graph.references)",
        "graph/layers.py:2 writes table images (owner: graph.images)",  # an allowed read, never a write
    ]


def test_rule_public_names_fails_on_a_private_import() -> None:
    planted = {"runtime/planted.py": "from graph.store import Store\nfrom graph import Store, _x\n"
                                     "from drivers.base import RefCounts\nfrom drivers.sys.flock import Flock\n",
               "bench/micro/test_x.py": "from graph.layers import LayerStore\n"}
    assert archrules.private_graph_imports(planted, ["Store"]) == [
        "runtime/planted.py:1 imports graph.store (use graph's public names)",
        "runtime/planted.py:2 imports graph._x, not public",
        "runtime/planted.py:3 imports drivers.base (drivers' face or drivers.sys only)",
    ]


@pytest.mark.parametrize("pkg", ["lamina", "runtime", "graph", "drivers"])
def test_no_heavy_imports_at_module_level(pkg: str) -> None:
    """numpy and matplotlib are the bench's; they must stay off the CLI's start-up path."""
    bad = []
    for path in _modules(pkg):
        for mod, line, _top in _imports(path):
            if mod in HEAVY:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


def test_environment_read_only_in_config() -> None:
    """Configuration comes from one place; library code takes parameters."""
    bad = []
    for pkg in ["graph", "drivers", "runtime", "lamina"]:
        for path in _modules(pkg):
            if path == ROOT / "lamina" / "config.py":
                continue
            text = path.read_text()
            for needle in ("os.environ", "os.getenv("):
                if needle in text:
                    bad.append(f"{path.relative_to(ROOT)} uses {needle}")
    assert not bad, "\n".join(bad)


def test_driver_protocol_methods_document_their_contract() -> None:
    """Every method of the graphdriver protocol (both halves) states Requires/Effect/Raises/Repeat."""
    tree = ast.parse((ROOT / "drivers" / "base.py").read_text())
    missing = []
    for name in ("GraphDriver", "DiffDriver"):
        proto = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
        methods = [fn for fn in proto.body if isinstance(fn, ast.FunctionDef)]
        assert methods, name
        for fn in methods:
            doc = ast.get_docstring(fn) or ""
            if fn.name in {"status", "exists"}:
                continue  # total functions: documented as never raising
            for part in ("Requires", "Effect", "Raises", "Repeat"):
                if part + ":" not in doc:
                    missing.append(f"{name}.{fn.name} lacks {part}:")
    assert not missing, "\n".join(missing)


def test_capabilities_are_protocols_not_getattr() -> None:
    """Optional driver abilities are ``drivers.base`` protocols found with ``isinstance``; a
    ``getattr``/``hasattr`` on a driver with a default would silently match nothing (the old
    ``ids`` lookup disabled the orphan check that way)."""
    bad = []
    for pkg in ("graph", "runtime", "lamina"):
        for path in _modules(pkg):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in ("getattr", "hasattr") and node.args
                        and "driver" in ast.unparse(node.args[0])):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert not bad, "\n".join(bad)


def test_graph_exports_an_explicit_public_api() -> None:
    import graph

    assert "Store" in graph.__all__
    for name in graph.__all__:
        assert hasattr(graph, name), name
