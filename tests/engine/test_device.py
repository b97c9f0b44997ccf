"""Device and dtype choice, including the CUDA / MPS branches (monkeypatched: no GPU here)."""

from __future__ import annotations

import platform
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from ollamapy.engine import device as dev


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dev, "mps_available", lambda: True)
    assert dev.pick_device(None).type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.pick_device("auto").type == "mps"
    monkeypatch.setattr(dev, "mps_available", lambda: False)
    assert dev.pick_device(None).type == "cpu"


def test_default_dtypes() -> None:
    assert dev.pick_dtype(torch.device("cuda")) == torch.bfloat16
    assert dev.pick_dtype(torch.device("mps")) == torch.float16
    assert dev.pick_dtype(torch.device("cpu")) == torch.float32
    assert dev.pick_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="unsupported dtype"):
        dev.pick_dtype(torch.device("cpu"), "int3")


def test_missing_device_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "mps_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        dev.pick_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        dev.pick_device("mps")
    with pytest.raises(ValueError, match="unsupported device"):
        dev.pick_device("xla")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none present)")
def test_cuda_forward_matches_cpu() -> None:
    from tests.engine.hf_tiny import tiny_hf_model
    from tests.engine.test_model_vs_hf import ours_from_hf

    model = ours_from_hf(tiny_hf_model("llama"))
    ids = torch.randint(0, 96, (1, 12))
    cpu = model(ids)
    gpu = model.to("cuda")
    gpu.init_rope()
    torch.testing.assert_close(gpu(ids.cuda()).cpu(), cpu, atol=1e-4, rtol=1e-4)


HEAP_PROBE = """
import ctypes, sys
from ollamapy.engine.device import tune_heap_for_serving

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
if sys.argv[1] == "tuned":
    assert tune_heap_for_serving()
libc.free(libc.malloc(8 << 20))  # a large block freed: glibc would now raise its threshold
block = libc.malloc(4 << 20)
print(libc.mallinfo2().hblkhd >= 4 << 20)  # the 4 MiB block got a map of its own
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_serving_heap_keeps_large_blocks_in_maps_of_their_own() -> None:
    """After a large block is freed, glibc serves the next large ones from the heap (where
    they fragment it); tuned for serving, they still get maps that are returned on free."""
    def probe(mode: str) -> str:
        run = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    assert probe("default") == "False"
    assert probe("tuned") == "True"


def test_a_thread_done_with_torch_releases_its_openmp_team() -> None:
    """The loading thread gives its OpenMP threads back (libgomp, as torch's Linux CPU wheel
    ships it), and torch keeps computing afterwards, on that thread and on another."""
    if not (Path(torch.__file__).parent / "lib" / "libgomp.so.1").exists():
        pytest.skip("torch here does not use its own libgomp")
    a = torch.randn(256, 256)
    want = a @ a  # a parallel region: this thread's team exists
    assert dev.release_openmp_threads()
    torch.testing.assert_close(a @ a, want)
    got: list[torch.Tensor] = []
    worker = threading.Thread(target=lambda: got.append(a @ a))
    worker.start()
    worker.join()
    torch.testing.assert_close(got[0], want)
