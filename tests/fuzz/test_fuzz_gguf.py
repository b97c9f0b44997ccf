"""A bounded run of the atheris GGUF fuzzer (fuzz_gguf.py) inside the suite: seeded with the
reader's test files, a fixed number of inputs (the run's only bound: no -max_total_time, which
would run fewer inputs on a slower machine), and it must end cleanly (libFuzzer exits
non-zero, with a crash-* file, on any finding). The timeouts are hang guards: -timeout=5 per
input, where one takes ~70 µs, and the subprocess's, ~20x what the run takes on two busy
cores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris (the coverage-guided fuzzer) is not installed")

HARNESS = Path(__file__).with_name("fuzz_gguf.py")
RUNS = 150_000  # ~10 s at the ~15k inputs/s of one core here
HANG_GUARD_S = 600  # the run: ~10 s idle, ~20 s with both cores busy
# libFuzzer's -rss_limit_mb reads getrusage's ru_maxrss, which Linux carries across fork and
# exec: a harness started straight from a pytest process that has held the models reports
# that process's peak (3.4 GB seen) and "fails" with oom-*. Started from a small process in
# between, it begins from that process's few MB and measures only its own memory.
FRESH_PEAK = [sys.executable, "-c",
              "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"]


def test_fuzz_gguf_runs_clean(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    seeded = subprocess.run([sys.executable, str(HARNESS), "--seed", str(corpus)],
                            capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert seeded.returncode == 0, seeded.stderr
    run = subprocess.run(
        [*FRESH_PEAK, sys.executable, str(HARNESS), str(corpus), f"-atheris_runs={RUNS}",
         "-rss_limit_mb=2048", "-timeout=5", "-seed=1", "-print_final_stats=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S)
    crashes = [p.name for p in tmp_path.glob("*") if p.name.startswith(("crash-", "timeout-",
                                                                        "oom-", "leak-"))]
    assert run.returncode == 0 and not crashes, (crashes, run.stderr[-4000:])
    assert "Done" in run.stderr  # it ran its inputs, rather than exiting at once
