"""Removing memorised PII by editing weights rather than zeroing them.

Deactivation (mitigate.deactivate) sets the privacy neurons' weights to 0. Editing re-trains those same
weights instead, every other weight frozen, so that the model stops predicting the memorised PII while it keeps
predicting ordinary text:

    L = unlikelihood of every memorised PII token + keep_weight · cross-entropy of the non-PII tokens

With no neuron ids every weight is trained: the unconstrained unlearning reference. Editing matched random
units with the same budget says whether the localisation helps the removal at all. The loss "npo" replaces the
unlikelihood with negative preference optimisation (Zhang, Lin, Bai & Mei 2024): each document's memorised PII
is treated as a dispreferred answer against the model before the edit,

    L_npo = -(2/β) · log σ(-β · (log p(PII | context) - log p_before(PII | context)))

which pushes the PII's probability down quickly at first and then ever more gently, where gradient ascent
keeps pushing until the model breaks.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from privloc import devices
from privloc.config import EditConfig
from privloc.method.localize import pii_loss
from privloc.method.masking import COMPONENTS
from privloc.method.mitigate import _drop_masker_hooks, output_axis, unit_columns
from privloc.method.model import length_grouped_batches, next_token_logits, trim
from privloc.method.tokenizer import Encoded


class Edited(NamedTuple):
    model: torch.nn.Module
    seconds: float  # of the edit up to this strength


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
    memorised (`assoc`) PII of `enc`; the original is left as it is. With `cfg.loss` "overwrite", `enc` is text
    whose PII was substituted (corpora.data.substitute) and the objective is its plain cross-entropy."""
    cfg = cfg or EditConfig()
    return edit_path(model, enc, neuron_ids, components, cfg, (cfg.steps,), progress)[cfg.steps].model


def edit_path(model: torch.nn.Module, enc: Encoded, neuron_ids, components: Sequence[str], cfg: EditConfig,
              at: Sequence[int], progress: bool = True, npo_beta: float = 0.1) -> dict[int, Edited]:
    """The edit of edit_units after each step count in `at` (one run, a copy kept at each count): the same
    removal at several strengths, for a trade-off curve. `npo_beta` is β of the loss "npo"."""
    at = sorted(set(int(a) for a in at))
    if not at or at[0] < 1:
        raise ValueError(f"step counts must be positive, got {at}")
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
    overwrite = cfg.loss == "overwrite"
    pii_mask, keep_mask = enc.target_mask(("assoc",)), enc.nonpii_mask()
    rows = torch.arange(len(enc)) if overwrite else pii_mask.any(dim=1).nonzero().flatten()
    if len(rows) == 0 or not pii_mask.any():
        raise ValueError("no memorised PII in this corpus: nothing to remove")
    batches = length_grouped_batches(enc.attention_mask[rows].sum(1), cfg.batch_size, generator)
    edited.eval()  # no dropout: the edit is judged on the deterministic model
    kept, start = {}, time.perf_counter()
    for step in tqdm(range(1, at[-1] + 1), desc="edit", disable=not progress, leave=False):
        batch = rows[next(batches)]
        ids, attention = trim(enc.input_ids[batch], enc.attention_mask[batch])
        width = ids.shape[1] - 1
        ids, attention = ids.to(device), attention.to(device)
        pii, keep = pii_mask[batch, :width].to(device), keep_mask[batch, :width].to(device)
        targets = ids[:, 1:]
        if overwrite:  # plain language modelling of text whose PII was substituted
            valid = attention[:, 1:].bool()
            with devices.autocast(cfg.autocast, device):
                logits = next_token_logits(edited, ids, attention, valid)
            loss = F.cross_entropy(logits.float(), targets[valid])
        else:
            with devices.autocast(cfg.autocast, device):
                pii_logits, keep_logits = next_token_logits(edited, ids, attention, pii, keep)
            if cfg.loss == "npo":
                forget = _npo_loss(model, pii_logits, ids, attention, pii, targets, npo_beta, cfg.autocast, device)
            else:
                forget = pii_loss(pii_logits.float(), targets[pii], cfg.loss)
            loss = forget + cfg.keep_weight * F.cross_entropy(keep_logits.float(), targets[keep])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if masks is not None:
            for p, m in masks.items():
                p.grad.mul_(m)
        optimizer.step()
        if step in at:
            snapshot = copy.deepcopy(edited) if step != at[-1] else edited
            for p in snapshot.parameters():
                p.requires_grad_(False)
            kept[step] = Edited(snapshot, time.perf_counter() - start)
    return kept


def _npo_loss(reference, pii_logits, ids, attention, pii, targets, beta: float, autocast, device) -> torch.Tensor:
    """NPO on each document's memorised PII: log-probabilities summed over the document's PII tokens, against
    those of `reference` (the model before the edit)."""
    doc = pii.nonzero()[:, 0]

    def per_document(logits):
        token = logits.float().log_softmax(-1).gather(-1, targets[pii][:, None]).squeeze(-1)
        return torch.zeros(len(ids), device=token.device).index_add(0, doc, token)[doc.unique()]

    with torch.no_grad(), devices.autocast(autocast, device):
        before = per_document(next_token_logits(reference, ids, attention, pii))
    ratio = per_document(pii_logits) - before
    return -(2.0 / beta) * F.logsigmoid(-beta * ratio).mean()
