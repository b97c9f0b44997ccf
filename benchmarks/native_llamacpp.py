"""Native llama.cpp, the speed anchor: its tools built from source, and the files they measure.

    .venv/bin/python benchmarks/native_llamacpp.py     # builds what is missing, prints paths

- `tools()`: llama-bench, llama-quantize and llama-server, built from the llama.cpp that the
  llama-cpp-python 0.3.36 sdist vendors (downloaded and verified by
  scripts/fetch_llama_cpp.py) with cmake, `-DGGML_NATIVE=ON`, Release, into
  $OLLAMAPY_CACHE/llama.cpp-native/ (once; a second call builds nothing).
- `llama_1b()`: a Llama-3.2-1B-shaped Q4_K_M file. Random weights (seed 0) in a transformers
  `LlamaConfig` of that shape, converted by the sdist's convert_hf_to_gguf.py to f16 and
  quantized by that llama-quantize; random weights do not change speed. Its tokenizer is
  GPT-2's (Llama 3's own vocabulary is not on this machine; tests/llama_cpp.py rebuilds GPT-2's
  from llama.cpp's ggml-vocab-gpt-2.gguf); the converter pads the vocabulary to the config's
  128256 entries, so the embedding and the head have Llama 3.2's size.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))
from fetch_llama_cpp import SDIST_SHA256, download, extract  # noqa: E402
from fetch_models import cache_dir  # noqa: E402

TOOLS = ("llama-bench", "llama-quantize", "llama-server")
LLAMA_1B = {  # Llama-3.2-1B's config.json, the fields that set the shape of the compute
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
}


def native_dir() -> Path:
    return cache_dir() / "llama.cpp-native"


def tools() -> dict[str, Path]:
    """{tool name: executable}, built first if missing."""
    root = native_dir()
    binaries = {name: root / "build" / "bin" / name for name in TOOLS}
    stamp = root / ".built"
    if stamp.exists() and stamp.read_text().strip() == SDIST_SHA256 and all(
            p.exists() for p in binaries.values()):
        return binaries
    source = root / "src"
    if not (source / "CMakeLists.txt").exists():
        print(f"extracting llama.cpp into {source} ...", flush=True)
        extract(download(cache_dir() / "wheels"), source, parts=("",))
    print(f"building {', '.join(TOOLS)} (cmake, -DGGML_NATIVE=ON; once) ...", flush=True)
    build = root / "build"
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                    "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_BUILD_EXAMPLES=OFF"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "--config", "Release", "-j",
                    str(os.cpu_count() or 2), "--target", *TOOLS], check=True,
                   stdout=subprocess.DEVNULL)
    stamp.write_text(SDIST_SHA256 + "\n")
    return binaries


def llama_1b() -> Path:
    """The Llama-3.2-1B-shaped Q4_K_M file, made first if missing (a few minutes, ~5 GB of
    memory while the random model is written)."""
    out = native_dir() / "llama-3.2-1b-shape-random.Q4_K_M.gguf"
    if out.exists():
        return out
    import tempfile

    import torch
    import transformers

    sys.path.insert(0, str(HERE.parent))
    from tests.llama_cpp import convert, write_gpt2_tokenizer

    quantize = tools()["llama-quantize"]
    with tempfile.TemporaryDirectory(dir=native_dir()) as tmp:
        folder = Path(tmp) / "hf"
        folder.mkdir()
        print("writing a random Llama-3.2-1B-shaped model ...", flush=True)
        torch.manual_seed(0)
        config = transformers.LlamaConfig(**LLAMA_1B, torch_dtype="bfloat16")
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(folder)
        del model
        write_gpt2_tokenizer(folder)
        f16 = convert(folder, Path(tmp) / "f16.gguf", "f16")
        partial = out.with_suffix(".partial")
        subprocess.run([str(quantize), str(f16), str(partial), "Q4_K_M"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        partial.rename(out)
    return out


if __name__ == "__main__":
    for name, path in tools().items():
        print(f"{name}: {path}")
    print(f"1B file: {llama_1b()}")
