"""The product (controller/, scorer/, proto/) never imports the test and benchmark harness or the benchmarks: they
import the product, never the other way round (docs: architecture, "The shape")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("controller", "scorer", "proto")
NOT_FROM_THE_PRODUCT = ("harness", "loadtests")


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", PRODUCT)
def test_the_product_does_not_import_the_harness_or_the_benchmarks(package: str) -> None:
    offending = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in _imported(path)
        if name.split(".")[0] in NOT_FROM_THE_PRODUCT
    }
    assert not offending, sorted(offending)


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from harness.child import Child\n    import loadtests.routing.cli\n")
    assert _imported(module) == {"harness.child", "loadtests.routing.cli"}
