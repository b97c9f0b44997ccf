"""The store imports no torch: the server lists, shows and creates models without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.store.conftest import write_gguf

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import sys
from pathlib import Path
import ollamapy.store
from ollamapy.store import (Store, create_model, parse_modelfile, render_modelfile,
                            format_parameters)
import ollamapy.store.atomic, ollamapy.store.goformat, ollamapy.store.modelinfo
store = Store(Path(sys.argv[1]))
gguf = Path(sys.argv[2])
digest = store.blobs.put_bytes(gguf.read_bytes())
list(create_model(store, "tiny", files={"tiny.gguf": digest}, parameters={"num_ctx": 64}))
model = store.model("tiny")
render_modelfile(model), format_parameters(model.params), store.list_models()
parse_modelfile("FROM tiny\\nPARAMETER temperature 0.5")
store.delete("tiny")
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("torch modules:", loaded)
sys.exit(1 if loaded else 0)
"""


def test_store_runs_without_importing_torch(tmp_path: Path) -> None:
    gguf = write_gguf(tmp_path / "tiny.gguf")
    result = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "models"), str(gguf)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "torch modules: []" in result.stdout
