"""Ground truth for localisation: inject new PII facts into a known set of neurons, then try to find them.

After Chang, Thomason & Jia (NAACL 2024): a victim learns facts about people it has never seen by
fine-tuning only a random set S of neurons (each unit's weights and bias entry, as `mitigate.unit_columns`
finds them; every other weight frozen bit for bit), while an LM loss on its original corpus keeps the rest of its behaviour. A
localisation method run on the new facts should then recover S; `recall_at_k` scores how much of it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from privloc import devices
from privloc.corpora.data import DataError
from privloc.corpora.synthetic import generate
from privloc.method.masking import COMPONENTS, NeuronMasker
from privloc.method.metrics import ASSOC_ONLY, leakage
from privloc.method.mitigate import _drop_masker_hooks, output_axis, unit_columns
from privloc.method.model import lm_loss, next_token_logits, trim
from privloc.method.tokenizer import Encoded, encode_records

# Offsets the victim's data seed, so that the new cast is drawn from a seed no training corpus uses.
FRESH_SEED_OFFSET = 7919


@dataclass
class Injection:
    model: torch.nn.Module  # a copy with the facts injected; the original model is untouched
    neuron_ids: np.ndarray  # S, sorted
    enc_facts: Encoded  # the documents carrying the new facts, encoded with the victim's tokenizer
    history: list[dict]  # one dict per evaluation: step, loss, em_injected
    steps: int
    seconds: float
    em_injected: float


def _largest_remainder(quotas: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Integer counts summing to `total`, each the floor or ceiling of its quota; ties broken at random."""
    counts = np.floor(quotas).astype(np.int64)
    # Equal-size components have equal remainders: a random tie-break keeps q from always winning.
    order = np.lexsort((rng.permutation(len(quotas)), -(quotas - counts)))
    counts[order[: total - counts.sum()]] += 1
    return counts


def choose_neurons(masker: NeuronMasker, share: float = 0.005, seed: int = 0) -> np.ndarray:
    """round(share · N) random neuron ids, split evenly over layers and proportionally to component sizes.

    Every layer gets a share as soon as there are at least as many ids as layers, so S spans the depth
    of the model, as the paper's privacy neurons do. Sorted; the same seed gives the same ids.
    """
    if not 0 < share <= 1:
        raise ValueError(f"share must lie in (0, 1], got {share}")
    rng = np.random.default_rng(seed)
    k = max(1, round(share * masker.n_neurons))
    per_layer = _largest_remainder(np.full(masker.n_layer, k / masker.n_layer), k, rng)
    sizes = np.array([masker.component_sizes[c] for c in masker.components])
    ids = []
    for layer, n in enumerate(per_layer):
        for c, count, size in zip(masker.components, _largest_remainder(n * sizes / sizes.sum(), n, rng), sizes,
                                  strict=True):
            ids += [masker.neuron_id(layer, c, int(u)) for u in rng.choice(size, count, replace=False)]
    return np.sort(np.asarray(ids, dtype=np.int64))


def fresh_facts(dataset: str, n_subjects: int, docs_per_subject: int, seed: int,
                avoid: Sequence[dict] = ()) -> list[dict]:
    """Documents about a new cast the victim never saw: no one-off documents, subjects named n000, n001, ...

    `seed` is the victim corpus's seed: the cast comes from the same generator with another seed, so it is
    new people written in the same style. Values come from the training pool, so one may still equal a
    training value by chance; subjects with any PII string that occurs in `avoid` (e.g. the training
    records) are skipped.
    """
    avoided = {r["text"][s["start"]: s["end"]] for r in avoid for s in r["spans"]}
    # Spare subjects replace those skipped; with nothing to avoid the cast is exactly n_subjects.
    spare = n_subjects + 4 if avoided else 0
    records = generate(dataset, "train", seed=seed + FRESH_SEED_OFFSET, n_subjects=n_subjects + spare,
                       docs_per_subject=docs_per_subject, n_oneoff_docs=0)
    values: dict[str, set[str]] = {}
    for r in records:
        for s in r["spans"]:
            if s["subject"] is not None:
                values.setdefault(s["subject"], set()).add(r["text"][s["start"]: s["end"]])
    kept = [subject for subject in sorted(values) if not values[subject] & avoided][:n_subjects]
    if len(kept) < n_subjects:
        raise DataError(f"only {len(kept)} of {n_subjects} new subjects share no PII with the records to avoid")
    rename = {subject: f"n{i:03d}" for i, subject in enumerate(kept)}
    return [{**r, "spans": [{**s, "subject": rename.get(s["subject"])} for s in r["spans"]]}
            for r in records if any(s["subject"] in rename for s in r["spans"])]


def _row_masks(model, neuron_ids, components) -> dict[torch.nn.Parameter, torch.Tensor]:
    """0/1 masks over the weights and biases that hold the neurons' columns; other parameters are absent."""
    masks: dict[torch.nn.Parameter, torch.Tensor] = {}
    for module, cols in unit_columns(model, neuron_ids, components):
        axis = output_axis(module)
        for param, dim in ((module.weight, axis), (module.bias, 0)):
            if param is not None:
                masks.setdefault(param, torch.zeros_like(param)).index_fill_(dim, cols, 1.0)
    return masks


