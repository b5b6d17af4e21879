"""Llama-style (also Mistral and Qwen2): grouped-query attention and a gated MLP.

k and v have `num_key_value_heads` heads, fewer than q's. `mlp.in` is the hidden unit act(gate) · up at the
input of `down_proj`; its weights are the unit's rows of both `gate_proj` and `up_proj`, so that zeroing them
gives act(0) · 0 = 0 whatever the activation.
"""

import math

from transformers import LlamaConfig

from privloc.method.families import Family, Site, Unit, arange, special_ids


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _sizes(config) -> dict[str, int]:
    hd, kv = _head_dim(config), config.num_key_value_heads or config.num_attention_heads
    return {"attn.q": config.num_attention_heads * hd, "attn.k": kv * hd, "attn.v": kv * hd,
            "attn.o": config.hidden_size, "mlp.in": config.intermediate_size, "mlp.out": config.hidden_size}


_PATHS = {"attn.q": "self_attn.q_proj", "attn.k": "self_attn.k_proj", "attn.v": "self_attn.v_proj",
          "attn.o": "self_attn.o_proj", "mlp.out": "mlp.down_proj"}


def sites(config) -> list[Site]:
    n = _sizes(config)
    return [*(Site(p, {c: arange(n[c])}) for c, p in _PATHS.items() if c != "mlp.out"),
            Site("mlp.down_proj", {"mlp.in": arange(n["mlp.in"])}, pre=True),
            Site("mlp.down_proj", {"mlp.out": arange(n["mlp.out"])})]


def units(config) -> dict[str, Unit]:
    n = _sizes(config)
    return {**{c: Unit((p,), arange(n[c])) for c, p in _PATHS.items()},
            "mlp.in": Unit(("mlp.gate_proj", "mlp.up_proj"), arange(n["mlp.in"]))}


def scratch_config(cfg, tokenizer) -> LlamaConfig:
    # Two query heads per key/value head (as Llama 2/3 at larger scale), and a gated MLP of 8/3 · d hidden
    # units rounded up to a multiple of 32 (Llama's parameter count for a 4d MLP).
    kv_heads = cfg.n_head // 2 if cfg.n_head % 2 == 0 else cfg.n_head
    inner = math.ceil(8 * cfg.n_embd / 3 / 32) * 32
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.n_embd, intermediate_size=inner, num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head, num_key_value_heads=kv_heads, hidden_act="silu",
        max_position_embeddings=cfg.n_positions, rms_norm_eps=1e-5, attention_dropout=0.0,
        tie_word_embeddings=False, **special_ids(tokenizer))


FAMILY = Family("llama", ("llama", "mistral", "qwen2"), "model.layers", "model.norm", sites, units, scratch_config)
