"""Baselines that pick neurons without learning a mask (docs/method.md, "Baselines").

Every ranking holds ALL neuron ids of a `NeuronMasker` with the same components, most "privacy" first, so
that any top-k compares with the learned mask's selection at an equal budget:

- random: `random_ranking`, and `random_matched` for a random set with the same count per layer and
  component as a reference set;
- activation contrast: mean |activation| where the next token is PII minus where it is not;
- integrated gradients (as DEPN): attribution of each gate to the log-likelihood of the PII targets.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from privloc import devices
from privloc.method.masking import NeuronMasker
from privloc.method.model import next_token_logits, trim
from privloc.method.tokenizer import Encoded


def rank(scores) -> np.ndarray:
    """Neuron ids by descending score; ties keep id order, so rankings are reproducible."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def random_ranking(n_neurons: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n_neurons)


def random_uniform(masker: NeuronMasker, k: int, seed: int = 0) -> np.ndarray:
    """`k` random ids (sorted) drawn uniformly from every gated unit: the usual random control."""
    return np.sort(random_ranking(masker.n_neurons, seed)[:k])


def random_matched(masker: NeuronMasker, reference_ids, seed: int = 0) -> np.ndarray:
    """Random ids (sorted) with as many neurons in every (layer, component) cell as `reference_ids`."""
    reference = np.unique(masker._as_ids(reference_ids))
    table = masker.neuron_table()
    cell = table["layer"] * len(masker.components) + table["component"]
    wanted = np.bincount(cell[reference], minlength=masker.n_layer * len(masker.components))
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(cell == c), n, replace=False) for c, n in enumerate(wanted) if n]
    return np.sort(np.concatenate(picks)) if picks else np.empty(0, dtype=np.int64)


# ---- shared plumbing ----------------------------------------------------------------------------------

def _layout(model: nn.Module, masker: NeuronMasker, cls=NeuronMasker) -> NeuronMasker:
    """A fresh `cls` on `model` with `masker`'s components: the same ids, and hooks that go on this model."""
    layout = cls(model, masker.components)
    if layout.n_neurons != masker.n_neurons:
        raise ValueError(f"masker has {masker.n_neurons} neurons but this model has {layout.n_neurons}")
    return layout


@contextmanager
def _measuring(model: nn.Module, masker: NeuronMasker):
    """Eval mode, and `masker` silenced if attached, so the scores describe the unmasked model."""
    was_training = model.training
    model.eval()
    try:
        with masker.applied(mode="off") if masker.attached else nullcontext():
            yield
    finally:
        model.train(was_training)


def _batches(enc: Encoded, pii_mask: Tensor, batch_size: int, device) -> list[tuple[Tensor, ...]]:
    """(ids, attention, pii, non-PII) for the rows with PII targets, in order, padding trimmed."""
    if tuple(pii_mask.shape) != (len(enc), enc.input_ids.shape[1] - 1):
        raise ValueError(f"pii_mask must have shape {(len(enc), enc.input_ids.shape[1] - 1)} "
                         f"(next-token targets), got {tuple(pii_mask.shape)}")
    pii_mask = pii_mask.bool() & enc.attention_mask[:, 1:].bool()
    rows = pii_mask.any(dim=1).nonzero().flatten()
    if len(rows) == 0:
        raise ValueError("pii_mask selects no target")
    nonpii = enc.nonpii_mask()
    out = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start: start + batch_size]
        ids, attention = trim(enc.input_ids[batch], enc.attention_mask[batch])
        width = ids.shape[1] - 1
        out.append(tuple(t.to(device) for t in (ids, attention, pii_mask[batch, :width], nonpii[batch, :width])))
    return out


def _log_likelihood(model: nn.Module, ids: Tensor, attention: Tensor, targets: Tensor) -> Tensor:
    """Summed log p(x_t+1 | x_≤t) over the positions t in `targets` ([B, L-1] bool)."""
    logits = next_token_logits(model, ids, attention, targets)
    return -F.cross_entropy(logits, ids[:, 1:][targets], reduction="sum")


def pii_log_likelihood(model: nn.Module, enc: Encoded, pii_mask: Tensor, batch_size: int = 16) -> float:
    """Summed log-likelihood of the PII targets, with the model as it runs now (hooks included)."""
    device = devices.main_device(model)
    with torch.no_grad():
        return sum(_log_likelihood(model, ids, att, pii).item() for ids, att, pii, _ in
                   _batches(enc, pii_mask, batch_size, device))


# ---- activation contrast ------------------------------------------------------------------------------

