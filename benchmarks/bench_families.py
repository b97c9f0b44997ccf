"""Every decoder family in one table (issue 13): does it load, does it answer as
transformers does, how far the fast path and llama.cpp land from the reference, how fast
the fast path decodes.

    .venv/bin/python benchmarks/bench_families.py [--families llama,gemma2,...] [--threads 2]
        [--decode-tokens 64] [--rounds 5] [--llama-cpp-target DIR] [--build-anchors]

Each family is tests/families.py's tiny random model (transformers' own class, seeded),
saved as a Hugging Face folder with a tokenizer and converted by llama.cpp's own converter
to an f32 and a q8_0 GGUF (`make setup` fetches the converter). One row a family:
- GGUF loads / safetensors loads: `ollamapy.load` of the f32 GGUF and of the folder, the
  architecture the one expected;
- tokenizer ids equal: our tokenizer's ids for the prompt equal transformers' (both sources);
- max |logit diff|: our float32 reference against transformers float32 (the oracle), every
  position of PROMPTS, both sources;
- greedy equal: 16 greedy tokens from the f32 GGUF equal transformers' argmax (end of
  sequence ignored);
- KL fast / KL llama.cpp: mean over the positions of PROMPTS of KL(reference || engine), the
  reference being our float32 reference on the q8_0 GGUF, the engine either
  `ollamapy.load(q8_0, fast=True)` (int8 weights, bf16 at each kernel's input) or llama.cpp
  (llama-cpp-python 0.3.36, logits at every position) on the same file;
- decode tok/s: 64 greedy tokens after a 32-token prompt through a one-slot Batch, its decode
  step compiled as the server's is (fast path, int8 from the q8_0 file, compiled before the
  clock starts) or the float32 reference run eagerly; each engine in a subprocess of its
  own, `--rounds` runs after one load, the best kept (the machine may be shared). These
  models are tiny (4 layers, dim 64): tokens/s measures the per-step overhead, not the
  arithmetic of a real model.

Where llama.cpp runs a family otherwise than transformers does (LLAMA_CPP_READS: phi3's
sliding window and LongRoPE factors), the notes give its KL again against our reference set
up as llama.cpp reads the file.

llama.cpp runs in a subprocess (anchors_llamacpp_logits.py) from, in this order: a
`pip install --target` directory holding llama_cpp (`--llama-cpp-target`, default
$OLLAMAPY_LLAMA_CPP_TARGET or /tmp/llcpp, e.g. one built without AMX where a native build
dies of illegal instructions), or benchmarks/.venv-anchors if already built
(bench_vs_anchors.py builds it, or `--build-anchors` here, ~20 minutes on 2 cores). Without
either, or when it fails on a family, its column says n/a and why.

Prints the table as markdown; writes benchmarks/results/families.json and families.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # tests.families
from bench_engine import prompt_ids  # noqa: E402
from bench_vs_anchors import ANCHOR_VENV, Silent, ensure_llama_cpp  # noqa: E402

PROMPTS = ["The quick brown fox jumps over the lazy dog. Hello world!",
           "Hello world! How are you today? I am fine, thank you.",
           "Rotary position embeddings rotate pairs of features by an angle.",
           "0 1 2 3 4 5 6 7 8 9, and again: 0123456789.",
           "A short story: the model read the file, and every number came out right."]
GREEDY = 16
PREFILL = 32
NA = "n/a"
# where llama.cpp runs a family otherwise than transformers (and so our reference) does: the
# config fields that make our reference do the same, and what they mean; KL is measured again
# against that reference (kl_llama_cpp_as_it_reads), at llama.cpp's context size
LLAMA_CPP_READS = {
    "phi3": ({"sliding_window": None},
             "llama.cpp runs phi3 without its sliding window (6 here; Phi-3's own is 2047) and "
             "with the LongRoPE long factors, its context (at least 256) being past the "
             "original 64"),
}


def kl_mean(reference: Any, other: Any) -> float:
    """Mean over positions of KL(softmax(reference) || softmax(other)); (T, vocab) each."""
    import torch

    p = torch.log_softmax(reference.double(), -1)
    q = torch.log_softmax(other.double(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def first_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


# --- llama.cpp ------------------------------------------------------------------------


def find_llama_cpp(target: str | None, build: bool) -> dict:
    """How to run llama.cpp: {"python", "env", "version"}, or {"reason"} why not."""
    tried = []
    probe = ("import llama_cpp; print(llama_cpp.__version__); "
             "print(llama_cpp.llama_print_system_info().decode().strip())")
    candidates = []
    if target:
        candidates.append((sys.executable, {"PYTHONPATH": target}, f"--target dir {target}"))
    venv_python = ANCHOR_VENV / "bin" / "python"
    candidates.append((str(venv_python), {}, str(ANCHOR_VENV)))
    for python, env, where in candidates:
        if not Path(python).exists() or (env and not Path(env["PYTHONPATH"]).is_dir()):
            tried.append(f"{where}: absent")
            continue
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=120)
        if done.returncode == 0:
            version, _, system = done.stdout.strip().partition("\n")
            return {"python": python, "env": env, "where": where, "version": version,
                    "system_info": system}
        tried.append(f"{where}: import llama_cpp failed ({signal_name(done.returncode)})")
    if build:
        python = ensure_llama_cpp()
        return {"python": str(python), "env": {}, "where": str(ANCHOR_VENV), "version": "built"}
    return {"reason": "no llama-cpp-python: " + "; ".join(tried)
            + " (bench_vs_anchors.py or --build-anchors builds the anchor venv)"}


def signal_name(rc: int) -> str:
    if rc < 0:
        try:
            return signal.Signals(-rc).name
        except ValueError:
            pass
    return f"exit {rc}"


def llama_cpp_logits(anchor: dict, path: Path, prompts: list[list[int]], threads: int,
                     workdir: Path) -> tuple[list[Any], int]:
    """llama.cpp's logits (tokens, vocab) for each prompt, and the context size it ran."""
    import numpy as np
    import torch

    out = workdir / "llama_cpp_logits.npz"
    cmd = [anchor["python"], str(HERE / "anchors_llamacpp_logits.py"), str(path),
           str(threads), json.dumps(prompts), str(out)]
    env = {**os.environ, **anchor["env"], "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        tail = [ln for ln in done.stderr.splitlines() if ln.strip()][-1:] or [""]
        raise RuntimeError(f"llama.cpp {signal_name(done.returncode)}: {tail[0][:160]}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(out) as f:
        return [torch.from_numpy(f[f"p{i}"]) for i in range(len(prompts))], info["n_ctx"]


# --- one family -----------------------------------------------------------------------


def measure(name: str, root: Path, args: argparse.Namespace, anchor: dict) -> dict:
    import torch
    import transformers

    import ollamapy
    from tests.engine.test_fast import greedy
    from tests.families import ALL_CASES, PROMPT, build

    case = ALL_CASES[name]
    row: dict[str, Any] = {"family": name, "arch": case.arch, "notes": {}}
    notes = row["notes"]
    t0 = time.perf_counter()
    try:
        built = build(name, root)
    except Exception as exc:  # the converter's refusal is an AssertionError
        notes["build"] = first_error(exc)
        return row
    row["build_s"] = time.perf_counter() - t0
    tokenizer = transformers.AutoTokenizer.from_pretrained(built.folder)
    prompts = [tokenizer(p).input_ids for p in PROMPTS]
    assert PROMPTS[0] == PROMPT and prompts[0] == built.ids
    row["prompt_tokens"] = [len(ids) for ids in prompts]
    with torch.no_grad():
        oracle = [built.hf(torch.tensor([ids])).logits[0].float() for ids in prompts]

    # loads, tokenizer, logits against transformers, greedy
    diffs, ids_equal, greedy_equal = [], [], []
    want = list(built.ids)
    with torch.no_grad():
        for _ in range(GREEDY):
            want.append(int(built.hf(torch.tensor([want])).logits[0, -1].argmax()))
    want = want[len(built.ids):]
    for source, path in (("gguf", built.gguf), ("safetensors", built.folder)):
        try:
            m = ollamapy.load(path, device="cpu")
            if m.model.config.arch != case.arch:
                raise ValueError(f"loaded as {m.model.config.arch}, not {case.arch}")
        except Exception as exc:
            row[f"{source}_loads"] = False
            notes[f"{source} load"] = first_error(exc)
            continue
        row[f"{source}_loads"] = True
        ids_equal.append(m.tokenize(PROMPT) == built.ids)
        with torch.no_grad():
            diffs.append(max(float((m.model(torch.tensor([ids]), all_logits=True)[0] - o)
                                   .abs().max()) for ids, o in zip(prompts, oracle, strict=True)))
        got = greedy(m.model, built.ids, GREEDY, frozenset())
        greedy_equal.append(got == want)
        if got != want:
            j = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
            notes[f"{source} greedy"] = f"first difference at token {j} of {GREEDY}"
    row["tokenizer_ids_equal"] = all(ids_equal) if ids_equal else None
    row["max_abs_logit_diff"] = max(diffs) if diffs else None
    row["greedy_equal"] = all(greedy_equal) if greedy_equal else None

    # the q8_0 file: reference, fast path, llama.cpp
    try:
        reference = ollamapy.load(built.gguf_q8, device="cpu").model
        ref = torch.cat(reference_logits(reference, prompts))
    except Exception as exc:
        notes["q8_0 reference"] = first_error(exc)
        return row
    engines = {"fast": lambda: (fast_logits(built.gguf_q8, prompts), None)}
    if "reason" not in anchor:
        engines["llama_cpp"] = lambda: llama_cpp_logits(anchor, built.gguf_q8, prompts,
                                                        args.threads, root)
    else:
        notes["llama.cpp"] = anchor["reason"]
    for engine, logits_of in engines.items():
        try:
            logits, n_ctx = logits_of()
        except Exception as exc:
            notes[engine.replace("_", ".")] = first_error(exc)
            continue
        logits = torch.cat(logits)
        row[f"kl_{engine}"] = kl_mean(ref, logits)
        row[f"top1_agree_{engine}"] = float((ref.argmax(-1) == logits.argmax(-1)).float().mean())
        if engine == "llama_cpp" and name in LLAMA_CPP_READS:
            fields, why = LLAMA_CPP_READS[name]
            reference.config = dataclasses.replace(reference.config, **fields)
            reference.init_rope(context=n_ctx)
            kl = kl_mean(torch.cat(reference_logits(reference, prompts)), logits)
            row["kl_llama_cpp_as_it_reads"] = kl
            notes["llama.cpp"] = (f"{why}; against our reference run so ({fields}, context "
                                  f"{n_ctx}) its KL is {kl:.1e}")

    # decode speed, each engine in a subprocess of its own
    for engine in ("fast", "reference"):
        cmd = [sys.executable, __file__, "--speed-child", engine, "--model", str(built.gguf_q8),
               "--threads", str(args.threads), "--decode-tokens", str(args.decode_tokens),
               "--rounds", str(args.rounds)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            tail = [ln for ln in done.stderr.splitlines() if ln.strip()][-1:] or [""]
            notes[f"{engine} decode"] = f"{signal_name(done.returncode)}: {tail[0][:160]}"
            continue
        speed = json.loads(done.stdout.strip().splitlines()[-1])
        row[f"decode_tok_s_{engine}"] = max(speed["decode_tok_s"])
        row[f"decode_tok_s_{engine}_rounds"] = speed["decode_tok_s"]
    return row


def reference_logits(model: Any, prompts: list[list[int]]) -> list[Any]:
    import torch

    with torch.no_grad():
        return [model(torch.tensor([ids]), all_logits=True)[0] for ids in prompts]


def decode_speed(model_path: str, engine: str, n_decode: int, rounds: int) -> dict:
    """A warm-up, then `rounds` times: PREFILL prompt tokens then n_decode greedy ones (end
    of sequence ignored) through a one-slot Batch, its decode step compiled first as the
    server's is (fast) or run eagerly (reference); decode tokens/s of each round."""
    import torch

    import ollamapy
    from ollamapy.engine.batch import Batch
    from ollamapy.engine.compiled import CompiledDecode
    from ollamapy.engine.options import Options
    from ollamapy.engine.seq import Seq

    m = ollamapy.load(model_path, device="cpu", fast=engine == "fast", compile=False)
    num_ctx = PREFILL + n_decode + 8
    batch = Batch(m.model, slots=1, num_ctx=num_ctx)
    if engine == "fast":
        batch.decode = CompiledDecode(m.model, 1, m.device)
        batch.decode.warm_up(batch.cache)
    ids = prompt_ids(m.model.config.vocab_size, PREFILL)
    opts = Options(temperature=0.0, num_predict=n_decode, num_ctx=num_ctx)
    speeds = []
    with torch.no_grad():  # not inference_mode: the compiled step takes no inference tensors
        for _ in range(1 + rounds):  # the first a warm-up, not counted
            seq = Seq(ids, opts, num_ctx=num_ctx, eos_ids=frozenset(), detokenizer=Silent(),
                      device=m.device)
            batch.add(seq)
            while batch.active:
                batch.step()
            done = seq.result()
            assert done.eval_count == n_decode
            speeds.append((done.eval_count - 1) / (done.eval_duration / 1e9))
    return {"engine": engine, "decode_tok_s": speeds[1:]}


def fast_logits(path: Path, prompts: list[list[int]]) -> list[Any]:
    import torch

    import ollamapy

    fast = ollamapy.load(path, device="cpu", fast=True, compile=False)
    with torch.no_grad():
        return [fast.model(torch.tensor([ids]), all_logits=True)[0].float() for ids in prompts]


# --- output ---------------------------------------------------------------------------


def yes_no(value: bool | None) -> str:
    return NA if value is None else ("yes" if value else "no")


def number(value: float | None, fmt: str) -> str:
    return NA if value is None else format(value, fmt)


COLUMNS = ["family", "GGUF loads", "safetensors loads", "tokenizer ids equal",
           "max abs logit diff vs transformers", "greedy equal", "KL fast path",
           "KL llama.cpp", "decode tok/s fast (compiled)", "decode tok/s reference (eager)"]


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        family = r["family"] if r["arch"] == r["family"] else f"{r['family']} ({r['arch']})"
        cells = [family, yes_no(r.get("gguf_loads")), yes_no(r.get("safetensors_loads")),
                 yes_no(r.get("tokenizer_ids_equal")),
                 number(r.get("max_abs_logit_diff"), ".1e"), yes_no(r.get("greedy_equal")),
                 number(r.get("kl_fast"), ".1e"), number(r.get("kl_llama_cpp"), ".1e"),
                 number(r.get("decode_tok_s_fast"), ".0f"),
                 number(r.get("decode_tok_s_reference"), ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r["family"] for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.4))

    def bars(ax, key, offset, width, label, color):
        values = [r.get(key) for r in rows]
        ax.bar(x[[v is not None for v in values]] + offset, [v for v in values if v is not None],
               width, label=label, color=color)

    ax = axes[0]
    bars(ax, "max_abs_logit_diff", 0, 0.6, "reference fp32 vs transformers fp32", "#4c72b0")
    ax.axhline(1e-4, linestyle="--", color="gray", label="the tests' atol (1e-4; rtol 1e-4 too)")
    ax.set_yscale("log")
    ax.set_title("max |logit diff| vs transformers (GGUF f32 and safetensors)")
    ax = axes[1]
    bars(ax, "kl_fast", -0.2, 0.4, "ollamapy fast path", "#55a868")
    bars(ax, "kl_llama_cpp", 0.2, 0.4, "llama.cpp", "#c44e52")
    read = [(i, r["kl_llama_cpp_as_it_reads"]) for i, r in enumerate(rows)
            if r.get("kl_llama_cpp_as_it_reads") is not None]
    if read:
        ax.scatter([i + 0.2 for i, _ in read], [v for _, v in read], marker="_", s=300,
                   color="black", label="llama.cpp vs our reference run as llama.cpp reads "
                                        "the file (see notes)")
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 30)  # room for the legend above the bars
    ax.set_title("KL(reference || engine), same q8_0 GGUF, mean over positions")
    ax = axes[2]
    bars(ax, "decode_tok_s_fast", -0.2, 0.4, "fast (compiled step)", "#55a868")
    bars(ax, "decode_tok_s_reference", 0.2, 0.4, "reference fp32 (eager)", "#4c72b0")
    ax.set_title("decode tokens/s (tiny models: per-step overhead)")
    for ax, where in zip(axes, ("center left", "upper left", "upper right"), strict=True):
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.legend(fontsize=7, loc=where)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="", help="comma-separated; default: all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5,
                        help="decode runs a model, after one load; the best is reported")
    parser.add_argument("--llama-cpp-target",
                        default=os.environ.get("OLLAMAPY_LLAMA_CPP_TARGET", "/tmp/llcpp"))
    parser.add_argument("--build-anchors", action="store_true",
                        help="build benchmarks/.venv-anchors if no llama.cpp is found")
    parser.add_argument("--out", default=str(HERE / "results" / "families.json"))
    parser.add_argument("--speed-child", help=argparse.SUPPRESS)  # internal: decode_speed
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    if args.speed_child:
        print(json.dumps(decode_speed(args.model, args.speed_child, args.decode_tokens,
                                      args.rounds)))
        return

    from tests.families import ALL_CASES

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    names = args.families.split(",") if args.families else list(ALL_CASES)
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    anchor = find_llama_cpp(args.llama_cpp_target, args.build_anchors)
    print("llama.cpp: " + (f"llama-cpp-python {anchor['version']} from {anchor['where']} "
                           f"({anchor.get('system_info', '')})"
                           if "reason" not in anchor else f"n/a ({anchor['reason']})"),
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_families_") as tmp:
        for name in names:
            t0 = time.perf_counter()
            rows.append(measure(name, Path(tmp) / name, args, anchor))
            print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    elapsed = time.perf_counter() - t_start
    load_after = os.getloadavg()

    note = (f"Tiny random models (4 layers, dim 64): decode tokens/s ({args.decode_tokens} "
            f"greedy tokens after a {PREFILL}-token prompt, {args.threads} threads) measures "
            "the per-step overhead only. KL: mean over positions of KL(reference || engine) "
            "on the same q8_0 GGUF, reference = ollamapy's float32 reference path.")
    print()
    print(markdown(rows))
    print()
    print(note)
    for r in rows:
        for what, why in r["notes"].items():
            print(f"- {r['family']}, {what}: {why}")
    print(f"{len(rows)} families in {elapsed:.0f} s; load average (1/5/15 min) "
          f"{'/'.join(f'{x:.1f}' for x in load_before)} before, "
          f"{'/'.join(f'{x:.1f}' for x in load_after)} after ({os.cpu_count()} CPUs)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "results": rows, "prompts": PROMPTS, "greedy_tokens": GREEDY,
        "decode_tokens": args.decode_tokens, "prefill_tokens": PREFILL,
        "threads": args.threads, "rounds": args.rounds,
        "llama_cpp": anchor, "note": note, "elapsed_s": elapsed,
        "load_average_before": load_before, "load_average_after": load_after,
        "cpus": os.cpu_count(),
        "table_markdown": markdown(rows)}, indent=2) + "\n")
    plot(rows, out.with_suffix(".png"),
         f"decoder families: tiny random models, {args.threads} threads")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
