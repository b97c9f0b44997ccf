"""llama.cpp's logits at every position, for bench_families.py; run inside the anchor
environment (benchmarks/.venv-anchors, or any Python that imports llama_cpp): it imports
only llama_cpp, numpy and the standard library.

    python anchors_llamacpp_logits.py MODEL THREADS PROMPTS_JSON OUT.npz

PROMPTS_JSON is a list of token-id lists; each is evaluated from an empty cache, and OUT.npz
gets its logits as p0, p1, ... (tokens, vocab) float32. Prints one JSON line: llama_cpp's
version and the context size used.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    import llama_cpp
    import numpy as np

    model, threads, prompts_json, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    prompts = json.loads(prompts_json)
    n_ctx = max(len(ids) for ids in prompts)
    llm = llama_cpp.Llama(model_path=model, n_ctx=n_ctx, n_threads=threads,
                          n_threads_batch=threads, n_batch=n_ctx, logits_all=True,
                          verbose=False)
    logits = {}
    for i, ids in enumerate(prompts):
        llm.reset()
        llm.eval(ids)
        logits[f"p{i}"] = np.array(llm.scores[: len(ids)], dtype=np.float32)
    np.savez(out, **logits)
    print(json.dumps({"llama_cpp": llama_cpp.__version__, "n_ctx": llm.n_ctx()}))


if __name__ == "__main__":
    main()
