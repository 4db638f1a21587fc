"""Import layering: the import-linter contracts in pyproject.toml hold, and no headforge module is part of an
import cycle (function-level and TYPE_CHECKING imports included). Both checks are shown to fail on a small
package that breaks them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import grimp
import pytest

import headforge

ROOT = Path(headforge.__file__).resolve().parents[1]


def lint_imports(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run import-linter on ``config`` with ``cwd`` first on the import path (so this checkout is analysed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, str(config), "--no-cache", "--no-logo"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def ignored_imports(pyproject: Path) -> set[tuple[str, str]]:
    """The (importer, imported) pairs the acyclic contract ignores (one list for both checks)."""
    contracts = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]
    pairs = set()
    for contract in contracts:
        if contract["type"] == "acyclic_siblings":
            for expression in contract.get("ignore_imports", []):
                importer, imported = (part.strip() for part in expression.split("->"))
                pairs.add((importer, imported))
    return pairs


def import_cycles(package: str, ignore: set[tuple[str, str]] = frozenset()) -> list[list[str]]:
    """Strongly connected components of more than one module in ``package``'s import graph (Tarjan)."""
    graph = grimp.build_graph(package, cache_dir=None)  # counts function-level and TYPE_CHECKING imports
    edges = {m: sorted(x for x in graph.find_modules_directly_imported_by(m)
                       if x in graph.modules and (m, x) not in ignore) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:  # recursion depth <= number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    return cycles


def test_import_contracts_hold():
    result = lint_imports(ROOT / "pyproject.toml", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout, result.stdout  # both contracts ran


def test_no_import_cycles():
    cycles = import_cycles("headforge", ignored_imports(ROOT / "pyproject.toml"))
    assert cycles == [], f"import cycles among headforge modules: {cycles}"


@pytest.fixture
def bad_package(tmp_path, monkeypatch):
    """``badpkg``: low imports high inside a function, high imports low under TYPE_CHECKING (a cycle)."""
    pkg = tmp_path / "badpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "high.py").write_text(textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from badpkg import low
    """))
    (pkg / "low.py").write_text(textwrap.dedent("""
        def f():
            from badpkg.high import TYPE_CHECKING
            return TYPE_CHECKING
    """))
    (pkg / "free.py").write_text("import badpkg.low\n")
    (tmp_path / "contracts.toml").write_text(textwrap.dedent("""
        [tool.importlinter]
        root_package = "badpkg"

        [[tool.importlinter.contracts]]
        name = "high above low"
        type = "layers"
        layers = ["badpkg.high", "badpkg.low"]

        [[tool.importlinter.contracts]]
        name = "acyclic"
        type = "acyclic_siblings"
        ancestors = ["badpkg"]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_checks_catch_a_cycle_and_an_upward_import(bad_package):
    assert import_cycles("badpkg") == [["badpkg.high", "badpkg.low"]]
    assert import_cycles("badpkg", {("badpkg.low", "badpkg.high")}) == []
    result = lint_imports(bad_package / "contracts.toml", bad_package)
    assert result.returncode != 0
    assert "0 kept, 2 broken" in result.stdout, result.stdout
