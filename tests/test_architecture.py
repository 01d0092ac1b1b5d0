"""Layering is tested, not hoped for (STYLE.md 10): imports are read with ``ast`` and checked
against the one-way arrows lamina -> runtime -> graph -> drivers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["lamina", "runtime", "graph", "drivers", "bench"]
# what each package may import from the project
ALLOWED = {
    "drivers": {"drivers"},
    "graph": {"graph", "drivers"},
    "runtime": {"runtime", "graph", "drivers"},
    "lamina": {"lamina", "runtime", "graph", "drivers"},
    "bench": {"bench", "lamina", "runtime", "graph", "drivers"},
}
HEAVY = {"numpy", "matplotlib", "scipy", "pandas"}


def _modules(pkg: str) -> list[Path]:
    return sorted(p for p in (ROOT / pkg).rglob("*.py") if ".venv" not in p.parts)


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
    bad = []
    for path in _modules(pkg):
        for mod, line, _ in _imports(path):
            if mod in PACKAGES and mod not in ALLOWED[pkg]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "imports against the arrows:\n" + "\n".join(bad)


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
