"""HardConcrete neuron gates over a causal LM, applied with forward hooks.

What a neuron is, the gate parameters and how privacy neurons are selected: docs/method.md, sections "Which
units are gated", "Gate parameters" and "Which gates are privacy neurons".
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from privloc import devices
from privloc.method import families, mask_file
from privloc.method.families import COMPONENTS

MODES = ("off", "sample", "deterministic", "hard")


class HardConcrete(nn.Module):
    """n gates; log_alpha is an nn.Parameter of shape [n]."""

    def __init__(self, n: int, init_log_alpha: float = 3.0, beta=2 / 3, gamma=-0.1, zeta=1.1, eps=1e-6):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((n,), float(init_log_alpha)))
        self.beta, self.gamma, self.zeta, self.eps = beta, gamma, zeta, eps

    def _stretch(self, s: Tensor) -> Tensor:
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        u = torch.empty_like(self.log_alpha).uniform_(generator=generator).clamp(self.eps, 1 - self.eps)
        return self._stretch(torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta))

    def deterministic(self) -> Tensor:
        return self._stretch(torch.sigmoid(self.log_alpha))

    def p_closed(self) -> Tensor:
        return 1 - torch.sigmoid(self.log_alpha - self.beta * math.log(-self.gamma / self.zeta))

    def p_open_exact(self) -> Tensor:
        # z == 1 iff s >= t = (1 - gamma) / (zeta - gamma), and logit(t) = log((1 - gamma) / (zeta - 1)).
        return torch.sigmoid(self.log_alpha - self.beta * math.log((1 - self.gamma) / (self.zeta - 1)))


class NeuronMasker:
    """Owns every gate of a causal LM of a known family and applies them with forward hooks (transformers 5
    has no head_mask). Where each component lives comes from the model's family description (`families`)."""

    def __init__(self, model: nn.Module, components=COMPONENTS, init_log_alpha: float = 3.0, mode="deterministic"):
        components = tuple(components)
        if not components or not set(components) <= set(COMPONENTS) or len(set(components)) != len(components):
            raise ValueError(f"components must be distinct names from {COMPONENTS}, got {components}")
        self.model, self.components = model, components
        self.family = families.of_model(model)
        self.blocks = self.family.blocks_of(model)
        sizes = self.family.component_sizes(model.config)
        self.component_sizes = {c: sizes[c] for c in components}
        self.n_layer, self.n_embd = len(self.blocks), int(model.config.hidden_size)
        # Layer-major ids: a layer's block of neurons holds its components in the given order.
        starts = np.cumsum([0] + [sizes[c] for c in components])
        self._start, self._per_layer = dict(zip(components, starts[:-1].tolist(), strict=True)), int(starts[-1])
        self.n_neurons = n = self._per_layer * self.n_layer
        device = devices.main_device(model)
        self.gates = HardConcrete(n, init_log_alpha).to(device)
        self._hard = torch.ones(n, device=device)
        self.generator: torch.Generator | None = None  # seeds the "sample" draws when set
        self._z_ext: Tensor | None = None
        self._handles: list = []
        self._frozen: dict[nn.Parameter, bool] | None = None
        self.mode = mode

    def neuron_id(self, layer: int, component: str, unit: int) -> int:
        return layer * self._per_layer + self._start[component] + unit

    def neuron_table(self) -> dict[str, np.ndarray]:
        sizes = np.array([self.component_sizes[c] for c in self.components])
        unit = np.concatenate([np.arange(s) for s in sizes])
        return {"layer": np.repeat(np.arange(self.n_layer), sizes.sum()),
                "component": np.tile(np.repeat(np.arange(len(sizes)), sizes), self.n_layer),
                "unit": np.tile(unit, self.n_layer)}

    def _as_ids(self, ids) -> np.ndarray:
        ids = ids.detach().cpu().numpy() if isinstance(ids, Tensor) else ids
        arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids)).reshape(-1)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"neuron ids must be integers, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.n_neurons):
            raise ValueError(f"neuron ids must lie in [0, {self.n_neurons}), got range [{arr.min()}, {arr.max()}]")
        return arr.astype(np.int64)

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode, self._z_ext = _check_mode(value), None

    def set_hard(self, closed_ids) -> None:
        """Fix the listed neurons closed and every other one open, and switch to mode "hard"."""
        closed = torch.as_tensor(self._as_ids(closed_ids), device=self.gates.log_alpha.device)
        self._hard = torch.ones(self.n_neurons, device=closed.device).index_fill_(0, closed, 0.0)
        self.mode = "hard"

    def gate_vector(self, mode: str | None = None) -> Tensor:
        """The [N] gates the hooks would use in `mode` (a fresh draw for "sample")."""
        mode = self._mode if mode is None else _check_mode(mode)
        if mode == "sample":
            return self.gates.sample(self.generator)
        if mode == "deterministic":
            return self.gates.deterministic()
        # Follows log_alpha, so that moving `gates` to another device moves every gate.
        return (self._hard if mode == "hard" else torch.ones_like(self._hard)).to(self.gates.log_alpha.device)

    def resample(self) -> None:
        """Recompute the gates shared by every hook; called once at the start of each model forward."""
        z = self.gate_vector()
        # The trailing 1 lets a partial q/k/v selection index "no gate" for the unmasked slices.
        self._z_ext = torch.cat([z, z.new_ones(1)])

    def _gate(self, index: Tensor, like: Tensor) -> Tensor:
        if self._z_ext is None:
            self.resample()
        # On a dispatched model the module may run on another device than the gates: the gate goes to it.
        return self._z_ext[index].to(device=like.device, dtype=like.dtype)

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def sites(self) -> list[tuple[nn.Module, bool, list[tuple[Tensor, int]]]]:
        """Where the gates act: (module, on its input?, [(columns of a component's units, their first id)]).

        Only sites with a gated component appear; the same module can appear twice (mlp.in on the input of the
        MLP's output projection, mlp.out on its output).
        """
        out = []
        for ly, block in enumerate(self.blocks):
            for site in self.family.sites(self.model.config):
                parts = [(cols, self.neuron_id(ly, c, 0)) for c, cols in site.columns.items()
                         if c in self.component_sizes]
                if parts:
                    out.append((block.get_submodule(site.module), site.pre, parts))
        return out

    def _index(self, module: nn.Module, pre: bool, parts) -> Tensor:
        # Columns of the module that carry no gated unit point at the trailing 1 of the gate vector.
        index = torch.full((_width(module, pre),), self.n_neurons, dtype=torch.long)
        for cols, first in parts:
            index[cols] = first + torch.arange(len(cols))
        return index.to(self.gates.log_alpha.device)

    def _hook(self, index: Tensor, pre: bool):
        def gate_output(module, args, output):
            return None if self._mode == "off" else output * self._gate(index, output)

        def gate_input(module, args):
            return None if self._mode == "off" else (args[0] * self._gate(index, args[0]), *args[1:])
        return gate_input if pre else gate_output

    def site_devices(self) -> list[torch.device]:
        """The device each hooked module runs on, where its gates are applied (one entry per site)."""
        return [devices.execution_device(module, self.model) for module, _, _ in self.sites()]

    def attach(self, freeze: bool = True) -> NeuronMasker:
        """Register the hooks; with `freeze`, model weights stop requiring grad until detach()."""
        if self.attached:
            return self
        h = self._handles
        # One draw per model forward, shared by every position, example and hooked module of that forward.
        # On the transformer body rather than the LM head model, so that callers that run the body alone (to
        # project only some positions onto the vocabulary) draw fresh gates too.
        body = getattr(self.model, "base_model", self.model)
        h.append(body.register_forward_pre_hook(lambda m, a: None if self._mode == "off" else self.resample()))
        for module, pre, parts in self.sites():
            hook = self._hook(self._index(module, pre, parts), pre)
            h.append(module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook))
        if freeze:
            self._frozen = {p: p.requires_grad for p in self.model.parameters()}
            for p in self._frozen:
                p.requires_grad_(False)
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        for p, flag in (self._frozen or {}).items():
            p.requires_grad_(flag)
        self._handles, self._z_ext, self._frozen = [], None, None

    def __enter__(self) -> NeuronMasker:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def parameters(self):
        return self.gates.parameters()

    @contextmanager
    def applied(self, mode: str | None = None, freeze: bool = True):
        """Attach (if needed) in `mode`; on exit restore the previous mode and attachment state."""
        was_attached, previous = self.attached, self._mode
        if not was_attached:
            self.attach(freeze=freeze)
        try:
            if mode is not None:
                self.mode = mode
            yield self
        finally:
            self.mode = previous
            if not was_attached:
                self.detach()

    def closed_ids(self) -> np.ndarray:
        return torch.nonzero(self.gates.deterministic().detach() == 0).flatten().cpu().numpy()

    def ranking(self) -> np.ndarray:
        # p_closed is decreasing in log_alpha; sorting log_alpha avoids ties from a saturated sigmoid.
        return np.argsort(self.gates.log_alpha.detach().cpu().numpy(), kind="stable")

    def top_k(self, k: int) -> np.ndarray:
        if not 0 <= k <= self.n_neurons:
            raise ValueError(f"k must lie in [0, {self.n_neurons}], got {k}")
        return self.ranking()[:k]

    def counts(self, ids) -> pd.DataFrame:
        """Neurons per layer (rows) and component (columns), with a "total" row and column."""
        ids, table = np.unique(self._as_ids(ids)), self.neuron_table()
        n_comp = len(self.components)
        grid = np.bincount(table["layer"][ids] * n_comp + table["component"][ids], minlength=self.n_layer * n_comp)
        grid = grid.reshape(self.n_layer, n_comp)
        df = pd.DataFrame(grid, index=pd.RangeIndex(self.n_layer, name="layer"), columns=list(self.components))
        df["total"] = df.sum(axis=1)
        df.loc["total"] = df.sum(axis=0)
        return df

    def _header(self) -> dict:
        return {"family": self.family.name, "n_layer": self.n_layer, "n_embd": self.n_embd,
                "components": list(self.components), "component_sizes": self.component_sizes,
                "n_neurons": self.n_neurons}

    def save(self, path, meta: dict | None = None) -> None:
        """Write <path>.safetensors (log_alpha) and <path>.json (family, sizes, layout and `meta`), atomically."""
        mask_file.write(path, self._header(), self.gates.log_alpha, meta)

    def load(self, path) -> dict:
        """Load log_alpha saved by save(); returns the stored meta. Refuses, changing nothing, a misfit mask:
        one of another family, of other sizes or over other components."""
        header, log_alpha = mask_file.read(path)
        mask_file.check_fits(path, header, self._header())
        if tuple(log_alpha.shape) != (self.n_neurons,):
            raise ValueError(f"mask {path}: log_alpha shape {tuple(log_alpha.shape)} != ({self.n_neurons},)")
        with torch.no_grad():
            self.gates.log_alpha.copy_(log_alpha)
        self._z_ext = None
        return header.get("meta", {})

    @classmethod
    def from_file(cls, model: nn.Module, path, **kwargs) -> NeuronMasker:
        header, _ = mask_file.read(path)
        masker = cls(model, components=tuple(header["components"]), **kwargs)
        masker.load(path)
        return masker


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def _width(module: nn.Module, pre: bool) -> int:
    """Features of a Linear's or Conv1D's input (`pre`) or output."""
    is_conv1d = type(module).__name__ == "Conv1D"  # transformers' Conv1D stores weights as [in, out]
    return module.weight.shape[0 if is_conv1d == pre else 1]
