"""The `ollamapy` command. For now: `run` a model file with one prompt; `serve` comes with the
HTTP server (the native API issue)."""

from __future__ import annotations

import argparse
import sys

from ollamapy import __version__


def _run(args: argparse.Namespace) -> int:
    import ollamapy

    model = ollamapy.load(args.model, device=args.device)
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    options = {"temperature": args.temperature, "num_predict": args.num_predict}
    if args.seed is not None:
        options["seed"] = args.seed
    for chunk in model.generate(prompt, raw=args.raw, **options):
        print(chunk.get("response", ""), end="", flush=True)
    print()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ollamapy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ollamapy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="generate from a .gguf file or safetensors folder")
    run.add_argument("model")
    run.add_argument("prompt", nargs="?")
    run.add_argument("--raw", action="store_true", help="no chat template")
    run.add_argument("--temperature", type=float, default=0.8)
    run.add_argument("--num-predict", type=int, default=128)
    run.add_argument("--seed", type=int)
    run.add_argument("--device", default=None)
    sub.add_parser("serve", help="serve the Ollama API (not yet)")
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args)
    print("ollamapy serve: not yet — the HTTP server lands with the native API issue.")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
