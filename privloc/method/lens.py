"""The logit lens of a span (Patil, Hase & Bansal's head projection), a few layers at a time.

Each block's output at each span position goes through the final norm and the unembedding; the rank of the
true next token there is 1 + the number of tokens with a strictly larger logit. A 30-layer model with a
49,152-token vocabulary makes 1.5M logits per span token, so the logits of a span are made and counted a
block of layers at a time, never for every layer at once. A small model's span fits in one block, which is
then exactly the computation of the whole stack.
"""

from __future__ import annotations

import torch

from privloc import devices
from privloc.method import families

# Logits held at once (64 MiB in fp32): every layer of a span of the 4-layer GPT-2 victims (≤ 4 × 40 × 2048),
# a few layers of a 49,152-token vocabulary.
MAX_LOGITS = 1 << 24


def lens_parts(model):
    """(body, blocks, final norm, unembedding) of a causal LM, from its family's description."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or not hasattr(model, "config"):
        raise TypeError(f"the logit lens needs a causal LM with an unembedding; got {type(model).__name__}")
    family = families.of_model(model)
    return model.base_model, family.blocks_of(model), family.final_norm_of(model), head


def block_outputs(model, ids: torch.Tensor, attention: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream [N, T, d] after each block, first block first (one forward of the body)."""
    body, blocks, _, _ = lens_parts(model)
    outputs = []
    handles = [b.register_forward_hook(lambda m, a, out: outputs.append(out[0] if isinstance(out, tuple) else out))
               for b in blocks]
    try:
        body(input_ids=ids, attention_mask=attention)
    finally:
        for h in handles:
            h.remove()
    return outputs


@torch.no_grad()
def lens_logits(model, ids: torch.Tensor, attention: torch.Tensor) -> list[torch.Tensor]:
    """Logits [N, T, V] of the final norm and unembedding applied to each block's output, first block first.

    At the last block this is the model's own output. Every layer's logits at once: for a few positions (the
    attacks use span_lens).
    """
    _, _, norm, head = lens_parts(model)
    dev = devices.execution_device(norm, model)
    return [head(norm(h.to(dev))) for h in block_outputs(model, ids, attention)]


def vocab_size(head: torch.nn.Module) -> int:
    return int(getattr(head, "out_features", 0) or head.weight.shape[0])


@torch.no_grad()
def span_lens(hidden: torch.Tensor, truth: torch.Tensor, norm: torch.nn.Module, head: torch.nn.Module,
              max_logits: int = MAX_LOGITS) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks [layers, L] of the `truth` tokens [L] under each layer's lens, and the last layer's logits [L, V].

    `hidden` [layers, L, d] holds each block's output at the positions that predict the span's tokens. The
    logits keep the head's dtype (bf16 under autocast): a comparison of two bf16 numbers is exact, so the
    counts are made without an fp32 copy; the caller upcasts the last layer before any arithmetic.
    """
    layers, length = hidden.shape[:2]
    step = max(1, max_logits // max(1, length * vocab_size(head)))
    ranks, logits = [], None
    for lo in range(0, layers, step):
        logits = head(norm(hidden[lo: lo + step]))
        true_logit = logits.gather(-1, truth.to(logits.device).expand(logits.shape[0], -1).unsqueeze(-1))
        # Counted in int32 (exact below 2^31): the default int64 sum converts every comparison to 8 bytes first,
        # which took as long as the projection's bf16 matrix product.
        ranks.append(1 + (logits > true_logit).sum(-1, dtype=torch.int32).long())
    return torch.cat(ranks), logits[-1]
