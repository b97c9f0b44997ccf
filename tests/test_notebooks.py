"""Every notebook under notebooks/ runs top to bottom without an error."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
# what each notebook's printed output must hold: its own result, not just the absence of errors
EXPECTED = {
    "01_engine_walkthrough.ipynb": "Paris",  # the walkthrough's greedy answer to its question
    "02_bench_vs_anchors.ipynb": "smollm2   ollamapy fast",  # a measured row, on the CPU
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    from tests.conftest import model_path

    model_path("smollm2-135m.gguf")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert EXPECTED[path.name] in text


def test_every_notebook_says_what_it_must_print() -> None:
    assert sorted(EXPECTED) == [p.name for p in NOTEBOOKS]


def test_there_is_a_notebook() -> None:
    assert NOTEBOOKS, "notebooks/ should hold the engine walkthrough"
