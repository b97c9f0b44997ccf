"""The repository root never shadows a package from the index.

A Python started in the root (`python`, `python -c`, `python -m pytest`) puts the root first on
`sys.path`. transformers imports PyPI's `kernels` whenever `find_spec("kernels")` finds one, so
a regular package named `kernels` in the root broke every transformers oracle once. Our
`kernels/` folder is therefore a namespace portion (no `__init__.py`), installed as
`ollamapy_kernels`: a regular package of the same name anywhere on the path wins over it, and
transformers treats a bare namespace as "not installed".
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])

# Run with the repository root as the working directory and first on sys.path (`-c` puts it
# there): transformers' activations, then a tiny Llama forward, the way the oracles build them.
CHILD = """
import importlib.util
import sys
assert sys.path[0] == "", sys.path[:3]
import transformers.activations
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils.import_utils import is_kernels_available
config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=1)
logits = LlamaForCausalLM(config).eval()(torch.tensor([[1, 2, 3]])).logits
assert logits.shape == (1, 3, 32), logits.shape
print("kernels available:", is_kernels_available())
spec = importlib.util.find_spec("kernels")
print("kernels origin:", spec.origin if spec else None)
"""


def top_level_entries(root: Path) -> dict[str, Path]:
    """What `import NAME` finds in `root` as a regular package or a module."""
    found = {}
    for entry in root.iterdir():
        if entry.is_dir() and (entry / "__init__.py").exists():
            found[entry.name] = entry
        elif entry.is_file() and entry.suffix == ".py":
            found[entry.stem] = entry
    return found


def test_no_root_entry_has_the_name_of_an_installed_distribution() -> None:
    installed = importlib.metadata.packages_distributions()  # top-level name → distributions
    clashes = {name: installed[name] for name in top_level_entries(REPO)
               if name in installed and installed[name] != ["ollamapy"]}
    assert clashes == {}


def test_kernels_folder_is_a_namespace_portion_installed_as_ollamapy_kernels() -> None:
    assert (REPO / "kernels").is_dir() and not (REPO / "kernels" / "__init__.py").exists()
    spec = importlib.util.find_spec("ollamapy_kernels.policy")
    assert spec is not None and Path(spec.origin) == REPO / "kernels" / "policy.py"


def test_the_suite_does_not_see_the_root_as_kernels() -> None:
    spec = importlib.util.find_spec("kernels")
    if spec is not None:  # PyPI's package (transformers >= 5.25 depends on it)
        assert spec.origin is not None and Path(spec.origin).parent != REPO / "kernels"


def site_without_kernels(tmp_path: Path) -> Path:
    """A site directory holding everything installed here except PyPI's `kernels`."""
    site = tmp_path / "site-packages"
    site.mkdir()
    for entry in SITE_PACKAGES.iterdir():
        if entry.name == "kernels" or (entry.name.startswith("kernels-")
                                       and entry.name.endswith(".dist-info")):
            continue
        (site / entry.name).symlink_to(entry)
    return site


def run_in_root(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)  # hang guard; the child takes seconds


@pytest.mark.skipif(importlib.util.find_spec("kernels") is None,
                    reason="PyPI's kernels is not installed in this environment")
def test_transformers_works_from_the_root_with_pypi_kernels_installed() -> None:
    result = run_in_root([sys.executable, "-c", CHILD])
    assert result.returncode == 0, result.stdout + result.stderr
    origin = result.stdout.split("kernels origin: ")[1].strip()
    assert Path(origin).is_relative_to(SITE_PACKAGES), origin  # PyPI's, not ours
    assert "kernels available: True" in result.stdout


def test_transformers_works_from_the_root_without_pypi_kernels(tmp_path: Path) -> None:
    site = site_without_kernels(tmp_path)
    # -S: no site-packages but the one given (with its .pth files: the editable install)
    prelude = f"import site; site.addsitedir({str(site)!r})\n"
    result = run_in_root([sys.executable, "-S", "-c", prelude + CHILD])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kernels available: False" in result.stdout
    origin = result.stdout.split("kernels origin: ")[1].strip()
    assert origin == "None", origin  # nothing, or our folder as a bare namespace portion
