"""Fetch llama.cpp's converter and test material from the llama-cpp-python sdist, verify, cache.

The llama-cpp-python 0.3.36 source distribution on the package index vendors llama.cpp. The
tests use three parts of it as oracles and data, never as project code:
- `convert_hf_to_gguf.py` with its `conversion/` package and `gguf-py/`: tiny transformers
  models become GGUF files laid out exactly as llama.cpp (and so Ollama's library) lays them out;
- `models/ggml-vocab-*.gguf` with llama.cpp's tokenizer test vectors (`.inp`/`.out`);
- `models/templates/*.jinja`: real chat templates.

    python scripts/fetch_llama_cpp.py         # prints the folder

Cache: $OLLAMAPY_CACHE (default ~/.cache/ollamapy)/llama.cpp/, the sdist under wheels/. A
second run downloads nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_models import cache_dir, sha256_of  # noqa: E402

SDIST = "llama-cpp-python==0.3.36"
SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
VENDOR = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "models/")


def llama_cpp_dir() -> Path:
    return cache_dir() / "llama.cpp"


def download(wheels: Path) -> Path:
    sdist = wheels / SDIST_FILE
    if not sdist.exists():
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--no-binary", ":all:", "-d", str(wheels), SDIST], check=True)
    if (got := sha256_of(sdist)) != SDIST_SHA256:
        sdist.unlink()
        raise SystemExit(f"{SDIST_FILE}: sha256 {got} != expected {SDIST_SHA256}")
    return sdist


def extract(sdist: Path, target: Path, parts: tuple[str, ...] = PARTS) -> None:
    """The vendored llama.cpp's `parts` (paths under it; ("",) for all of it) into target,
    whole or not at all."""
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        members = []
        for member in tar.getmembers():
            rel = member.name.removeprefix(VENDOR)
            if rel != member.name and rel and rel.startswith(parts) and (member.isfile()
                                                                         or member.isdir()):
                member.name = rel
                members.append(member)
        tar.extractall(tmp, members=members, filter="data")  # no links, no paths outside
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def fetch() -> Path:
    target = llama_cpp_dir()
    stamp = target / ".sha256"
    if stamp.exists() and stamp.read_text().strip() == SDIST_SHA256:
        return target
    extract(download(cache_dir() / "wheels"), target)
    stamp.write_text(SDIST_SHA256 + "\n")
    return target


if __name__ == "__main__":
    print(f"llama.cpp: {fetch()}")
