"""The victim: a causal LM (GPT-2 by default; see `families`) trained or fine-tuned on a PII corpus with a plain
loop until it memorises (docs/method.md, "Victim training")."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, GPT2LMHeadModel

from privloc import devices
from privloc.config import ModelConfig, TrainConfig
from privloc.method import families, pretrained
from privloc.method.tokenizer import Encoded


def pick_device(device: str = "cpu") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(cfg: ModelConfig, tokenizer) -> nn.Module:
    """A fresh model of `cfg.architecture` sized by `cfg`, or a pretrained one when `cfg.pretrained` names a
    folder or hub model (then in `cfg.dtype`, spread over devices by `cfg.device_map`)."""
    if cfg.pretrained:
        model = load_model(cfg.pretrained, dtype=cfg.dtype, device_map=cfg.device_map)
        return keep_blocks(model, cfg.pretrained_layers) if cfg.pretrained_layers else model
    family = families.get(cfg.architecture)
    if family.name == "gpt2":
        # The class itself rather than the auto factory: the default victims are built exactly as before.
        return GPT2LMHeadModel(family.scratch_config(cfg, tokenizer))
    return AutoModelForCausalLM.from_config(family.scratch_config(cfg, tokenizer))


def keep_blocks(model: nn.Module, n: int) -> nn.Module:
    """`model` with only its first `n` blocks (the final norm and unembedding kept): saved and reloaded, it is a
    plain `n`-layer model of its family."""
    family = families.of_model(model)
    parent, _, name = family.blocks.rpartition(".")
    blocks = model.get_submodule(parent).get_submodule(name)
    if not 0 < n <= len(blocks):
        raise ValueError(f"cannot keep {n} of the model's {len(blocks)} blocks")
    setattr(model.get_submodule(parent), name, nn.ModuleList(list(blocks)[:n]))
    model.config.num_hidden_layers = n
    if isinstance(getattr(model.config, "layer_types", None), list):  # per-layer attention kinds (transformers 5)
        model.config.layer_types = model.config.layer_types[:n]
    return model


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).suffix != ""


def load_model(name_or_path: str | Path, dtype: str | None = None, device_map: str | dict | None = None,
               **kwargs) -> nn.Module:
    """Load from a local folder, or from the hub by name when online (HF_HUB_OFFLINE unset).

    The architecture comes from the checkpoint's config; one privloc does not know is refused before any weight
    is read. `dtype` ("bfloat16", "float16", "float32"; None: as stored) and accelerate's `device_map` ("auto":
    over every GPU, then the CPU, then disk) are for checkpoints larger than one device; `kwargs` go to
    `from_pretrained` (e.g. `offload_folder`). A built-in name (privloc.method.pretrained, e.g. "smollm2-135m") loads
    its converted folder, converting it first if the cache lacks it.
    """
    name_or_path = pretrained.resolve(name_or_path)
    path = Path(str(name_or_path)).expanduser()
    if path.exists() and not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} exists but holds no model (no config.json)")
    if not path.exists() and _looks_like_path(str(name_or_path)):
        raise FileNotFoundError(f"model path {name_or_path} does not exist")
    source = str(path) if path.exists() else str(name_or_path)
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as error:
        raise FileNotFoundError(
            f"could not load model {name_or_path!r}: not a local folder, and the hub is unreachable or offline "
            f"(HF_HUB_OFFLINE=1 is privloc's default; unset it to download)"
        ) from error
    families.of_config(config)
    if device_map is not None:
        kwargs["device_map"] = device_map
    if dtype is not None:
        kwargs["dtype"] = devices.torch_dtype(dtype)
    return AutoModelForCausalLM.from_pretrained(source, config=config, **kwargs)


def length_grouped_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator, group: int = 8):
    """Endless shuffled epochs of row indices, each batch made of rows of similar length.

    Every epoch is a fresh permutation cut into chunks of `group` batches; a chunk is sorted by length
    before it is split, and its batches come out in random order (as the length-grouped sampler of
    transformers' Trainer). Batches are cut to their longest row, so grouping computes ~20% fewer padding
    positions on our corpora while the batches stay random. Incomplete batches at the end of an epoch are
    dropped; with fewer rows than `batch_size`, every batch is all the rows. `group=1` gives plain shuffled
    batches.
    """
    n_rows = len(lengths)
    while True:
        order = torch.randperm(n_rows, generator=generator)
        if n_rows <= batch_size:
            yield order
            continue
        for start in range(0, n_rows - batch_size + 1, batch_size * group):
            chunk = order[start : start + batch_size * group]
            chunk = chunk[torch.argsort(lengths[chunk], descending=True, stable=True)]
            batches = [chunk[i : i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
            for j in torch.randperm(len(batches), generator=generator).tolist():
                yield batches[j]


def trim(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut right padding shared by the whole batch (rows differ in length; batches need not be as wide)."""
    width = int(mask.sum(1).max())
    return ids[:, :width], mask[:, :width]


def next_token_logits(model, ids: torch.Tensor, attention: torch.Tensor, *where: torch.Tensor):
    """Next-token logits [B, W-1, V]; given boolean [B, W-1] masks, one [M_i, V] block per mask instead.

    Projecting just the needed positions onto the vocabulary skips most of the unembedding, the widest
    matrix of a small model, and spares the backward pass a zero-filled gradient of the full logits.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not where or head is None:
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
        if not where:
            return logits
        blocks = [logits[w] for w in where]
    else:
        # The body's last hidden state is after the final norm in every family privloc knows.
        hidden = model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state[:, :-1]
        hidden = hidden.to(devices.execution_device(head, model))
        blocks = [head(hidden[w.to(hidden.device)]).to(ids.device) for w in where]
    return blocks[0] if len(blocks) == 1 else blocks


def lm_loss(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Under autocast the logits come out in bf16: the softmax over the vocabulary is taken in fp32 (a no-op
    # for fp32 logits).
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train_victim(
    model: nn.Module,
    enc: Encoded,
    cfg: TrainConfig,
    evaluate: Callable[[nn.Module], dict] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[dict]:
    """Train every weight on the corpus; `evaluate(model)` is called every `eval_every` steps and at the end.

    Returns the history: one dict per evaluation with the step, training loss, elapsed seconds and the metrics.
    """
    device = torch.device(device)
    devices.place(model, device).train()
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress_ = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    # Entered once per step: autocast caches the low-precision copies of the weights until its context is
    # left, and each optimiser step changes them.
    precision = devices.autocast(cfg.autocast, device)
    # Plain shuffled batches (group=1): grouping rows by length saved ~10% of the training time but left
    # the victims memorising less (assoc exact match 0.97-0.99 against 0.98-1.00).
    batches = length_grouped_batches(enc.attention_mask.sum(1), cfg.batch_size, generator, group=1)
    history, losses = [], []
    train_seconds = 0.0
    bar = tqdm(range(1, cfg.steps + 1), desc="train victim", disable=not progress, leave=False)
    for step in bar:
        start = time.perf_counter()
        rows = next(batches)
        ids, mask = trim(enc.input_ids[rows], enc.attention_mask[rows])
        with precision:
            loss = lm_loss(model, ids.to(device), mask.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        train_seconds += time.perf_counter() - start
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if evaluate is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            model.eval()
            record = {"step": step, "train_loss": sum(losses) / len(losses), "train_seconds": train_seconds}
            record.update(evaluate(model))
            history.append(record)
            losses = []
            model.train()
    model.eval()
    if evaluate is None:
        history.append({"step": cfg.steps, "train_loss": sum(losses) / max(1, len(losses)),
                        "train_seconds": train_seconds})
    return history
