"""Algorithm 1: learn HardConcrete gates so that PII stops being predicted while ordinary text still is.

    L = L_pii + λ_keep · L_keep + λ_0 · R

L_pii is a suppression loss on PII targets (pii_loss: by default a margin that pushes every token of each
memorised span below ten others; the paper's unlikelihood −log(1 − p(x_t | x_<t)) on first tokens is a setting),
L_keep the cross-entropy on non-PII targets of the same batch, R the expected share of closed gates. Only
log α is trained; the model is frozen (docs/method.md, "The objective" and "How the budget is held").
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from privloc import devices
from privloc.config import LocalizeConfig
from privloc.method.masking import NeuronMasker
from privloc.method.model import length_grouped_batches, next_token_logits, trim
from privloc.method.tokenizer import Encoded


@dataclass
class Localization:
    masker: NeuronMasker
    history: list[dict]
    seconds: float
    config: LocalizeConfig
    categories: tuple[str, ...] | None

    def closed_ids(self) -> np.ndarray:
        """The privacy neurons: the top target_share·N by P(closed) when a target share was set, else the
        gates whose deterministic value is 0 (docs/method.md, "Which gates are privacy neurons").

        Under a target share the *expected* closed share is held at the target, and many gates end partly
        closed rather than at exactly 0; the count then comes from the target, the order from P(closed).
        """
        if self.config.target_share is None:
            return self.masker.closed_ids()
        return np.sort(self.masker.top_k(round(self.config.target_share * self.masker.n_neurons)))

    @property
    def n_closed(self) -> int:
        return len(self.closed_ids())

    @property
    def share_closed(self) -> float:
        return self.n_closed / self.masker.n_neurons


PII_LOSSES = ("unlikelihood", "neg_ce", "margin", "entropy")


def pii_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str = "unlikelihood", margin_rank: int = 10,
             margin: float = 1.0) -> torch.Tensor:
    """Mean over PII target positions of the suppression loss, logits [M, V], targets [M].

    - ``unlikelihood``: −log(1 − p(target));
    - ``neg_ce``: −CE, clipped at 10 nats: each target is pushed down until it is e^−10 unlikely;
    - ``margin``: softplus(z_target − z_(r) + margin), z_(r) the `margin_rank`-th largest logit among the other
      tokens: zero only once the target ranks below `margin_rank` others, which a candidate list or a beam of
      that width no longer finds from this token;
    - ``entropy``: log V − H(p), the maximum-entropy objective (Patil, Hase & Bansal): the prediction at a PII
      position says nothing.
    """
    if targets.numel() == 0:
        return logits.sum() * 0.0
    log_norm = torch.logsumexp(logits, dim=-1)
    if kind == "unlikelihood":
        # log(1 − p_y) = logsumexp over the other tokens − logsumexp over all: no cancellation as p_y → 1.
        others = logits.scatter(-1, targets[:, None], float("-inf"))
        return (log_norm - torch.logsumexp(others, dim=-1)).mean()
    if kind == "neg_ce":
        nll = log_norm - logits.gather(-1, targets[:, None]).squeeze(-1)
        return -nll.clamp(max=10.0).mean()
    if kind == "margin":
        others = logits.scatter(-1, targets[:, None], float("-inf"))
        rival = others.topk(min(margin_rank, others.shape[-1] - 1), dim=-1).values[:, -1]
        return F.softplus(logits.gather(-1, targets[:, None]).squeeze(-1) - rival + margin).mean()
    if kind == "entropy":
        logp = logits.log_softmax(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return (math.log(logits.shape[-1]) - entropy).mean()
    raise ValueError(f"unknown PII loss {kind!r}: expected one of {', '.join(PII_LOSSES)}")


def _penalty_weights(masker: NeuronMasker, penalty: str) -> torch.Tensor:
    """Weights of each gate's P(closed) in R: every neuron alike, or every (layer, component) cell alike.

    With "cell", closing a unit of a 128-wide component costs four times a unit of the 512-wide MLP layer:
    R is then the mean over cells of the share of that cell switched off.
    """
    if penalty == "neuron":
        return torch.full((masker.n_neurons,), 1.0 / masker.n_neurons)
    if penalty == "cell":
        table = masker.neuron_table()
        cell = torch.as_tensor(table["layer"] * len(masker.components) + table["component"])
        sizes = torch.bincount(cell).float()
        return 1.0 / (sizes[cell] * len(sizes))
    raise ValueError(f"unknown penalty {penalty!r}: expected 'neuron' or 'cell'")


def share_shift(gates, weights: torch.Tensor, target: float, iterations: int = 60) -> float:
    """The constant c such that shifting every log α by c makes the expected closed share exactly `target`.

    The share falls monotonically as c grows, so bisection finds c. Adding it after each step projects the
    gates back onto the budget: the objective decides *which* gates close, the projection *how many* (in
    expectation), and the top target·N by P(closed) are then the gates training actually closed.
    """
    offset = gates.beta * math.log(-gates.gamma / gates.zeta)
    log_alpha = gates.log_alpha.detach()

    def share(c: float) -> float:
        return float(((1 - torch.sigmoid(log_alpha + c - offset)) * weights).sum())

    lo, hi = -60.0, 60.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if share(mid) > target else (lo, mid)
    return (lo + hi) / 2


def _rows_with_targets(mask: torch.Tensor) -> torch.Tensor:
    rows = mask.any(dim=1).nonzero().flatten()
    if len(rows) == 0:
        raise ValueError("no PII targets match the requested kinds/categories in this corpus")
    return rows


def target_masks(enc: Encoded, cfg: LocalizeConfig, categories: tuple[str, ...] | None):
    """Which next-token targets L_pii pushes down and which L_keep preserves, [N, T] each."""
    pii = enc.target_mask(cfg.kinds, categories, cfg.first_token)
    keep = enc.nonpii_mask()
    if cfg.keep_kinds:
        # PII the model predicts without memory (e.g. copied from its context) is behaviour to keep.
        keep |= enc.target_mask(cfg.keep_kinds)
    if categories and cfg.keep_other_categories:
        # A category's mask should remove that category only: the other categories' targets are kept.
        keep |= enc.target_mask(cfg.kinds, first_token=cfg.first_token) & ~pii
    return pii, keep


@dataclass
class _Step:
    """What one step of Algorithm 1 reads: the corpus, its target masks, the keep corpus and the precision."""
    model: object
    enc: Encoded
    pii_mask: torch.Tensor
    keep_mask: torch.Tensor
    cfg: LocalizeConfig
    enc_keep: Encoded | None
    generator: torch.Generator
    device: torch.device
    precision: object

    def losses(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L_pii on the batch's PII targets, and L_keep: the mean of the keep terms (the batch's own non-PII
        targets unless `keep_batch` is off, and `keep_batch_size` documents of the keep corpus if there is one)."""
        cfg, device = self.cfg, self.device
        ids, attention = trim(self.enc.input_ids[batch], self.enc.attention_mask[batch])
        width = ids.shape[1] - 1
        ids, attention = ids.to(device), attention.to(device)
        pii = self.pii_mask[batch, :width].to(device)
        keep = self.keep_mask[batch, :width].to(device)
        targets = ids[:, 1:]
        keep_terms = []
        with self.precision:
            if cfg.keep_batch:
                pii_logits, keep_logits = next_token_logits(self.model, ids, attention, pii, keep)
                keep_terms.append(F.cross_entropy(keep_logits.float(), targets[keep]))
            else:
                pii_logits = next_token_logits(self.model, ids, attention, pii)
        loss_pii = pii_loss(pii_logits.float(), targets[pii], cfg.loss, cfg.margin_rank)
        if self.enc_keep is not None and cfg.keep_batch_size > 0:
            extra = torch.randperm(len(self.enc_keep), generator=self.generator)[: cfg.keep_batch_size]
            x, m = (t.to(device) for t in trim(self.enc_keep.input_ids[extra], self.enc_keep.attention_mask[extra]))
            on = m[:, 1:].bool() & m[:, :-1].bool()
            with self.precision:
                keep_logits = next_token_logits(self.model, x, m, on)
            keep_terms.append(F.cross_entropy(keep_logits.float(), x[:, 1:][on]))
        return loss_pii, sum(keep_terms) / len(keep_terms)


