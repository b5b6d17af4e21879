"""Batched decoding from many true prefixes at once: one padded prefix pass, then a key/value cache.

Prefixes are padded on the left, so that every row's next token sits in the last column; explicit position
ids keep each row's positions what they would be without the padding. The attacks (beam search, candidate
ranking) run hundreds of prefixes per model state, and this is what makes them cost seconds, not minutes.
"""

from __future__ import annotations

import torch


def device_of(model) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


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
    out = model(input_ids=ids.to(dev), attention_mask=mask, position_ids=positions, use_cache=True)
    return out.logits[:, -1].float().log_softmax(-1), out.past_key_values, mask, positions[:, -1] + 1


@torch.no_grad()
def extend(model, cache, mask: torch.Tensor, next_pos: torch.Tensor, tokens: torch.Tensor):
    """Feed `tokens` [N, T] after the cached rows: log-probabilities [N, T, V], the grown mask and next position."""
    n, t = tokens.shape
    dev = mask.device
    mask = torch.cat([mask, torch.ones(n, t, dtype=mask.dtype, device=dev)], 1)
    positions = next_pos.unsqueeze(1) + torch.arange(t, device=dev)
    # The cache goes in positionally: its keyword is renamed across transformers 5.x releases.
    out = model(tokens.to(dev), cache, attention_mask=mask, position_ids=positions, use_cache=True)
    return out.logits.float().log_softmax(-1), mask, next_pos + t


@torch.no_grad()
def beam_search(model, prefixes: list[torch.Tensor], lengths: list[int], width: int,
                chunk: int = 32) -> list[torch.Tensor]:
    """For each prefix, the `width` best continuations of its own length found by beam search, best first.

    Plain beam search on the sum of log-probabilities (no length penalty: every beam of a prefix has the same
    length). Returns one [width, length] tensor per prefix.
    """
    if width < 1:
        raise ValueError(f"beam width must be at least 1, got {width}")
    if len(prefixes) != len(lengths) or any(n < 1 for n in lengths):
        raise ValueError("one continuation length >= 1 per prefix is needed")
    # Prefixes share a chunk only with prefixes of the same continuation length: no row runs past its own end
    # (which costs time, and past the last position the model has).
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_length.setdefault(n, []).append(i)
    results: list[torch.Tensor | None] = [None] * len(prefixes)
    for n, members in sorted(by_length.items()):
        for lo in range(0, len(members), chunk):
            idx = members[lo: lo + chunk]
            for i, beams in zip(idx, _beam_chunk(model, [prefixes[i] for i in idx], n, width), strict=True):
                results[i] = beams
    return results


def _beam_chunk(model, prefixes, length, width):
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
    for step in range(length):
        total = (scores.unsqueeze(-1) + logp.view(n, width, vocab)).view(n, -1)
        top = total.topk(width, dim=1)
        beam, token = top.indices // vocab, top.indices % vocab
        scores = top.values
        seqs = torch.cat([seqs.gather(1, beam.unsqueeze(-1).expand(-1, -1, seqs.shape[2])), token.unsqueeze(-1)], 2)
        if step + 1 == length:
            break
        cache.reorder_cache((torch.arange(n, device=dev).unsqueeze(1) * width + beam).flatten())
        step_logp, mask, next_pos = extend(model, cache, mask, next_pos, token.view(-1, 1))
        logp = step_logp[:, -1]
    return list(seqs.cpu())


@torch.no_grad()
def sequence_logprobs(model, prefix: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    """Total log-likelihood of each row of `seqs` [M, L] as the continuation of one shared `prefix`."""
    logp, cache, mask, next_pos = prefix_state(model, [prefix])
    total = logp[0, seqs[:, 0].to(logp.device)]
    if seqs.shape[1] > 1:
        m = len(seqs)
        cache.batch_repeat_interleave(m)
        step_logp, _, _ = extend(model, cache, mask.expand(m, -1), next_pos.expand(m), seqs[:, :-1])
        total = total + step_logp.gather(-1, seqs[:, 1:].unsqueeze(-1).to(logp.device)).squeeze(-1).sum(1)
    return total.cpu()
