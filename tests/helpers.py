"""Tiny models shared by the unit tests."""

import torch
import transformers


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