def budget_term(share: torch.Tensor, cfg: LocalizeConfig, lagrange: torch.Tensor) -> torch.Tensor | float:
    """The sparsity part of L for an expected closed share R (docs/method.md, "How the budget is held").

    No target share: λ_0 · R. A target t held by the Lagrangian: λ_1 (R − t) + λ_2 (R − t)², the λ rising by
    gradient ascent until R meets t (CoFiPruning). A target held by projection: nothing here; share_shift
    moves the gates back onto the budget after each step.
    """
    if cfg.target_share is None:
        return cfg.lambda_0 * share
    if cfg.share_control == "lagrangian":
        gap = share - cfg.target_share
        return lagrange[0] * gap + lagrange[1] * gap**2
    return 0.0


def localize(
    model,
    enc: Encoded,
    cfg: LocalizeConfig | None = None,
    categories: Sequence[str] | None = None,
    progress: bool = True,
    enc_keep: Encoded | None = None,
) -> Localization:
    """Train the gates of every neuron of `cfg.components`; the returned masker holds the learned log α.

    `enc_keep`, if given, is a second corpus of behaviour to keep: each step adds `cfg.keep_batch_size` of its
    documents, every target of which (its own PII included) joins the keep term, weighted as much as the
    main batch's. The injection benchmark uses it so that the mask removes the injected facts but not what
    the victim knew before. With `cfg.keep_batch` off, it is the whole keep term.
    """
    cfg = cfg or LocalizeConfig()
    if cfg.share_control not in ("lagrangian", "projection"):
        raise ValueError(f"unknown share_control {cfg.share_control!r}: expected 'lagrangian' or 'projection'")
    if not cfg.keep_batch and not (enc_keep is not None and cfg.keep_batch_size > 0):
        raise ValueError("keep_batch=False leaves nothing to keep: pass enc_keep with keep_batch_size > 0")
    device = devices.main_device(model)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    categories = tuple(categories) if categories else None
    pii_mask, keep_mask = target_masks(enc, cfg, categories)
    rows = _rows_with_targets(pii_mask)
    batches = length_grouped_batches(enc.attention_mask[rows].sum(1), cfg.batch_size, generator)

    masker = NeuronMasker(model, components=cfg.components, init_log_alpha=cfg.init_log_alpha)
    masker.gates.to(device)
    log_alpha = masker.gates.log_alpha
    penalty_weights = _penalty_weights(masker, cfg.penalty).to(device)
    optimizer = torch.optim.Adam([log_alpha], lr=cfg.lr)
    lagrange = torch.zeros(2, device=device, requires_grad=True)
    lagrange_opt = torch.optim.Adam([lagrange], lr=cfg.lr, maximize=True)
    ascend = cfg.target_share is not None and cfg.share_control == "lagrangian"
    project = cfg.target_share is not None and cfg.share_control == "projection"
    # The forwards only run in `autocast`: the losses, the gates and their optimiser stay fp32.
    step_of = _Step(model, enc, pii_mask, keep_mask, cfg, enc_keep, generator, device,
                    devices.autocast(cfg.autocast, device))

    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    was_training = model.training
    model.eval()
    history, start = [], time.perf_counter()
    bar = tqdm(range(1, cfg.steps + 1), desc="localise", disable=not progress, leave=False)
    try:
        with masker.applied(mode="sample"):
            for step in bar:
                loss_pii, loss_keep = step_of.losses(rows[next(batches)])
                share = (masker.gates.p_closed() * penalty_weights).sum()  # R
                loss = loss_pii + cfg.lambda_keep * loss_keep + budget_term(share, cfg, lagrange)
                optimizer.zero_grad(set_to_none=True)
                lagrange_opt.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if ascend:
                    lagrange_opt.step()
                if project:
                    with torch.no_grad():
                        log_alpha += share_shift(masker.gates, penalty_weights, cfg.target_share)
                    share = (masker.gates.p_closed() * penalty_weights).sum()
                with torch.no_grad():
                    n_closed = int((masker.gates.deterministic() == 0).sum())
                    expected_closed = float(masker.gates.p_closed().sum())
                history.append({"step": step, "loss": loss.item(), "loss_pii": loss_pii.item(),
                                "loss_keep": loss_keep.item(), "expected_closed_share": share.item(),
                                "n_closed": n_closed, "expected_closed": expected_closed})
                bar.set_postfix(pii=f"{loss_pii.item():.3f}", keep=f"{loss_keep.item():.3f}",
                                closed=f"{expected_closed:.0f}")
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
    log_alpha.requires_grad_(False)
    return Localization(masker, history, time.perf_counter() - start, cfg, categories)
