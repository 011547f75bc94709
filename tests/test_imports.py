"""Which code may import which: `workers` (and the benchmarks) import `service`, never the
reverse; nothing installed imports the tests; nothing edits `sys.path`.

Read from the source (every import statement, also those inside functions), so a lazy
import cannot slip a dependency past the check.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALLED = ("service", "workers", "benchmarks")


def _modules(*roots: str) -> Iterator[tuple[Path, ast.Module]]:
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def _imported(tree: ast.Module) -> Iterator[str]:
    """Top-level package of every absolute import in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize(
    ("root", "forbidden"),
    [("service", {"workers", "benchmarks", "tests"}), ("workers", {"benchmarks", "tests"}), ("benchmarks", {"tests"})],
)
def test_dependencies_point_one_way(root: str, forbidden: set[str]):
    wrong = {
        f"{path.relative_to(REPO)} imports {name}"
        for path, tree in _modules(root)
        for name in _imported(tree)
        if name in forbidden
    }
    assert not wrong, sorted(wrong)


def test_nothing_touches_sys_path():
    edits = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path, tree in _modules(*INSTALLED, "tests")
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    assert not edits, edits


def test_the_cli_reaches_workers_and_the_benchmark_through_their_entry_points():
    import pkgutil

    from service import cli

    assert callable(pkgutil.resolve_name(cli.WORKER_ENTRY_POINT))
    assert callable(pkgutil.resolve_name(cli.BENCH_ENTRY_POINT))