def activation_contrast_scores(model: nn.Module, enc: Encoded, masker: NeuronMasker, pii_mask: Tensor,
                               batch_size: int = 16, enc_contrast: Encoded | None = None) -> np.ndarray:
    """[N] mean |activation| of each unit where the next token is PII minus where it is ordinary text.

    The activation is the value the neuron's gate multiplies (post-GELU for mlp.in). Both means come from
    the rows that contain PII targets (`pii_mask`, [N, L-1]); non-PII positions are `enc.nonpii_mask()`.
    Every target position of `enc_contrast`, if given, joins the ordinary side.
    """
    layout = _layout(model, masker)
    device = devices.main_device(model)
    sums = torch.zeros(2, layout.n_neurons, dtype=torch.float64, device=device)
    weights: list[Tensor] = []  # the current batch's [2, B, L-1] position masks, read by the hooks

    def record(units):
        def accumulate(activation: Tensor) -> None:
            # Position t predicts target t+1; the last position predicts nothing.
            a = activation[:, : weights[0].shape[-1]].abs().double().to(sums.device)
            for cols, first in units:
                sums[:, first: first + len(cols)] += torch.einsum("kbt,btu->ku", weights[0], a[..., cols])
        return accumulate

    handles, counts = [], torch.zeros(2, dtype=torch.float64, device=device)
    try:
        with _measuring(model, masker), torch.no_grad():
            for module, pre, units in layout.sites():
                fn = record([(cols.to(device), first) for cols, first in units])
                handles.append(module.register_forward_pre_hook(lambda m, args, fn=fn: fn(args[0])) if pre
                               else module.register_forward_hook(lambda m, args, out, fn=fn: fn(out)))
            for ids, attention, pii, nonpii in _batches(enc, pii_mask, batch_size, device):
                weights[:] = [torch.stack([pii, nonpii]).double()]
                counts += weights[0].sum(dim=(1, 2))
                model(input_ids=ids, attention_mask=attention)
            if enc_contrast is not None:
                # Every target of the contrast corpus: the same batching, all of it on the ordinary side.
                for ids, attention, every, _ in _batches(enc_contrast, enc_contrast.attention_mask[:, 1:], batch_size,
                                                         device):
                    weights[:] = [torch.stack([torch.zeros_like(every), every]).double()]
                    counts += weights[0].sum(dim=(1, 2))
                    model(input_ids=ids, attention_mask=attention)
    finally:
        for handle in handles:
            handle.remove()
    means = sums / counts.clamp(min=1)[:, None]
    return (means[0] - means[1]).cpu().numpy()


def activation_contrast(model: nn.Module, enc: Encoded, masker: NeuronMasker, pii_mask: Tensor,
                        batch_size: int = 16, enc_contrast: Encoded | None = None) -> np.ndarray:
    """Ranking by `activation_contrast_scores`: units most active before PII first."""
    return rank(activation_contrast_scores(model, enc, masker, pii_mask, batch_size, enc_contrast))


# ---- integrated gradients -----------------------------------------------------------------------------

class _PathMasker(NeuronMasker):
    """Gates every neuron with one leaf tensor, `path`, so that backward leaves d logL / d gate in path.grad."""

    def __init__(self, model: nn.Module, components):
        super().__init__(model, components, mode="off")
        self.path = torch.ones(self.n_neurons, device=self.gates.log_alpha.device, requires_grad=True)

    def gate_vector(self, mode: str | None = None) -> Tensor:
        return self.path


def integrated_gradients_scores(model: nn.Module, enc: Encoded, masker: NeuronMasker, pii_mask: Tensor,
                                steps: int = 16, batch_size: int = 8) -> np.ndarray:
    """[N] integrated-gradients attribution of each gate to the summed log-likelihood of the PII targets.

    The path scales every gate jointly, z = α·1, from all closed (0) to all open (1); the integral is a
    right Riemann sum over α = k/steps, k = 1..`steps` (default 16): one forward and backward per step
    and batch. Attribution_i = (1 − 0) · mean_k ∂logL/∂z_i(α_k). By completeness the attributions sum
    to about logL(all open) − logL(all closed), closer as `steps` grows. Model weights stay frozen.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    path_masker = _layout(model, masker, cls=_PathMasker)
    device = devices.main_device(model)
    batches = _batches(enc, pii_mask, batch_size, device)
    z = path_masker.path
    with _measuring(model, masker), path_masker.applied(mode="hard", freeze=True):
        for k in range(1, steps + 1):
            with torch.no_grad():
                z.fill_(k / steps)
            for ids, attention, pii, _ in batches:
                # Gradients of every (step, batch) accumulate in z.grad: their sum over batches is ∂logL/∂z.
                _log_likelihood(model, ids, attention, pii).backward()
    return (z.grad.double() / steps).cpu().numpy()


def integrated_gradients(model: nn.Module, enc: Encoded, masker: NeuronMasker, pii_mask: Tensor,
                         steps: int = 16, batch_size: int = 8) -> np.ndarray:
    """Ranking by `integrated_gradients_scores` (16 Riemann steps by default): neurons that most raise the
    likelihood of the PII targets first."""
    return rank(integrated_gradients_scores(model, enc, masker, pii_mask, steps, batch_size))
