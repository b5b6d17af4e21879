"""GPT-2: q, k and v are thirds of one fused Conv1D (`c_attn`, weights [in, out])."""

from transformers import GPT2Config

from privloc.method.families import Family, Site, Unit, arange, special_ids


def sites(config) -> list[Site]:
    d = config.n_embd
    inner = config.n_inner or 4 * d
    return [Site("attn.c_attn", {"attn.q": arange(d), "attn.k": arange(d, d), "attn.v": arange(d, 2 * d)}),
            Site("attn.c_proj", {"attn.o": arange(d)}),
            # mlp.in gates the input of mlp.c_proj: the hidden units after the activation.
            Site("mlp.c_proj", {"mlp.in": arange(inner)}, pre=True),
            Site("mlp.c_proj", {"mlp.out": arange(d)})]


def units(config) -> dict[str, Unit]:
    d = config.n_embd
    inner = config.n_inner or 4 * d
    return {"attn.q": Unit(("attn.c_attn",), arange(d)), "attn.k": Unit(("attn.c_attn",), arange(d, d)),
            "attn.v": Unit(("attn.c_attn",), arange(d, 2 * d)), "attn.o": Unit(("attn.c_proj",), arange(d)),
            "mlp.in": Unit(("mlp.c_fc",), arange(inner)), "mlp.out": Unit(("mlp.c_proj",), arange(d))}


def scratch_config(cfg, tokenizer) -> GPT2Config:
    return GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        # No dropout: we want the model to memorise, and masks must act on a deterministic network.
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function=cfg.activation,
        **special_ids(tokenizer))


FAMILY = Family("gpt2", ("gpt2",), "transformer.h", "transformer.ln_f", sites, units, scratch_config)
