"""benchmarks/ and scripts/ are not imported by the suite; their imports of the package still
name modules and names that exist (a rename in the package breaks no benchmark silently)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.test_import_rules import REPO, imported, within

SCRIPTS = sorted((REPO / "benchmarks").glob("*.py")) + sorted((REPO / "scripts").glob("*.py"))


def _resolves(name: str) -> bool:
    """A dotted name is a module, or a name defined in its parent module."""
    try:
        importlib.import_module(name)
        return True
    except ModuleNotFoundError:
        module, _, attribute = name.rpartition(".")
        return hasattr(importlib.import_module(module), attribute)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_package_imports_resolve(path: Path) -> None:
    names = {name for _, name in imported(path)
             if within(name, "ollamapy") or within(name, "ollamapy_kernels")}
    assert [name for name in sorted(names) if not _resolves(name)] == []


def test_the_scan_sees_the_scripts() -> None:
    assert len(SCRIPTS) > 5
    assert any(within(name, "ollamapy")
               for _, name in imported(REPO / "benchmarks" / "bench_families.py"))
