"""Tiny models shared by the unit tests."""

import torch
import transformers

from privloc.data import CATEGORIES, KINDS
from privloc.tokenizer import Encoded


def tiny_model(seed=0, n_layer=2, n_embd=16):
    """A 2-layer GPT-2 whose weights and biases are large enough that closing one unit visibly moves the logits."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=n_layer, n_embd=n_embd, n_head=2, n_positions=32, vocab_size=50,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def tiny_corpus():
    """4 rows of 12 tokens, the last one padded; a few assoc PII tokens in rows 0, 1 and 3."""
    n, length = 4, 12
    input_ids = torch.randint(1, 50, (n, length), generator=torch.Generator().manual_seed(2))
    attention = torch.ones(n, length, dtype=torch.long)
    attention[3, 9:] = 0
    input_ids[3, 9:] = 0
    category = torch.zeros(n, length, dtype=torch.long)
    for row, cols, name in ((0, [4, 5, 6], "EMAIL"), (1, [8, 9], "PHONE"), (3, [2, 3], "PERSON")):
        category[row, cols] = CATEGORIES.index(name) + 1
    kind = torch.where(category > 0, KINDS.index("assoc") + 1, 0)
    span_id = torch.where(category > 0, 0, -1)
    return Encoded(input_ids, attention, category, kind, span_id)
