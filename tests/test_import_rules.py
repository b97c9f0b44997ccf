"""Imports flow one way (DESIGN.md, rule 12), read from the source.

Modules are parsed, not imported, so an import inside a function or under TYPE_CHECKING counts
as well as one at the top:

- kernels/ is the leaf: torch, the standard library and its own modules, never `ollamapy`
  (the loader turns GGUF bytes into the kernels' rows, `ollamapy/loading/gguf_rows.py`);
- the package reaches kernels/ only through one door, `ollamapy/engine/kernels.py`;
- engine/ imports nothing of the package outside itself: it never reads files or foreign
  names, so a loader (or anything above it) is never imported from the model;
- loading/ imports of the package only engine/, text/ and itself (no runner, scheduler, worker,
  loaded, server or store), and of the engine only the models and configs it builds, RoPE's
  factor math for configs, the kernels' door and the tensor-parallel split (`LOADER_SEES`);
- store/ and text/ import no torch (here for text, by importing all of it; the store runs
  without torch in tests/store/test_no_torch.py);
- nothing imports `ollamapy.server` but the server itself and the `ollamapy serve` command;
- the server process imports no torch: the engines, in their own processes, do.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ollamapy"
KERNELS = REPO / "kernels"
DOOR = PACKAGE / "engine" / "kernels.py"
SERVE_COMMAND = PACKAGE / "cli.py"  # `ollamapy serve` starts the app: the one way in
ENGINE = PACKAGE / "engine"
LOADING = PACKAGE / "loading"
# what the loader may import of the engine: the models and configs it builds (decoder and BERT
# encoder), RoPE's factor math (read into configs), the kernels' door (the fast path's rows)
# and the tensor-parallel split (a rank's part is built from its share of the rows)
LOADER_SEES = ("ollamapy.engine.config", "ollamapy.engine.model", "ollamapy.engine.bert",
               "ollamapy.engine.rope", "ollamapy.engine.kernels",
               "ollamapy.engine.tensor_parallel")


def module_name(path: Path) -> str:
    """The dotted name a file is imported as (kernels/ is installed as `ollamapy_kernels`)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "kernels":
        parts[0] = "ollamapy_kernels"
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in a file; `from a import b` gives both
    `a` and `a.b` (b may be a module)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield node.lineno, module
            yield from ((node.lineno, f"{module}.{alias.name}") for alias in node.names)


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(files: list[Path], forbidden) -> list[str]:
    return sorted({f"{path.relative_to(REPO)}:{line}: {name}" for path in files
                   for line, name in imported(path) if forbidden(name)})


def python_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def test_the_scan_resolves_relative_imports() -> None:
    assert ("ollamapy_kernels.rows" in {name for _, name in imported(KERNELS / "policy.py")})
    assert ("ollamapy_kernels.policy.pack" in {name for _, name in imported(DOOR)})
    assert module_name(PACKAGE / "engine" / "__init__.py") == "ollamapy.engine"


def test_kernels_import_only_torch_the_standard_library_and_each_other() -> None:
    files = python_files(KERNELS)
    assert KERNELS / "policy.py" in files and not (KERNELS / "__init__.py").exists()

    def foreign(name: str) -> bool:
        top = name.split(".")[0]
        return not (top in ("torch", "ollamapy_kernels") or top in sys.stdlib_module_names)

    assert violations(files, foreign) == []


def test_the_package_reaches_kernels_only_through_the_engine_door() -> None:
    files = [f for f in python_files(PACKAGE) if f != DOOR]
    assert violations(files, lambda name: within(name, "ollamapy_kernels")) == []
    assert violations([DOOR], lambda name: within(name, "ollamapy_kernels")) != []


def test_the_engine_imports_nothing_of_the_package_outside_itself() -> None:
    def outside(name: str) -> bool:
        return within(name, "ollamapy") and not within(name, "ollamapy.engine")

    assert violations(python_files(ENGINE), outside) == []


def test_the_loader_imports_only_the_engine_text_and_itself() -> None:
    def outside(name: str) -> bool:
        return within(name, "ollamapy") and not any(
            within(name, f"ollamapy.{package}") for package in ("engine", "text", "loading"))

    assert violations(python_files(LOADING), outside) == []


def test_the_loader_sees_only_the_engines_models_configs_and_door() -> None:
    files = python_files(LOADING)

    def unlisted(name: str) -> bool:  # `from ollamapy.engine import x` is judged by its x
        return (within(name, "ollamapy.engine") and name != "ollamapy.engine"
                and not any(within(name, module) for module in LOADER_SEES))

    assert violations(files, unlisted) == []
    used = {name for path in files for _, name in imported(path)}
    assert [m for m in LOADER_SEES if not any(within(name, m) for name in used)] == []


@pytest.mark.parametrize("package", ["store", "text"])
def test_store_and_text_do_not_import_torch(package: str) -> None:
    assert violations(python_files(PACKAGE / package), lambda name: within(name, "torch")) == []


def torch_modules_after_importing(modules: list[str]) -> str:
    """What of torch a fresh interpreter holds once it has imported modules."""
    child = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    result = subprocess.run([sys.executable, "-P", "-c", child], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_text_runs_without_torch() -> None:
    """The static check sees direct imports; this one sees what text pulls in."""
    modules = [module_name(f) for f in python_files(PACKAGE / "text")]
    assert torch_modules_after_importing(modules) == "[]"


def test_the_server_process_runs_without_torch() -> None:
    """The HTTP process: the app, the scheduler, the engine processes' server half and the
    command that serves them (less resident memory, a faster start)."""
    modules = ["ollamapy.server.app", "ollamapy.scheduler", "ollamapy.runner_process",
               "ollamapy.cli"]
    assert torch_modules_after_importing(modules) == "[]"


def test_nothing_imports_the_server_but_the_serve_command() -> None:
    files = [f for f in python_files(PACKAGE) + python_files(KERNELS)
             if not f.is_relative_to(PACKAGE / "server") and f != SERVE_COMMAND]
    assert violations(files, lambda name: within(name, "ollamapy.server")) == []
