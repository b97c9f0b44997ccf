"""Ollama's `num_gpu`: the last layers on the accelerator, the rest on the CPU, through
accelerate's device maps.

num_gpu counts the layers offloaded, as Ollama hands it to llama.cpp (n_gpu_layers): the last
num_gpu blocks go to the accelerator first, and a count past the blocks takes the output head
(the final norm and the head) as one more layer; the token embeddings stay on the CPU. -1,
Ollama's default ("as many as fit"), offloads every layer here (no memory estimate is made);
0 none. On a machine without an accelerator every layer stays on the CPU, as Ollama's does.

`device_map` writes that as accelerate's map (module name → device); `place` moves each
module there and gives it accelerate's hook, which moves the module's inputs (the residual
stream, RoPE tables, mask, positions) to its device, so the model's code does not change. The KV
cache keeps each layer's keys and values on that layer's device (`cache_devices`).
"""

from __future__ import annotations

import torch

from ollamapy.engine.model import Transformer


def offloaded(num_gpu: int, n_layers: int) -> int:
    """How many of the n_layers blocks and the head (n_layers + 1 "layers") num_gpu takes."""
    if num_gpu < 0:
        return n_layers + 1
    return min(num_gpu, n_layers + 1)


def device_map(n_layers: int, num_gpu: int, accelerator: torch.device | str
               ) -> dict[str, str]:
    """num_gpu as accelerate's device map of a `Transformer` (module and buffer names)."""
    on = str(torch.device(accelerator))
    k = offloaded(num_gpu, n_layers)
    first = n_layers - min(k, n_layers)  # the first block on the accelerator
    head = on if k > n_layers else "cpu"
    return {"": "cpu",  # the model itself: its RoPE tables, and where its forward begins
            "tok_embeddings": "cpu",
            **{f"layers.{i}": on if i >= first else "cpu" for i in range(n_layers)},
            "norm": head, "output": head}


def place(model: Transformer, num_gpu: int, accelerator: torch.device | str) -> Transformer:
    """The model (its weights on the CPU) with each module moved where `device_map` puts it
    and one of accelerate's AlignDevicesHook on it, which moves the module's inputs to its
    device (and the model's output back to where its input came from). Not accelerate's
    `dispatch_model`: its "cpu" means weights kept on the CPU and run on the accelerator
    (offload), where llama.cpp's, and so Ollama's, means layers run on the CPU."""
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    plan = device_map(len(model.layers), num_gpu, accelerator)
    for name, device in plan.items():
        module = model.get_submodule(name)
        if name:  # the model's own buffers and forward stay on the CPU
            module.to(device)
        # the cache is rank 0's object, its layers already where they belong
        add_hook_to_module(module, AlignDevicesHook(execution_device=torch.device(device),
                                                    io_same_device=not name,
                                                    skip_keys="cache"))
    return model
