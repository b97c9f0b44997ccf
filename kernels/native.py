"""The C++ kernels of `csrc/`, built on first use with the C++ compiler inductor already needs.

The library is compiled once per source, torch build and compiler into
`$OLLAMAPY_CACHE/native/<key>/` (~/.cache/ollamapy by default), under a file lock so that two
processes never build it at once, and loaded with `torch.ops.load_library`; its ops live in
the `torch.ops.ollamapy_native` namespace. Without a compiler, on a CPU without AVX-512 VNNI,
or off x86-64, `load()` returns False and the callers keep their plain-torch kernels
(`OLLAMAPY_NATIVE=0` asks for the same). Nothing is compiled at import.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sysconfig
from pathlib import Path

import torch
import torch.utils.cpp_extension as cpp

log = logging.getLogger(__name__)

CSRC = Path(__file__).parent / "csrc"
SOURCES = (CSRC / "library.cpp", CSRC / "int4_vnni.cpp", CSRC / "int8_vnni.cpp",
           CSRC / "kquant_vnni.cpp", CSRC / "attention.cpp")
HEADERS = (CSRC / "vnni.h",)


def _cache_dir() -> Path:
    root = os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy")
    return Path(root) / "native"


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _command(compiler: str, out: Path) -> list[str]:
    """-fopenmp: at::parallel_for is a header template that runs serially without it; the
    library then shares torch's OpenMP runtime (same soname, already loaded)."""
    torch_lib = Path(torch.__file__).parent / "lib"
    abi = int(torch.compiled_with_cxx11_abi())
    return [compiler, "-O3", "-std=c++20", "-shared", "-fPIC", "-fopenmp", "-fvisibility=hidden",
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            *[f"-I{p}" for p in cpp.include_paths()], f"-I{sysconfig.get_paths()['include']}",
            *map(str, SOURCES), "-o", str(out),
            f"-L{torch_lib}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_lib}"]


def _key(compiler: str) -> str:
    """The build's identity: compiler version, command (torch's paths and flags), sources."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    h = hashlib.sha256()
    command = " ".join(_command(compiler, Path("out")))
    for part in (torch.__version__, version, command,
                 *(s.read_bytes() for s in (*SOURCES, *HEADERS))):
        h.update(part if isinstance(part, bytes) else part.encode())
    return h.hexdigest()[:16]


def build() -> Path:
    """Compile the library if this source, torch and compiler have not been built yet; → its
    path. Raises RuntimeError with the compiler's message when the build fails."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++ or $CXX) found")
    folder = _cache_dir() / _key(compiler)
    lib = folder / "libollamapy_native.so"
    if lib.exists():
        return lib
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if lib.exists():  # another process built it while we waited
            return lib
        partial = folder / f"build-{os.getpid()}.so"
        log.info("building the native kernels into %s", folder)
        done = subprocess.run(_command(compiler, partial), capture_output=True, text=True)
        if done.returncode:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"building {folder.name} failed:\n{done.stderr[-4000:]}")
        partial.replace(lib)
    return lib


@functools.cache
def load() -> bool:
    """Build and load the library once per process; → whether its VNNI kernels can run here."""
    if os.environ.get("OLLAMAPY_NATIVE", "1") == "0":
        return False
    if platform.machine() not in ("x86_64", "AMD64") or platform.system() != "Linux":
        return False
    try:
        torch.ops.load_library(str(build()))
    except (RuntimeError, OSError) as e:
        log.warning("native kernels unavailable, using torch's: %s", e)
        return False
    _register_fakes()
    return bool(torch.ops.ollamapy_native.has_vnni())


def _register_fakes() -> None:
    """Output shapes of the ops for torch.compile's tracing (it never runs the kernels)."""
    @torch.library.register_fake("ollamapy_native::int4_mm")
    def _(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        return x.new_empty((x.shape[0], blocks.shape[0]), dtype=torch.float32)

    @torch.library.register_fake("ollamapy_native::int8_mm")
    def _(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return x.new_empty((x.shape[0], codes.shape[0]), dtype=torch.float32)

    @torch.library.register_fake("ollamapy_native::q4k_mm")
    def _(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        return x.new_empty((x.shape[0], blocks.shape[0]), dtype=torch.float32)

    @torch.library.register_fake("ollamapy_native::q6k_mm")
    def _(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        return x.new_empty((x.shape[0], blocks.shape[0]), dtype=torch.float32)

    @torch.library.register_fake("ollamapy_native::span_attention")
    def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float,
          cap: float, sinks: torch.Tensor | None) -> torch.Tensor:
        return q.new_empty(q.shape, dtype=torch.float32)


if __name__ == "__main__":  # `make setup` builds the library ahead of the first model load
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print("native kernels:", "ready" if load() else "not used here (torch's kernels instead)")
