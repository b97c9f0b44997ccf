"""Device and dtype choice, including the CUDA / MPS branches (monkeypatched: no GPU here)."""

from __future__ import annotations

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
