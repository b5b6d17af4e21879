"""Batched decoding from many true prefixes at once: one padded prefix pass, then a key/value cache.

Prefixes are padded on the left, so that every row's next token sits in the last column; explicit position
ids keep each row's positions what they would be without the padding. The attacks (beam search, candidate
ranking) run hundreds of prefixes per model state, and this is what makes them cost seconds, not minutes.
"""

from __future__ import annotations

import copy
import inspect

import torch

from privloc import devices


def device_of(model) -> torch.device:
    """Where inputs go: the input embeddings' device (accelerate's execution device on a dispatched model)."""
    return devices.main_device(model)


def _cache_keyword(model) -> str:
    # transformers 5.x renamed `past_key_values` to `cache`, and its position differs between families.
    names = inspect.signature(model.forward).parameters
    return "cache" if "cache" in names else "past_key_values"


def _lean(device: torch.device) -> bool:
    """Whether the forwards run under autocast (attacks.attack_suite's `autocast`).

    Then the results differ from the fp32 figures anyway, and arithmetic that equals the historical one only in
    exact arithmetic, not bit for bit, is used where it costs less. In fp32 every op is as the figures had it.
    """
    return torch.is_autocast_enabled(device.type)


def left_pad(prefixes: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids [N, P], attention mask [N, P] and position ids [N, P] of left-padded prefixes."""
    width = max(len(p) for p in prefixes)
    ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prefixes), width, dtype=torch.long)
    for i, p in enumerate(prefixes):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, positions


@torch.no_grad()
def prefix_state(model, prefixes: list[torch.Tensor]):
    """Run the prefixes once: (log-probabilities of the next token [N, V], cache, attention mask, next position)."""
    ids, mask, positions = left_pad(prefixes)
    dev = device_of(model)
    mask, positions = mask.to(dev), positions.to(dev)
    padded = not bool(mask.all())
    keep = {}
    if _lean(dev) and "logits_to_keep" in inspect.signature(model.forward).parameters:
        # Only the last position's logits are used: the others would cost a vocabulary projection each (in fp32
        # they are kept, as a one-row projection can round differently from the full one).
        keep["logits_to_keep"] = 1
    out = model(input_ids=ids.to(dev), attention_mask=mask if padded else None,
                position_ids=positions if padded else None, use_cache=True, **keep)
    return out.logits[:, -1].float().log_softmax(-1), out.past_key_values, mask, positions[:, -1] + 1


def _step_inputs(mask: torch.Tensor, next_pos: torch.Tensor, tokens: torch.Tensor, cache, model):
    """The keyword arguments of a forward that feeds `tokens` [N, T] after the cached rows, and the grown mask."""
    n, t = tokens.shape
    dev = mask.device
    mask = torch.cat([mask, torch.ones(n, t, dtype=mask.dtype, device=dev)], 1)
    positions = next_pos.unsqueeze(1) + torch.arange(t, device=dev)
    # Without padding the model needs no mask, and attention takes its fast causal path.
    padded = not bool(mask.all())
    return {"attention_mask": mask if padded else None, "position_ids": positions if padded else None,
            "use_cache": True, _cache_keyword(model): cache}, mask


@torch.no_grad()
def extend(model, cache, mask: torch.Tensor, next_pos: torch.Tensor, tokens: torch.Tensor):
    """Feed `tokens` [N, T] after the cached rows: log-probabilities [N, T, V], the grown mask and next position."""
    kwargs, grown = _step_inputs(mask, next_pos, tokens, cache, model)
    out = model(tokens.to(mask.device), **kwargs)
    return out.logits.float().log_softmax(-1), grown, next_pos + tokens.shape[1]


@torch.no_grad()
def extend_logprobs(model, cache, mask: torch.Tensor, next_pos: torch.Tensor, tokens: torch.Tensor,
                    targets: torch.Tensor, rows: int = 32) -> torch.Tensor:
    """Feed `tokens` [N, T] after the cached rows: the log-probabilities [N, T] of `targets` [N, T] only.

    In fp32, `extend`'s full log-softmax, gathered. Under autocast the body runs alone and its last hidden
    state is projected `rows` positions at a time, each block's logsumexp taken in fp32 while it is in cache:
    the [N, T, V] logits (272 MB for 99 candidates of 15 tokens over 49,152 tokens) are never materialised.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not _lean(mask.device) or head is None or not hasattr(model, "base_model"):
        logp, _, _ = extend(model, cache, mask, next_pos, tokens)
        return logp.gather(-1, targets.to(logp.device).unsqueeze(-1)).squeeze(-1)
    body = model.base_model
    # The body's last hidden state is after the final norm in every family privloc knows.
    hidden = body(tokens.to(mask.device), **_step_inputs(mask, next_pos, tokens, cache, body)[0]).last_hidden_state
    flat = hidden.reshape(-1, hidden.shape[-1]).to(devices.execution_device(head, model))
    want = targets.reshape(-1).to(flat.device)
    out = torch.empty(len(want), device=flat.device)
    for lo in range(0, len(want), rows):
        logits = head(flat[lo: lo + rows]).float()
        out[lo: lo + rows] = logits.gather(-1, want[lo: lo + rows, None]).squeeze(-1) - logits.logsumexp(-1)
    return out.view(targets.shape).to(mask.device)


@torch.no_grad()
def beam_search(model, prefixes: list[torch.Tensor], lengths: list[int], width: int,
                chunk: int = 32) -> list[torch.Tensor]:
    """For each prefix, the `width` best continuations of its own length found by beam search, best first.

    Plain beam search on the sum of log-probabilities (no length penalty: every beam of a prefix has the same
    length). Returns one [width, length] tensor per prefix.
    """
    _check_beam(prefixes, lengths, width)
    out: list = [None] * len(prefixes)
    # Prefixes share a chunk only with prefixes of the same continuation length: no row runs past its own end
    # (which costs time, and past the last position the model has).
    for n, idx in _chunks_by_length(lengths, chunk, prefixes if _lean(device_of(model)) else None):
        for i, beams in zip(idx, _beam_chunk(model, [prefixes[i] for i in idx], n, width), strict=True):
            out[i] = beams
    return out


@torch.no_grad()
def beam_finds(model, prefixes: list[torch.Tensor], targets: list[torch.Tensor], width: int,
               chunk: int = 32) -> list[bool]:
    """Whether each target is among the `width` final beams of a beam search from its prefix.

    The same search as `beam_search`, but a prefix whose target has fallen out of its beams is dropped at
    once: beams only ever extend beams, so the target cannot come back.
    """
    lengths = [len(t) for t in targets]
    _check_beam(prefixes, lengths, width)
    out: list = [None] * len(prefixes)
    for n, idx in _chunks_by_length(lengths, chunk, prefixes if _lean(device_of(model)) else None):
        hits = _beam_chunk(model, [prefixes[i] for i in idx], n, width, torch.stack([targets[i] for i in idx]))
        for i, hit in zip(idx, hits, strict=True):
            out[i] = hit
    return out


def _check_beam(prefixes, lengths, width):
    if width < 1:
        raise ValueError(f"beam width must be at least 1, got {width}")
    if len(prefixes) != len(lengths) or any(n < 1 for n in lengths):
        raise ValueError("one continuation length >= 1 per prefix is needed")


def _beam_chunk(model, prefixes, length, width, targets=None):
    logp, cache, mask, next_pos = prefix_state(model, prefixes)
    n, vocab = logp.shape
    dev = logp.device
    cache.batch_repeat_interleave(width)
    mask, next_pos = mask.repeat_interleave(width, 0), next_pos.repeat_interleave(width, 0)
    logp = logp.repeat_interleave(width, 0)
    # Only beam 0 is live at the start, so the first step picks `width` distinct tokens.
    scores = torch.full((n, width), float("-inf"), device=dev)
    scores[:, 0] = 0.0
    seqs = torch.empty(n, width, 0, dtype=torch.long, device=dev)
    span_of = torch.arange(n, device=dev)  # the prefix each remaining group of beams belongs to
    found = torch.ones(n, dtype=torch.bool, device=dev)
    for step in range(length):
        m = len(span_of)
        top = (scores.unsqueeze(-1) + logp.view(m, width, vocab)).view(m, -1).topk(width, dim=1)
        beam, token = top.indices // vocab, top.indices % vocab
        scores = top.values
        seqs = torch.cat([seqs.gather(1, beam.unsqueeze(-1).expand(-1, -1, seqs.shape[2])), token.unsqueeze(-1)], 2)
        keep = torch.ones(m, dtype=torch.bool, device=dev)
        if targets is not None:
            keep = (seqs == targets[span_of, : step + 1].to(dev).unsqueeze(1)).all(-1).any(-1)
            found[span_of[~keep]] = False
        if step + 1 == length or not keep.any():
            break
        # One gather both reorders the cache by beam and drops the prefixes already settled.
        rows = (torch.arange(m, device=dev).unsqueeze(1) * width + beam)[keep].flatten()
        cache.batch_select_indices(rows)
        mask, next_pos = mask[rows], next_pos[rows]
        span_of, scores, seqs, token = span_of[keep], scores[keep], seqs[keep], token[keep]
        step_logp, mask, next_pos = extend(model, cache, mask, next_pos, token.reshape(-1, 1))
        logp = step_logp[:, -1]
    return found.tolist() if targets is not None else list(seqs.cpu())


def _chunks_by_length(lengths: list[int], size: int, prefixes: list[torch.Tensor] | None = None):
    """Index groups of equal length, at most `size` each; with `prefixes`, of like prefix length within a length.

    The prefixes of a chunk are left-padded to its longest: on the 135M model's corpora (prefixes of 2-220
    tokens) chunks in span order computed about twice the positions they needed. Under autocast (`_lean`)
    the searches pass their prefixes; in fp32 the chunks stay as the figures had them (a row's padding can
    move its logits by a rounding error).
    """
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_length.setdefault(n, []).append(i)
    for n, members in sorted(by_length.items()):
        if prefixes is not None:
            members = sorted(members, key=lambda i: len(prefixes[i]))
        for lo in range(0, len(members), size):
            yield n, members[lo: lo + size]


@torch.no_grad()
def rank_among(model, prefixes: list[torch.Tensor], truths: list[torch.Tensor],
               others: list[list[list[int]]], max_rows: int = 100) -> list[tuple[float, int]]:
    """For each prefix, the 1-based rank of its truth among itself and its `others` by total log-likelihood.

    Ties count half. Every sequence of a prefix must have the truth's length. Exact, but cheap when the
    model knows the truth: log-probabilities only add up negatively, so a candidate whose first token alone
    is less likely than the whole truth can never overtake it and is not scored further.
    Returns (rank, number of ranked sequences) per prefix.
    """
    lengths = [len(t) for t in truths]
    if any(len(o) != n for seqs, n in zip(others, lengths, strict=True) for o in seqs):
        raise ValueError("every candidate must have as many tokens as its truth")
    out: list[tuple[float, int] | None] = [None] * len(prefixes)
    per_chunk = max(1, max_rows // max(1, max((len(o) for o in others), default=1)))
    for length, idx in _chunks_by_length(lengths, per_chunk):
        for i, result in zip(idx, _rank_chunk(model, [prefixes[i] for i in idx], [truths[i] for i in idx],
                                               [others[i] for i in idx], length), strict=True):
            out[i] = result
    return out


def _rows_of(cache, owner: torch.Tensor) -> None:
    """Make the cache hold row `owner[j]` of itself at row j (in place)."""
    layers = getattr(cache, "layers", None)
    if layers and len(owner) and bool((owner == owner[0]).all()):
        # One prefix for every row: a broadcast view, copied once by the next forward's cache update, rather
        # than a gather that copies it once more.
        for layer in layers:
            layer.keys = layer.keys[owner[:1]].expand(len(owner), *layer.keys.shape[1:])
            layer.values = layer.values[owner[:1]].expand(len(owner), *layer.values.shape[1:])
    else:
        cache.batch_select_indices(owner)


def _rank_chunk(model, prefixes, truths, others, length):
    logp, cache, mask, next_pos = prefix_state(model, prefixes)
    dev = logp.device
    truth = torch.stack(truths).to(dev)
    truth_total = logp.gather(1, truth[:, :1]).squeeze(1)
    if length > 1:
        step_logp = extend_logprobs(model, copy.deepcopy(cache), mask, next_pos, truth[:, :-1], truth[:, 1:])
        truth_total = truth_total + step_logp.sum(1)
    owner = torch.tensor([s for s, seqs in enumerate(others) for _ in seqs], dtype=torch.long, device=dev)
    higher = torch.zeros(len(prefixes), device=dev)
    ties = torch.zeros(len(prefixes), device=dev)
    if len(owner):
        seqs = torch.tensor([o for group in others for o in group], dtype=torch.long, device=dev)
        total = logp[owner, seqs[:, 0]]
        alive = total >= truth_total[owner]
        owner, seqs, total = owner[alive], seqs[alive], total[alive]
        _rows_of(cache, owner)
        mask, next_pos = mask[owner], next_pos[owner]
        # The first token's log-probability came with the prefix: most candidates of a model that knows the
        # truth fall behind there. The rest are scored in one pass (pruning token by token again would copy the
        # cache at every step, which costs more than it saves).
        if length > 1 and len(owner):
            total = total + extend_logprobs(model, cache, mask, next_pos, seqs[:, :-1], seqs[:, 1:]).sum(1)
        higher.index_add_(0, owner, (total > truth_total[owner]).float())
        ties.index_add_(0, owner, (total == truth_total[owner]).float())
    return [(1 + float(h) + 0.5 * float(e), 1 + len(o))
            for h, e, o in zip(higher.tolist(), ties.tolist(), others, strict=True)]
