"""llama.cpp's side of bench_vs_anchors.py, run inside the benchmark's own environment
(benchmarks/.venv-anchors, where llama-cpp-python is built from source): it imports only
llama_cpp and the standard library.

    python anchors_llamacpp.py MODEL THREADS PROMPT_IDS_JSON DECODE_TOKENS

Prints one JSON line: prefill tok/s, decode tok/s (greedy, end-of-sequence ignored), time
to first token and peak RSS, measured the way bench_engine measures ollamapy.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main() -> None:
    import llama_cpp

    model, threads, ids_json, n_decode = sys.argv[1], int(sys.argv[2]), sys.argv[3], \
        int(sys.argv[4])
    ids = json.loads(ids_json)
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=model, n_ctx=len(ids) + n_decode + 8, n_threads=threads,
                          n_threads_batch=threads, n_batch=512, verbose=False)
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    llm.eval(ids)
    token = llm.sample(temp=0.0)
    ttft_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n_decode - 1):
        llm.eval([token])
        token = llm.sample(temp=0.0)
    decode_s = time.perf_counter() - t0
    print(json.dumps({
        "engine": "llama.cpp (llama-cpp-python, built here)", "load_s": load_s,
        "prefill_tok_s": len(ids) / ttft_s, "decode_tok_s": (n_decode - 1) / decode_s,
        "ttft_ms": ttft_s * 1e3,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
