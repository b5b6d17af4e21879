"""Removing memorised PII by editing weights rather than zeroing them.

Deactivation (mitigate.deactivate) sets the privacy neurons' weights to 0. Editing re-trains those same
weights instead, every other weight frozen, so that the model stops predicting the memorised PII while it keeps
predicting ordinary text:

    L = unlikelihood of every memorised PII token + keep_weight · cross-entropy of the non-PII tokens

With no neuron ids every weight is trained: the unconstrained unlearning reference. Editing matched random
units with the same budget says whether the localisation helps the removal at all.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from privloc.method.localize import pii_loss
from privloc.method.masking import COMPONENTS
from privloc.method.mitigate import _drop_masker_hooks, output_axis, unit_columns
from privloc.method.model import length_grouped_batches, next_token_logits, trim
from privloc.method.tokenizer import Encoded


@dataclass(frozen=True)
class EditConfig:
    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    keep_weight: float = 5.0  # the non-PII cross-entropy's weight: the utility the edit must keep
    loss: str = "unlikelihood"  # on every token of each memorised span (localize.pii_loss)
    seed: int = 0


def unit_weight_masks(model: torch.nn.Module, neuron_ids, components: Sequence[str] = COMPONENTS
                      ) -> dict[torch.nn.Parameter, torch.Tensor]:
    """For each parameter holding some of the units, a 0/1 tensor of the entries deactivation would zero."""
    masks: dict[torch.nn.Parameter, torch.Tensor] = {}
    for module, cols in unit_columns(model, neuron_ids, components):
        weight = masks.setdefault(module.weight, torch.zeros_like(module.weight))
        weight.index_fill_(output_axis(module), cols.to(weight.device), 1.0)
        if module.bias is not None:
            masks.setdefault(module.bias, torch.zeros_like(module.bias))[cols] = 1.0
    return masks


def edit_units(model: torch.nn.Module, enc: Encoded, neuron_ids=None, components: Sequence[str] = COMPONENTS,
               cfg: EditConfig | None = None, progress: bool = True) -> torch.nn.Module:
    """A copy of `model` whose units' weights (every weight with `neuron_ids` None) are re-trained to forget the
    memorised (`assoc`) PII of `enc`; the original is left as it is."""
    cfg = cfg or EditConfig()
    edited = copy.deepcopy(model)
    _drop_masker_hooks(edited)
    device = next(edited.parameters()).device
    masks = None if neuron_ids is None else unit_weight_masks(edited, neuron_ids, components)
    trained = list(edited.parameters()) if masks is None else list(masks)
    for p in edited.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    # Adam without weight decay: an entry whose gradient is always 0 (outside the units) never moves.
    optimizer = torch.optim.Adam(trained, lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    pii_mask, keep_mask = enc.target_mask(("assoc",)), enc.nonpii_mask()
    rows = pii_mask.any(dim=1).nonzero().flatten()
    if len(rows) == 0:
        raise ValueError("no memorised PII in this corpus: nothing to remove")
    batches = length_grouped_batches(enc.attention_mask[rows].sum(1), cfg.batch_size, generator)
    edited.eval()  # no dropout: the edit is judged on the deterministic model
    for _ in tqdm(range(cfg.steps), desc="edit", disable=not progress, leave=False):
        batch = rows[next(batches)]
        ids, attention = trim(enc.input_ids[batch], enc.attention_mask[batch])
        width = ids.shape[1] - 1
        ids, attention = ids.to(device), attention.to(device)
        pii, keep = pii_mask[batch, :width].to(device), keep_mask[batch, :width].to(device)
        targets = ids[:, 1:]
        pii_logits, keep_logits = next_token_logits(edited, ids, attention, pii, keep)
        loss = pii_loss(pii_logits.float(), targets[pii], cfg.loss) + cfg.keep_weight * F.cross_entropy(
            keep_logits.float(), targets[keep])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if masks is not None:
            for p, m in masks.items():
                p.grad.mul_(m)
        optimizer.step()
    for p in edited.parameters():
        p.requires_grad_(False)
    return edited
