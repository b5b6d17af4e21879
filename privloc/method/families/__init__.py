"""Where the six gated components live in each decoder family (docs/method.md, "Which units are gated").

A `Family` says, for one block, which module each component's units come out of (`Site`: the module, the
column of every unit in its output — or input, for the hidden units of the MLP — and whether the gate acts
on the input), which weights hold each unit (`Unit`: what deactivation zeroes and injection trains), and
where the body, blocks, final norm and unembedding are. Everything that touches a model reads these
instead of GPT-2 names; a family module only describes, it computes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

COMPONENTS = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.in", "mlp.out")


@dataclass(frozen=True)
class Site:
    """A module whose output (input if `pre`) carries units: `columns[c][u]` is unit u of component c."""

    module: str  # path inside a block
    columns: dict[str, Tensor]
    pre: bool = False


@dataclass(frozen=True)
class Unit:
    """The weights of a component's units: output rows (Linear) or columns (Conv1D) `columns` of each module."""

    modules: tuple[str, ...]
    columns: Tensor


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # HF config.model_type values this description fits
    blocks: str  # path of the block list in the *ForCausalLM model
    final_norm: str
    sites: Callable[[object], list[Site]]  # config -> the gated sites of one block
    units: Callable[[object], dict[str, Unit]]  # config -> what holds each component's units
    # (ModelConfig, tokenizer) -> a from-scratch HF config of the project's sizes
    scratch_config: Callable[[object, object], object]

    def _find(self, model: nn.Module, path: str) -> nn.Module:
        try:
            return model.get_submodule(path)
        except AttributeError:
            # A bare body (e.g. GPT2Model) holds the same modules without the body's own prefix.
            return model.get_submodule(path.partition(".")[2])

    def blocks_of(self, model: nn.Module) -> list[nn.Module]:
        return list(self._find(model, self.blocks))

    def final_norm_of(self, model: nn.Module) -> nn.Module:
        return self._find(model, self.final_norm)

    def component_sizes(self, config) -> dict[str, int]:
        return {c: len(cols) for site in self.sites(config) for c, cols in site.columns.items()}


def arange(n: int, offset: int = 0) -> Tensor:
    return torch.arange(offset, offset + n)


def special_ids(tokenizer) -> dict:
    # HF configs default to their original vocabularies' ids; ours come from the locally trained tokenizer.
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def _registry() -> dict[str, Family]:
    from privloc.method.families import gpt2, gpt_neo, gpt_neox, llama
    return {f.name: f for f in (gpt2.FAMILY, gpt_neo.FAMILY, gpt_neox.FAMILY, llama.FAMILY)}


def families() -> dict[str, Family]:
    """Every known family by name."""
    return _registry()


def get(name: str) -> Family:
    known = _registry()
    if name not in known:
        raise ValueError(f"unknown architecture {name!r}: privloc knows {', '.join(known)}")
    return known[name]


def known_model_types() -> list[str]:
    return [t for f in _registry().values() for t in f.model_types]


def of_config(config) -> Family:
    """The family of an HF config, by its `model_type`; an unknown type is refused with the known ones."""
    model_type = getattr(config, "model_type", None)
    for family in _registry().values():
        if model_type in family.model_types:
            return family
    raise ValueError(f"privloc does not know the model type {model_type!r}: it knows "
                     f"{', '.join(known_model_types())}")


def of_model(model: nn.Module) -> Family:
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"{type(model).__name__} has no HF config: privloc cannot tell its architecture")
    return of_config(config)
