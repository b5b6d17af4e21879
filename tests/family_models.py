"""Tiny random models of every family, and where each unit's weights are, written independently of privloc."""

import torch
import transformers

from privloc.config import ModelConfig
from privloc.method.families import families

FAMILIES = tuple(families())
VOCAB = 50
SMALL = ModelConfig(n_layer=2, n_embd=32, n_head=4, n_positions=32)


class FakeTokenizer:
    bos_token_id = eos_token_id = pad_token_id = 0

    def __len__(self):
        return VOCAB


def tiny_family_model(name, seed=0, cfg=SMALL):
    """A model of family `name` whose weights are large enough that closing one unit visibly moves the logits."""
    torch.manual_seed(seed)
    config = families()[name].scratch_config(cfg, FakeTokenizer())
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def block(model, name, layer):
    return model.get_submodule({"gpt2": "transformer.h", "gpt_neo": "transformer.h", "gpt_neox": "gpt_neox.layers",
                                "llama": "model.layers"}[name])[layer]


def unit_rows(model, name, component, units):
    """[(module inside the block, output indices)] that hold the listed units of `component`."""
    c, u = model.config, torch.as_tensor(units)
    d = c.hidden_size
    if name == "gpt2":
        return {"attn.q": [("attn.c_attn", u)], "attn.k": [("attn.c_attn", u + d)], "attn.v": [("attn.c_attn", u + 2 * d)],
                "attn.o": [("attn.c_proj", u)], "mlp.in": [("mlp.c_fc", u)], "mlp.out": [("mlp.c_proj", u)]}[component]
    if name == "gpt_neo":
        a = "attn.attention."
        return {"attn.q": [(a + "q_proj", u)], "attn.k": [(a + "k_proj", u)], "attn.v": [(a + "v_proj", u)],
                "attn.o": [(a + "out_proj", u)], "mlp.in": [("mlp.c_fc", u)], "mlp.out": [("mlp.c_proj", u)]}[component]
    if name == "gpt_neox":
        # The fused output read as [heads, (q, k, v), head_dim], as the attention views it.
        heads = c.num_attention_heads
        layout = torch.arange(3 * d).view(heads, 3, d // heads)
        if component in ("attn.q", "attn.k", "attn.v"):
            which = ("attn.q", "attn.k", "attn.v").index(component)
            return [("attention.query_key_value", layout[:, which].reshape(-1)[u])]
        return {"attn.o": [("attention.dense", u)], "mlp.in": [("mlp.dense_h_to_4h", u)],
                "mlp.out": [("mlp.dense_4h_to_h", u)]}[component]
    s = "self_attn."
    return {"attn.q": [(s + "q_proj", u)], "attn.k": [(s + "k_proj", u)], "attn.v": [(s + "v_proj", u)],
            "attn.o": [(s + "o_proj", u)], "mlp.in": [("mlp.gate_proj", u), ("mlp.up_proj", u)],
            "mlp.out": [("mlp.down_proj", u)]}[component]


def zero_rows(module, rows):
    with torch.no_grad():
        if isinstance(module, transformers.pytorch_utils.Conv1D):
            module.weight[:, rows] = 0.0
        else:
            module.weight[rows, :] = 0.0
        if module.bias is not None:
            module.bias[rows] = 0.0


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits
