"""Rank editing in vocabulary space: REVS (Ashuach, Tutek & Belinkov, Findings of ACL 2025) in privloc's terms.

An MLP hidden unit (component `mlp.in`) writes one vector into the residual stream, its column of the MLP's
output projection. Read through the final norm's gain and the unembedding, that vector scores every token of
the vocabulary: its vocabulary projection. A unit that helps complete a memorised value scores the value's
tokens high. The edit lowers one target token in a unit's projection to rank `demote_rank` and maps the scores
back to the hidden space through the pseudo-inverse of the (gain-scaled) unembedding: the change of the vector
that moves the target's score and the other scores as little as possible, repeated while the target still
ranks above the aim. No gradient, and nothing read but the documents to forget.

Which tokens: of each memorised span, the `tokens_per_span` rarest in those documents (the attacker needs the
whole string, so its rarest pieces are the ones worth breaking, REVS's argument). Which units, per target
token (its document and position): in the `layers` layers whose residual stream there ranks the token highest
(the logit lens), the `candidates` units most active at that position, of which the `units_per_target` whose
projection ranks the token highest (REVS's hybrid of activation and vocabulary association). A `pool`
restricts every choice to given units: our localised ones, or matched random ones.

Of the six components only `mlp.in` units own such a vector: q and k units write nothing into the residual
stream, a v unit writes through an attention output projection shared by several query heads, and `attn.o` /
`mlp.out` units are coordinates of the residual stream, whose vocabulary row every writer shares. A pool's
other units are left as they are (`RankEdited.skipped` counts them).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from privloc.config import RankEditConfig
from privloc.method import families
from privloc.method.families import COMPONENTS
from privloc.method.lens import block_outputs, lens_parts
from privloc.method.masking import NeuronMasker
from privloc.method.mitigate import _drop_masker_hooks, output_axis
from privloc.method.model import trim
from privloc.method.tokenizer import Encoded

UNIT = "mlp.in"


class RankEdited(NamedTuple):
    model: torch.nn.Module
    seconds: float
    targets: int  # (document, position, token) triples demoted
    units: int  # distinct units whose vector was rewritten
    skipped: int  # units of the pool that own no vector in vocabulary space (not mlp.in)


class _Layer(NamedTuple):
    module: torch.nn.Module  # the MLP output projection
    columns: torch.Tensor  # column of each mlp.in unit in its input
    allowed: torch.Tensor  # [n_units] bool: the pool's units of this layer


def _layers(model, pool, components: Sequence[str]) -> tuple[list[_Layer], int]:
    """Each layer's MLP output projection, and which of its units the pool allows (all without a pool)."""
    family = families.of_model(model)
    site = next(s for s in family.sites(model.config) if UNIT in s.columns)
    blocks = family.blocks_of(model)
    n_units = len(site.columns[UNIT])
    allowed = torch.ones(len(blocks), n_units, dtype=torch.bool)
    skipped = 0
    if pool is not None:
        layout = NeuronMasker(model, components)  # only for the id layout: nothing is attached
        ids = np.unique(layout._as_ids(pool))
        table = layout.neuron_table()
        mine = np.asarray([layout.components[c] == UNIT for c in table["component"][ids]], dtype=bool)
        skipped = int((~mine).sum())
        allowed[:] = False
        allowed[table["layer"][ids][mine], table["unit"][ids][mine]] = True
    return [_Layer(b.get_submodule(site.module), site.columns[UNIT], allowed[i]) for i, b in enumerate(blocks)], skipped


def _vectors(layer: _Layer, units: torch.Tensor) -> torch.Tensor:
    """[len(units), d]: what each unit writes into the residual stream (a view of the weight's layout)."""
    w, cols = layer.module.weight, layer.columns[units].to(layer.module.weight.device)
    return w[cols] if output_axis(layer.module) == 1 else w[:, cols].T


def _write(layer: _Layer, unit: int, vector: torch.Tensor) -> None:
    w, col = layer.module.weight, int(layer.columns[unit])
    if output_axis(layer.module) == 1:
        w[col] = vector
    else:
        w[:, col] = vector


def targets(enc: Encoded, tokens_per_span: int) -> list[tuple[int, int, int]]:
    """(row, position, token): the rarest `tokens_per_span` tokens of each memorised span (a run of `assoc` PII
    tokens with one span id), each at the position that predicts it. Rarity is counted over the documents'
    own tokens."""
    counts = torch.bincount(enc.input_ids[enc.attention_mask.bool()], minlength=int(enc.input_ids.max()) + 1)
    memorised = torch.zeros_like(enc.attention_mask, dtype=torch.bool)
    memorised[:, 1:] = enc.target_mask(("assoc",))
    out = []
    for row, q in memorised.nonzero().tolist():
        if q > 1 and memorised[row, q - 1] and enc.span_id[row, q - 1] == enc.span_id[row, q]:
            continue  # not the first token of its span
        end = q
        while end < memorised.shape[1] and memorised[row, end] and enc.span_id[row, end] == enc.span_id[row, q]:
            end += 1
        tokens = enc.input_ids[row, q:end]
        order = sorted(range(end - q), key=lambda i: (int(counts[tokens[i]]), i))[:tokens_per_span]
        out += [(row, q + i - 1, int(tokens[i])) for i in sorted(order)]
    return out


def _ranks(scores: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """1 + the number of tokens scored strictly higher than `token`, per row of `scores` [..., V] (`token`
    [...] or [..., 1])."""
    token = token.reshape(*scores.shape[:-1], 1)
    return 1 + (scores > scores.gather(-1, token)).sum(-1)


def _demote(vectors: torch.Tensor, token: int, scale: torch.Tensor, back: torch.Tensor, leverage: torch.Tensor,
            aim: int, rounds: int) -> torch.Tensor:
    """`vectors` [k, d] changed so that `token` ranks at least `aim` in each one's projection `scale @ vector`:
    each round moves the token's score to just under the score ranked `aim`, along the pseudo-inverse's column
    for the token (divided by its leverage, so that the token's own score moves by exactly that much)."""
    direction = back[:, token] / leverage[token]  # a move of 1 along it raises the token's score by 1
    shift = scale @ direction  # [V]: how every score moves with it (shift[token] = 1)
    scores, total = vectors @ scale.T, torch.zeros(len(vectors), device=vectors.device)
    for _ in range(rounds):
        own = scores[:, token]
        above = 1 + (scores > own[:, None]).sum(1) < aim
        if not above.any():
            break
        floor = scores.topk(aim, dim=1).values[:, -1]
        step = torch.where(above, (floor - own) - 1e-3 * scores.abs().amax(1), 0.0)
        scores = scores + step[:, None] * shift[None, :]  # the scores are linear in the vector: no new projection
        total += step
    return vectors + total[:, None] * direction[None, :]


@torch.no_grad()
def rank_edit(model: torch.nn.Module, enc: Encoded, pool=None, components: Sequence[str] = COMPONENTS,
              cfg: RankEditConfig | None = None, progress: bool = True) -> RankEdited:
    """A copy of `model` whose chosen MLP units no longer promote the memorised PII of `enc` (see the module's
    docstring); `pool` (ids of a NeuronMasker(model, components)) restricts the units, None lets it choose among
    every MLP unit. The original is left as it is."""
    cfg = cfg or RankEditConfig()
    start = time.perf_counter()
    edited = copy.deepcopy(model).eval()
    _drop_masker_hooks(edited)
    layers, skipped = _layers(edited, pool, components)
    if not any(layer.allowed.any() for layer in layers):
        raise ValueError("the pool holds no MLP unit (mlp.in): a rank edit has nothing to rewrite")
    _, _, norm, head = lens_parts(edited)
    device = head.weight.device
    scale = (head.weight.float() * norm.weight.float()[None, :]).to(device)  # [V, d] gain-scaled unembedding
    back = torch.linalg.pinv(scale)  # [d, V]
    # Choosing layers and units only needs ranks: in bf16 (3.5x faster on a 49k vocabulary); demotion is fp32.
    rough, head_rough = scale.bfloat16(), head.weight.detach().bfloat16()
    leverage = (scale * back.T).sum(1)  # (scale @ back)[t, t]: how much of a move along back[:, t] reaches t
    aim = min(cfg.demote_rank, scale.shape[0] - 1)
    chosen = targets(enc, cfg.tokens_per_span)
    if not chosen:
        raise ValueError("no memorised PII in these documents: nothing to remove")
    by_row: dict[int, list[tuple[int, int]]] = {}
    for row, pos, token in chosen:
        by_row.setdefault(row, []).append((pos, token))
    rows, touched = sorted(by_row), set()
    for first in tqdm(range(0, len(rows), cfg.batch_size), desc="rank edit", disable=not progress, leave=False):
        batch = rows[first: first + cfg.batch_size]
        # Activations and residual streams of the model as edited so far: later edits see earlier ones.
        acts, resid = _read(edited, layers, enc, batch, device)
        for i, row in enumerate(batch):
            positions = torch.tensor([pos for pos, _ in by_row[row]])
            tokens = torch.tensor([token for _, token in by_row[row]], device=device)
            # The logit lens at every layer for every target of the row: [layers, targets].
            lens = norm(torch.stack([r[i, positions] for r in resid])).bfloat16() @ head_rough.T
            ranks = _ranks(lens, tokens.expand(len(layers), -1).reshape(len(layers), -1, 1)).float()
            for j, (pos, token) in enumerate(by_row[row]):
                for ly in torch.argsort(ranks[:, j], stable=True)[: cfg.layers].tolist():
                    touched |= _edit_layer(layers[ly], ly, acts[ly][i, pos], token, (scale, rough), back, leverage,
                                           aim, cfg)
    return RankEdited(edited, time.perf_counter() - start, len(chosen), len(touched), skipped)


def _edit_layer(layer: _Layer, ly: int, act: torch.Tensor, token: int, scales, back, leverage, aim: int,
                cfg: RankEditConfig) -> set[tuple[int, int]]:
    """Edit the units of one layer chosen for one target token; returns the (layer, unit) pairs rewritten.
    `scales`: the scaled unembedding in fp32 (for the edit) and bf16 (for choosing)."""
    scale, rough = scales
    act = act.float().cpu().masked_fill(~layer.allowed, 0.0)
    allowed = int(layer.allowed.sum())
    if allowed == 0:
        return set()
    units = torch.topk(act.abs(), min(cfg.candidates, allowed)).indices
    units = units[act[units] != 0]
    if len(units) == 0:
        return set()
    sign = torch.sign(act[units]).to(scale.device)
    vectors = _vectors(layer, units).float() * sign[:, None]  # as the unit acts here
    ranks = _ranks(vectors.bfloat16() @ rough.T, torch.full((len(units),), token, device=scale.device))
    keep = torch.argsort(ranks, stable=True)[: cfg.units_per_target]
    keep = keep[ranks[keep] < aim]  # a unit that does not promote the token has nothing to demote
    if len(keep) == 0:
        return set()
    new = _demote(vectors[keep], token, scale, back, leverage, aim, cfg.rounds) * sign[keep, None]
    for k, vector in zip(keep.tolist(), new, strict=True):
        _write(layer, int(units[k]), vector.to(layer.module.weight.dtype))
    return {(ly, int(units[k])) for k in keep.tolist()}


def _read(model, layers: list[_Layer], enc: Encoded, batch: list[int], device):
    """The MLP units' activations (input of each output projection) and each block's output, for `batch`."""
    ids, attention = trim(enc.input_ids[batch], enc.attention_mask[batch])
    acts = []
    handles = [layer.module.register_forward_pre_hook(lambda m, a: acts.append(a[0].detach())) for layer in layers]
    try:
        resid = block_outputs(model, ids.to(device), attention.to(device))
    finally:
        for h in handles:
            h.remove()
    return [a.index_select(-1, layer.columns.to(a.device)) for layer, a in zip(layers, acts, strict=True)], resid
