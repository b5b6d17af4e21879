"""Deactivating neurons: a standalone edited copy of the model, or a cheap reversible mask.

`deactivate` writes the closed gates into the weights, so the result is a plain model of its family that
anyone can load with `AutoModelForCausalLM.from_pretrained`, without privloc. `masked` gives the same function on the original
model through hooks, for quick comparisons without a copy (docs/method.md, "How neurons are switched off").
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from privloc.method import masking
from privloc.method.masking import COMPONENTS, NeuronMasker


def output_axis(module: nn.Module) -> int:
    """The weight axis of a module's output units: 1 for transformers' Conv1D ([in, out]), 0 for Linear."""
    return 1 if type(module).__name__ == "Conv1D" else 0


def unit_columns(model: nn.Module, neuron_ids, components: Sequence[str] = COMPONENTS) -> list[tuple[nn.Module, Tensor]]:
    """Where the listed neurons live in `model`'s weights: (module, output units) per (layer, component, module).

    Ids are those of a `NeuronMasker(model, components)`; a unit is its output row (Linear) or column (Conv1D)
    of each module the family names for it, and its bias entry. The same module can appear in several entries
    (GPT-2's and GPT-NeoX's fused q, k and v), and one component can have several modules (a gated MLP's unit
    is a row of both its gate and its up projection).
    """
    layout = NeuronMasker(model, components)  # only for the id layout: nothing is attached
    ids = np.unique(layout._as_ids(neuron_ids))
    table = layout.neuron_table()
    layer, component, unit = table["layer"][ids], table["component"][ids], table["unit"][ids]
    where = layout.family.units(model.config)
    out = []
    for ly, ci in sorted(set(zip(layer.tolist(), component.tolist(), strict=True))):
        spec = where[layout.components[ci]]
        cols = spec.columns[torch.as_tensor(unit[(layer == ly) & (component == ci)])]
        for path in spec.modules:
            module = layout.blocks[ly].get_submodule(path)
            out.append((module, cols.to(module.weight.device)))
    return out


def _activation_maps_zero_to_zero(model: nn.Module, layout: NeuronMasker) -> None:
    """A hidden unit whose only input weights are zeroed outputs act(0): baking it in needs act(0) = 0."""
    spec = layout.family.units(model.config)["mlp.in"]
    if len(spec.modules) > 1:
        return  # a gated unit act(gate) · up is 0 once its up row is
    mlp = layout.blocks[0].get_submodule(spec.modules[0].rpartition(".")[0])
    act = getattr(mlp, "act", None) or getattr(mlp, "act_fn", None)
    if act is not None and act(torch.zeros(1)).item() != 0:
        raise ValueError(f"cannot bake mlp.in neurons into the weights: the activation {act} maps 0 to non-0")


def _drop_masker_hooks(model: nn.Module) -> None:
    # deepcopy shares hook functions, so a masker attached to the original would keep gating the copy.
    # transformers installs hooks of its own (output capturing) that must stay.
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key in [k for k, fn in hooks.items() if getattr(fn, "__module__", None) == masking.__name__]:
                del hooks[key]


def deactivate(model: nn.Module, neuron_ids, components: Sequence[str] = COMPONENTS) -> nn.Module:
    """A deep copy of `model` with the listed neurons removed: their weights and bias entries set to 0.

    Ids are those of a `NeuronMasker(model, components)`. The copy computes exactly what the masker does in
    "hard" mode with `set_hard(neuron_ids)`, needs no hooks, and can be saved with `save_pretrained`.
    The original model is left untouched.
    """
    edited = copy.deepcopy(model)
    _drop_masker_hooks(edited)
    columns = unit_columns(edited, neuron_ids, components)
    if "mlp.in" in components and columns:
        _activation_maps_zero_to_zero(edited, NeuronMasker(edited, components))
    with torch.no_grad():
        for module, cols in columns:
            module.weight.index_fill_(output_axis(module), cols, 0.0)
            if module.bias is not None:
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
