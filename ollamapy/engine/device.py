"""Which device and dtype to run on: cuda, then mps, then cpu; bf16 / fp16 / fp32 by default."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import torch

DEFAULT_DTYPES = {"cuda": torch.bfloat16, "mps": torch.float16, "cpu": torch.float32}


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """The named device, or the best one present when name is None or "auto"."""
    if name is not None and str(name) != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        if device.type == "mps" and not mps_available():
            raise ValueError("device 'mps' requested but MPS is not available")
        if device.type not in DEFAULT_DTYPES:
            raise ValueError(f"unsupported device {str(name)!r}; use cuda, mps or cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return DEFAULT_DTYPES[device.type]
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {', '.join(names)}")
    return names[dtype]


def release_cached_memory() -> None:
    """Give memory held by torch's caching allocators back to the device, and the C heap's
    free pages back to the OS (after unloading: glibc keeps freed heap in its per-thread
    arenas otherwise, and the process looks as big as the models it no longer holds)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if mps_available():
        torch.mps.empty_cache()
    _malloc_trim()


def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl)
        return None


def _malloc_trim() -> None:
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)


# glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept from moving
ARENA_MAX = 2


def tune_heap_for_serving() -> bool:
    """Keep a long-running server's C heap from creeping as models load and unload.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so after
    the first unload the blocks of the next load come from the heap instead of their own maps,
    and what they leave behind fragments it; every thread may also get an arena of its own.
    Fixing the threshold at 128 KiB and capping the arenas at two stops the creep (README.md,
    "Speed", has the soak's figures; MALLOC_MMAP_THRESHOLD_ and MALLOC_ARENA_MAX do the same
    from the environment). False where the C library is not glibc."""
    if (libc := _glibc()) is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and libc.mallopt(M_ARENA_MAX, ARENA_MAX))


def release_openmp_threads() -> bool:
    """Free the calling thread's OpenMP worker threads (libgomp's omp_pause_resource_all,
    OpenMP 5.0), once it is done with torch: the thread that loads a model and compiles its
    step is not the engine thread that then runs every step, and while the loader's idle team
    lingers, each of the step's many small parallel regions on the engine thread's own team
    runs several times slower on a small machine (the engine-alone decode of
    benchmarks/bench_serving_anchor.py shows it). False where torch's OpenMP is not a loaded
    libgomp."""
    path = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
    try:
        gomp = ctypes.CDLL(str(path), mode=getattr(os, "RTLD_NOLOAD", 0))
    except OSError:  # another OpenMP (or none): nothing to release this way
        return False
    return gomp.omp_pause_resource_all(1) == 0  # omp_pause_soft
