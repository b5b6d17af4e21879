"""Deactivating neurons: a standalone edited copy of the model, or a cheap reversible mask (SPEC S2 D1, D4).

`deactivate` writes the closed gates into the weights, so the result is a plain GPT-2 that anyone can load
with `GPT2LMHeadModel.from_pretrained`, without privloc. `masked` gives the same function on the original
model through hooks, for quick comparisons without a copy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from . import masking
from .masking import COMPONENTS, NeuronMasker


def _unit_columns(block: nn.Module, component: str, n_embd: int) -> tuple[nn.Module, int]:
    """The Conv1D whose output column `offset + unit` is the component's unit (Conv1D weights are [in, out])."""
    if component in ("attn.q", "attn.k", "attn.v"):
        return block.attn.c_attn, ("attn.q", "attn.k", "attn.v").index(component) * n_embd
    # mlp.in is gated after the activation; zeroing c_fc's column gives act(0), which must then be 0.
    return {"attn.o": block.attn.c_proj, "mlp.in": block.mlp.c_fc, "mlp.out": block.mlp.c_proj}[component], 0


def unit_columns(model: nn.Module, neuron_ids, components: Sequence[str] = COMPONENTS) -> list[tuple[nn.Module, Tensor]]:
    """Where the listed neurons live in `model`'s weights: (Conv1D, output columns) per (layer, component).

    Ids are those of a `NeuronMasker(model, components)`; a unit is its Conv1D weight column and bias entry.
    q, k and v share `c_attn`, so the same module can appear in several entries.
    """
    layout = NeuronMasker(model, components)  # only for the id layout: nothing is attached
    ids = np.unique(layout._as_ids(neuron_ids))
    table = layout.neuron_table()
    layer, component, unit = table["layer"][ids], table["component"][ids], table["unit"][ids]
    out = []
    for ly, ci in sorted(set(zip(layer.tolist(), component.tolist(), strict=True))):
        module, offset = _unit_columns(layout.blocks[ly], layout.components[ci], layout.n_embd)
        out.append((module, torch.as_tensor(unit[(layer == ly) & (component == ci)] + offset,
                                            device=module.weight.device)))
    return out


def _drop_masker_hooks(model: nn.Module) -> None:
    # deepcopy shares hook functions, so a masker attached to the original would keep gating the copy.
    # transformers installs hooks of its own (output capturing) that must stay.
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key in [k for k, fn in hooks.items() if getattr(fn, "__module__", None) == masking.__name__]:
                del hooks[key]


def deactivate(model: nn.Module, neuron_ids, components: Sequence[str] = COMPONENTS) -> nn.Module:
    """A deep copy of `model` with the listed neurons removed: their weight column and bias set to 0.

    Ids are those of a `NeuronMasker(model, components)`. The copy computes exactly what the masker does in
    "hard" mode with `set_hard(neuron_ids)`, needs no hooks, and can be saved with `save_pretrained`.
    The original model is left untouched.
    """
    edited = copy.deepcopy(model)
    _drop_masker_hooks(edited)
    columns = unit_columns(edited, neuron_ids, components)
    if "mlp.in" in components and columns:
        act = (edited.transformer.h if hasattr(edited, "transformer") else edited.h)[0].mlp.act
        if act(torch.zeros(1)).item() != 0:
            raise ValueError(f"cannot bake mlp.in neurons into the weights: the activation {act} maps 0 to non-0")
    with torch.no_grad():
        for module, cols in columns:
            module.weight[:, cols] = 0.0
            module.bias[cols] = 0.0
    return edited


@contextmanager
def masked(model: nn.Module, neuron_ids, components: Sequence[str] = COMPONENTS) -> Iterator[nn.Module]:
    """Within the block, `model` runs with the listed neurons closed (hooks, no copy); exactly restored on exit.

    No neurons (None or empty) leave the model as it is, without hooks.
    """
    if neuron_ids is None or len(neuron_ids) == 0:
        yield model
        return
    masker = NeuronMasker(model, components)
    masker.set_hard(neuron_ids)
    with masker.applied(mode="hard", freeze=False):
        yield model
