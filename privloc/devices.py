"""Where a model's parts run: loading in a chosen dtype and device map, and the device of each module.

A model dispatched by accelerate (`device_map="auto"`) has its blocks on several GPUs and the CPU, and some
weights offloaded to CPU memory or disk (their parameters are then on the "meta" device). Gates and inputs
must go where a module *runs*, which is the execution device of accelerate's hook, not its parameters'.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str | None):
    if name is None:
        return None
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}: expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


def is_dispatched(model: nn.Module) -> bool:
    return bool(getattr(model, "hf_device_map", None))


def execution_device(module: nn.Module, root: nn.Module | None = None) -> torch.device:
    """Where `module` computes: its (or an enclosing module's) accelerate hook, else its first real tensor."""
    chain = [module]
    if root is not None:
        # The hook can sit on an enclosing block: walk from the module up to the root.
        names = {m: n for n, m in root.named_modules()}
        name = names.get(module, "")
        while name:
            name = name.rpartition(".")[0]
            chain.append(root.get_submodule(name))
    for m in chain:
        device = getattr(getattr(m, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(device if not isinstance(device, int) else f"cuda:{device}")
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")


def main_device(model: nn.Module) -> torch.device:
    """Where inputs go and the gates live: the device of the input embeddings."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return execution_device(embeddings if embeddings is not None else model, model)


def place(model: nn.Module, device: torch.device | str) -> nn.Module:
    """`model` on `device`, unless accelerate already spread it over several (it must stay as dispatched)."""
    return model if is_dispatched(model) else model.to(device)


def autocast(dtype: str | None, device: torch.device | str):
    """torch.autocast in `dtype` ("bfloat16", "float16") on `device`'s kind, or a context that does nothing for None.

    Inside it the matrix products of a forward pass run in the low precision and everything else (norms,
    softmax, the residual stream of most families) in fp32. Casting the weights is done once per outermost
    context for parameters that require grad (torch caches the casts), so one context around many forwards
    is cheaper than one per forward.
    """
    if dtype is None:
        return contextlib.nullcontext()
    low = torch_dtype(dtype)
    if low == torch.float32:
        raise ValueError("autocast takes a low precision (bfloat16 or float16); use None for fp32")
    return torch.autocast(torch.device(device).type, dtype=low)