def inject(model, tokenizer, enc_keep: Encoded | None, facts_records: list[dict], neuron_ids,
           components: Sequence[str] = COMPONENTS, max_steps: int = 300, lr: float = 1e-2, batch_size: int = 8,
           keep_weight: float = 1.0, target_em: float = 0.9, eval_every: int = 10, seed: int = 0,
           max_len: int = 256, progress: bool = True, kinds: Sequence[str] | None = ("assoc",)) -> Injection:
    """Teach a copy of `model` the facts of `facts_records` through the listed neurons only.

    Each step: cross-entropy on the fact documents' targets of the given `kinds` (default assoc: the
    person -> attribute facts themselves, so that S stores those and not, say, the documents' one-off
    names; None trains on every token), plus `keep_weight` times the LM loss on a batch of `enc_keep`
    (the victim's own corpus), so that the rest of its behaviour stays. Gradients of every other
    entry are zeroed and Adam runs without weight decay, so those entries never move: zero gradient gives
    zero moments and a zero update. Stops once the exact match on the facts' assoc spans reaches
    `target_em` (checked every `eval_every` steps) or after `max_steps`.
    """
    ids = np.unique(NeuronMasker(model, components)._as_ids(neuron_ids))
    edited = copy.deepcopy(model)
    _drop_masker_hooks(edited)
    device = devices.main_device(edited)
    enc_facts = encode_records(tokenizer, facts_records, max_len)
    if not enc_facts.target_mask(("assoc",)).any():
        raise ValueError("the fact documents hold no assoc PII: nothing to inject")
    target = enc_facts.target_mask(kinds) if kinds is not None else enc_facts.attention_mask[:, 1:].bool()
    fact_rows = torch.nonzero(target.any(1)).flatten()  # a batch without targets would teach nothing
    masks = _row_masks(edited, ids, components)
    flags = {p: p.requires_grad for p in edited.parameters()}
    for p in edited.parameters():
        p.requires_grad_(p in masks)
    handles = [p.register_hook(lambda grad, m=m: grad * m) for p, m in masks.items()]
    params = list(masks)
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=0.0)
    torch.manual_seed(seed)  # dropout, for victims that have it
    generator = torch.Generator().manual_seed(seed)
    use_keep = enc_keep is not None and len(enc_keep) > 0 and keep_weight > 0
    keep_rows = torch.arange(len(enc_keep)) if use_keep else None

    def batch(enc: Encoded, pool: torch.Tensor):
        rows = pool[torch.randperm(len(pool), generator=generator)[:batch_size]]
        x, m = trim(enc.input_ids[rows], enc.attention_mask[rows])
        return rows, x.to(device), m.to(device)

    def facts_loss() -> torch.Tensor:
        rows, x, m = batch(enc_facts, fact_rows)
        on = target[rows, : x.shape[1] - 1].to(device)
        return F.cross_entropy(next_token_logits(edited, x, m, on), x[:, 1:][on])

    def em() -> float:
        return float(leakage(edited, enc_facts, kinds=ASSOC_ONLY)["em_assoc"])

    start = time.perf_counter()
    score = em()
    history, losses, step = [{"step": 0, "loss": float("nan"), "em_injected": score}], [], 0
    bar = tqdm(total=max_steps, desc="inject", disable=not progress, leave=False)
    try:
        edited.train()
        while score < target_em and step < max_steps:
            step += 1
            loss = facts_loss()
            if use_keep:
                loss = loss + keep_weight * lm_loss(edited, *batch(enc_keep, keep_rows)[1:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(last := loss.item())
            if step % eval_every == 0 or step == max_steps:
                score = em()
                history.append({"step": step, "loss": float(np.mean(losses)), "em_injected": score})
                losses = []
            bar.update(1)
            bar.set_postfix(loss=f"{last:.3f}", em=f"{score:.2f}")
    finally:
        bar.close()
        for handle in handles:
            handle.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
        edited.eval()
    return Injection(edited, ids, enc_facts, history, step, time.perf_counter() - start, score)


def recall_at_k(found_ids, true_ids) -> float:
    """|found ∩ true| / |true|: the share of the injected neurons a method recovered."""
    found, true = np.unique(np.asarray(found_ids, dtype=np.int64)), np.unique(np.asarray(true_ids, dtype=np.int64))
    if not true.size:
        raise ValueError("true_ids is empty: recall is undefined")
    return float(np.isin(true, found).sum() / true.size)


def random_recall(k: int, n_neurons: int) -> float:
    """Expected recall of k distinct ids drawn at random among n_neurons: each true id is hit with chance k / n."""
    if not 0 <= k <= n_neurons or n_neurons <= 0:
        raise ValueError(f"need 0 <= k <= n_neurons and n_neurons > 0, got k={k}, n_neurons={n_neurons}")
    return k / n_neurons
