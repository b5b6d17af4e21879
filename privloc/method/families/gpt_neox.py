"""GPT-NeoX (Pythia): one fused `query_key_value` Linear whose output is laid out per head as [q | k | v]."""

import torch
from transformers import GPTNeoXConfig

from privloc.method.families import Family, Site, Unit, arange, special_ids


def _qkv_columns(config) -> dict[str, torch.Tensor]:
    # The attention views the fused output as [heads, 3 * head_dim]: unit u of q (head u // hd, dim u % hd)
    # is column head * 3hd + dim, k's is hd further and v's 2hd further.
    d, heads = config.hidden_size, config.num_attention_heads
    hd = d // heads
    u = torch.arange(d)
    base = (u // hd) * 3 * hd + u % hd
    return {"attn.q": base, "attn.k": base + hd, "attn.v": base + 2 * hd}


def sites(config) -> list[Site]:
    d = config.hidden_size
    return [Site("attention.query_key_value", _qkv_columns(config)), Site("attention.dense", {"attn.o": arange(d)}),
            Site("mlp.dense_4h_to_h", {"mlp.in": arange(config.intermediate_size)}, pre=True),
            Site("mlp.dense_4h_to_h", {"mlp.out": arange(d)})]


def units(config) -> dict[str, Unit]:
    d = config.hidden_size
    qkv = {c: Unit(("attention.query_key_value",), cols) for c, cols in _qkv_columns(config).items()}
    return {**qkv, "attn.o": Unit(("attention.dense",), arange(d)),
            "mlp.in": Unit(("mlp.dense_h_to_4h",), arange(config.intermediate_size)),
            "mlp.out": Unit(("mlp.dense_4h_to_h",), arange(d))}


def scratch_config(cfg, tokenizer) -> GPTNeoXConfig:
    # Pythia's layout: parallel residual, rotary embeddings on a quarter of each head, untied unembedding.
    return GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.n_embd, num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head, intermediate_size=4 * cfg.n_embd, hidden_act=cfg.activation,
        max_position_embeddings=cfg.n_positions, attention_dropout=0.0, hidden_dropout=0.0,
        use_parallel_residual=True, tie_word_embeddings=False, **special_ids(tokenizer))


FAMILY = Family("gpt_neox", ("gpt_neox",), "gpt_neox.layers", "gpt_neox.final_layer_norm", sites, units,
                scratch_config)
