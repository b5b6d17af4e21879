"""GPT-Neo: separate q/k/v/out Linear projections (q, k, v without bias) and GPT-2's MLP as Linear."""

from transformers import GPTNeoConfig

from privloc.method.families import Family, Site, Unit, arange, special_ids


def _inner(config) -> int:
    return config.intermediate_size or 4 * config.hidden_size


def sites(config) -> list[Site]:
    d = config.hidden_size
    return [Site("attn.attention.q_proj", {"attn.q": arange(d)}), Site("attn.attention.k_proj", {"attn.k": arange(d)}),
            Site("attn.attention.v_proj", {"attn.v": arange(d)}),
            Site("attn.attention.out_proj", {"attn.o": arange(d)}),
            Site("mlp.c_proj", {"mlp.in": arange(_inner(config))}, pre=True),
            Site("mlp.c_proj", {"mlp.out": arange(d)})]


def units(config) -> dict[str, Unit]:
    d = config.hidden_size
    paths = {"attn.q": "attn.attention.q_proj", "attn.k": "attn.attention.k_proj",
             "attn.v": "attn.attention.v_proj", "attn.o": "attn.attention.out_proj", "mlp.out": "mlp.c_proj"}
    return {**{c: Unit((p,), arange(d)) for c, p in paths.items()},
            "mlp.in": Unit(("mlp.c_fc",), arange(_inner(config)))}


def scratch_config(cfg, tokenizer) -> GPTNeoConfig:
    return GPTNeoConfig(
        vocab_size=len(tokenizer), max_position_embeddings=cfg.n_positions, hidden_size=cfg.n_embd,
        num_layers=cfg.n_layer, num_heads=cfg.n_head,
        # GPT-Neo alternates global and 256-token local attention; our documents are at most 256 tokens long,
        # where the two are the same, so every layer is global.
        attention_types=[[["global"], cfg.n_layer]], activation_function=cfg.activation,
        resid_dropout=0.0, embed_dropout=0.0, attention_dropout=0.0, **special_ids(tokenizer))


FAMILY = Family("gpt_neo", ("gpt_neo",), "transformer.h", "transformer.ln_f", sites, units, scratch_config)
