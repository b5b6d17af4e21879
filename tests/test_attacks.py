"""The attack suite against cases whose answer is known: an oracle model, real sampling, the model's own logits."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_model

from privloc.config import AttackConfig
from privloc.method import attacks
from privloc.method.candidates import CandidateSets, chance_exposure, chance_mrr, exposure_from_rank
from privloc.method.decoding import beam_finds, beam_search, extend, left_pad, prefix_state, rank_among
from privloc.method.tokenizer import train_tokenizer


class _NoCache:
    """The cache interface the search code calls; a bigram model needs nothing from the past."""

    def batch_repeat_interleave(self, n):
        pass

    def batch_select_indices(self, index):
        pass


class OracleLM(torch.nn.Module):
    """A bigram model whose truth continuation of `prefix_last` has the `rank`-th best first token.

    `rank - 1` decoy chains start with better first tokens and `n_worse` chains with worse ones; after its
    first token every chain (the truth included) is near-certain, so a sequence's likelihood is decided by its
    first token: the truth is exactly the `rank`-th most likely of these sequences.
    """

    def __init__(self, truth: list[int], rank: int, n_worse: int = 6, vocab: int = 120):
        super().__init__()
        self.prefix_last = 0
        table = torch.zeros(vocab, vocab)
        free = iter(sorted(set(range(1, vocab)) - set(truth)))
        length = len(truth)
        self.better, self.worse = [], []
        for j in range(rank - 1 + n_worse):
            first, then = next(free), next(free)
            score = 10 - 0.1 * (j + 1 if j < rank - 1 else j + 2)
            table[self.prefix_last, first] = score
            table[first, then] = table[then, then] = 20
            (self.better if j < rank - 1 else self.worse).append([first] + [then] * (length - 1))
        table[self.prefix_last, truth[0]] = 10 - 0.1 * rank
        for a, b in zip(truth, truth[1:], strict=False):
            table[a, b] = 20
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids, cache=None, attention_mask=None, position_ids=None, use_cache=False):
        return SimpleNamespace(logits=self.table[input_ids], past_key_values=_NoCache())


@torch.no_grad()
def sequence_logprobs(model, prefix: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    """Total log-likelihood of each row of `seqs` [M, L] after one shared `prefix`, every row scored in full:
    the reference the pruned ranking is checked against."""
    logp, cache, mask, next_pos = prefix_state(model, [prefix])
    total = logp[0, seqs[:, 0].to(logp.device)]
    if seqs.shape[1] > 1:
        m = len(seqs)
        cache.batch_repeat_interleave(m)
        step_logp, _, _ = extend(model, cache, mask.expand(m, -1), next_pos.expand(m), seqs[:, :-1])
        total = total + step_logp.gather(-1, seqs[:, 1:].unsqueeze(-1).to(logp.device)).squeeze(-1).sum(1)
    return total.cpu()


TRUTH = [101, 102, 103, 104]


@pytest.mark.parametrize("rank", [1, 3, 6])
@pytest.mark.parametrize("width", [1, 2, 5, 8])
def test_beam_finds_the_truth_exactly_when_its_rank_is_within_the_width(rank, width):
    oracle = OracleLM(TRUTH, rank)
    beams = beam_search(oracle, [torch.tensor([5, 7, 0])], [len(TRUTH)], width)[0]
    assert beams.shape == (width, len(TRUTH))
    assert bool((beams == torch.tensor(TRUTH)).all(1).any()) == (rank <= width)
    assert beam_finds(oracle, [torch.tensor([5, 7, 0])], [torch.tensor(TRUTH)], width) == [rank <= width]


@pytest.mark.parametrize("rank", [1, 2, 4, 7])
def test_candidate_rank_is_the_oracle_rank(rank):
    oracle = OracleLM(TRUTH, rank)
    [(got, n)] = rank_among(oracle, [torch.tensor([5, 0])], [torch.tensor(TRUTH)], [oracle.better + oracle.worse])
    assert (got, n) == (rank, rank + 6)


def test_a_truth_buried_below_every_candidate_is_found_by_the_bottom_tail():
    # The oracle ranks the truth last of 1 + 11 strings: the top-B attack misses it, the bottom-B one does not.
    oracle = OracleLM(TRUTH, rank=12, n_worse=0)
    [(rank, n)] = rank_among(oracle, [torch.tensor([5, 0])], [torch.tensor(TRUTH)], [oracle.better + oracle.worse])
    assert (rank, n) == (12, 12)
    frame = pd.DataFrame({"greedy": [False], "log_p_sample": [-50.0], "lens_rank_max": [500], "beam_10": [False],
                          "cand_rank": [rank], "n_ranked": [n], "in_search": [True], "category": ["NAME"]})
    for budget, low in ((1, 1.0), (3, 1.0), (10, 1.0)):
        success = attacks._success(frame, budget).iloc[0]
        assert success["candidates"] == 0.0 and success["candidates_low"] == low
    # Top of the list: found by the top tail, by the bottom one only with a budget that covers every string.
    frame[["cand_rank"]] = 1.0
    assert attacks._success(frame, 10).iloc[0]["candidates_low"] == 0.0
    assert attacks._success(frame, 12).iloc[0]["candidates_low"] == 1.0
    assert attacks.summarize(frame, 10)["leak_candidates_low"] == 0.0


def test_pruned_ranking_equals_scoring_every_candidate_in_full():
    model = tiny_model(seed=5)
    gen = torch.Generator().manual_seed(0)
    prefixes = [torch.randint(1, 50, (n,), generator=gen) for n in (5, 3, 7, 4)]
    truths = [torch.randint(1, 50, (n,), generator=gen) for n in (3, 3, 2, 4)]
    # The first truth is the model's own greedy continuation, so most candidates are pruned early.
    truths[0] = model.generate(prefixes[0].unsqueeze(0), max_new_tokens=3, do_sample=False,
                               pad_token_id=0)[0, len(prefixes[0]):]
    others = [torch.randint(1, 50, (30, len(t)), generator=gen).tolist() for t in truths]
    got = rank_among(model, prefixes, truths, others, max_rows=40)
    for p, t, o, (rank, n) in zip(prefixes, truths, others, got, strict=True):
        scores = sequence_logprobs(model, p, torch.stack([t, *map(torch.tensor, o)]))
        want = 1 + (scores[1:] > scores[0]).sum().item() + 0.5 * (scores[1:] == scores[0]).sum().item()
        assert (rank, n) == (want, 31)


def test_early_exit_beam_agrees_with_the_full_search():
    model = tiny_model(seed=6)
    gen = torch.Generator().manual_seed(1)
    prefixes = [torch.randint(1, 50, (n,), generator=gen) for n in (4, 6, 3, 5, 2)]
    full = beam_search(model, prefixes, [3, 3, 4, 2, 3], 4)
    # Targets: one of the final beams for some prefixes, a random sequence for the others.
    targets = [full[0][2], torch.randint(1, 50, (3,), generator=gen), full[2][0], full[3][3],
               torch.randint(1, 50, (3,), generator=gen)]
    want = [bool((b == t).all(1).any()) for b, t in zip(full, targets, strict=True)]
    assert want[:4] == [True, want[1], True, True]
    assert beam_finds(model, prefixes, targets, 4) == want


def test_left_padded_prefixes_score_as_if_alone():
    model = tiny_model()
    prefixes = [torch.tensor([1, 5, 9, 3, 8, 2]), torch.tensor([4, 7]), torch.tensor([2, 2, 6, 1])]
    logp, _, _, _ = prefix_state(model, prefixes)
    for i, p in enumerate(prefixes):
        alone = model(p.unsqueeze(0)).logits[0, -1].log_softmax(-1)
        torch.testing.assert_close(logp[i], alone, atol=1e-5, rtol=1e-5)
    ids, mask, pos = left_pad(prefixes)
    assert mask.sum(1).tolist() == [6, 2, 4] and pos[1, -2:].tolist() == [0, 1]


def test_batched_beam_search_equals_one_prefix_at_a_time_and_width_one_is_greedy():
    model = tiny_model()
    prefixes = [torch.tensor([1, 5, 9, 3, 8, 2]), torch.tensor([4, 7]), torch.tensor([2, 2, 6, 1])]
    lengths = [3, 5, 2]
    together = beam_search(model, prefixes, lengths, 4)
    for p, n, beams in zip(prefixes, lengths, together, strict=True):
        assert torch.equal(beam_search(model, [p], [n], 4)[0], beams)
        greedy = model.generate(p.unsqueeze(0), max_new_tokens=n, do_sample=False, pad_token_id=0)[0, len(p):]
        assert torch.equal(beam_search(model, [p], [n], 1)[0][0], greedy)


def test_sequence_logprobs_are_the_teacher_forced_sums():
    model = tiny_model()
    prefix, seqs = torch.tensor([3, 1, 4, 1]), torch.tensor([[5, 9, 2], [6, 5, 3]])
    got = sequence_logprobs(model, prefix, seqs)
    for s, value in zip(seqs, got, strict=True):
        full = torch.cat([prefix, s]).unsqueeze(0)
        lp = model(full).logits[0, :-1].log_softmax(-1)
        want = lp[len(prefix) - 1 + torch.arange(len(s)), s].sum()
        torch.testing.assert_close(value, want, atol=1e-4, rtol=1e-5)


def test_logit_lens_at_the_last_layer_is_the_models_own_logits():
    model = tiny_model()
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(4))
    layers = attacks.lens_logits(model, ids, torch.ones_like(ids))
    assert len(layers) == model.config.n_layer
    assert torch.equal(layers[-1], model(ids).logits)


def _span_corpus(model, length=3):
    """One row per prefix, whose 'assoc' span is the model's own greedy continuation (so p is not tiny)."""
    from privloc.corpora.data import CATEGORIES, KINDS
    from privloc.method.tokenizer import Encoded, SpanInfo

    rows, spans = [], []
    for r, prefix in enumerate(([1, 5, 9], [4, 7, 2, 8])):
        p = torch.tensor(prefix)
        cont = model.generate(p.unsqueeze(0), max_new_tokens=length, do_sample=False, pad_token_id=0)[0]
        rows.append(torch.cat([cont, torch.tensor([3])]))
        spans.append(SpanInfo(r, "PHONE", "assoc", "s0", "x", len(prefix), len(prefix) + length))
    width = max(len(x) for x in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    cat, kind, sid = torch.zeros_like(ids), torch.zeros_like(ids), torch.full_like(ids, -1)
    for r, (x, s) in enumerate(zip(rows, spans, strict=True)):
        ids[r, : len(x)], mask[r, : len(x)] = x, 1
        cat[r, s.tok_start: s.tok_end] = CATEGORIES.index("PHONE") + 1
        kind[r, s.tok_start: s.tok_end] = KINDS.index("assoc") + 1
        sid[r, s.tok_start: s.tok_end] = r
    return Encoded(ids, mask, cat, kind, sid, spans)


def test_closed_form_sampling_matches_real_seeded_sampling():
    model = tiny_model(seed=3)
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(25)  # sharper next-token distributions: spans of a few tokens get likely
    enc = _span_corpus(model)
    cfg = AttackConfig(top_k=40, temperature=1.0)
    frame = attacks.token_attacks(model, enc, [0, 1], cfg)
    assert frame["greedy"].all()
    draws = 4000
    for i in (0, 1):
        s = enc.spans[i]
        prefix = enc.input_ids[s.doc, : s.tok_start].unsqueeze(0)
        torch.manual_seed(11 + i)
        out = model.generate(prefix, do_sample=True, top_k=40, temperature=1.0, max_new_tokens=3,
                             num_return_sequences=draws, pad_token_id=0)[:, s.tok_start:]
        hits = (out == enc.input_ids[s.doc, s.tok_start: s.tok_end]).all(1).float().mean().item()
        p = float(np.exp(frame.loc[i, "log_p_sample"]))
        assert 0.02 < p < 0.98
        assert abs(hits - p) < 4 * np.sqrt(p * (1 - p) / draws)
        # B draws: the closed form 1 - (1 - p)^B against groups of B real draws.
        groups = (out == enc.input_ids[s.doc, s.tok_start: s.tok_end]).all(1).view(-1, 10).any(1).float().mean()
        closed = attacks._sample_success(frame.loc[[i], "log_p_sample"], 10).iloc[0]
        assert abs(groups.item() - closed) < 4 * np.sqrt(closed * (1 - closed) / (draws // 10)) + 1e-9


def test_candidates_have_exactly_the_truths_token_count():
    texts = [f"Call {n} at 713-555-01{n % 10}{n % 7} or write to box {n}." for n in range(40)]
    tok = train_tokenizer(texts, vocab_size=300)
    pool = {"PHONE": [f"{n}-555-{(37 * n) % 10000:04d}" for n in range(200, 220)]
            + ["1-800-FLOWERS", "555 12", "+44 20 7946 0958"]}
    sets = CandidateSets(tok, pool, k=5, seed=0)
    truth_text = "713-555-0142"
    truth = tok(" " + truth_text, add_special_tokens=False)["input_ids"]
    chosen = sets.for_span(0, "PHONE", truth_text, truth)
    assert 0 < len(chosen) <= 5
    assert all(len(c) == len(truth) and c != truth for c in chosen)
    assert chosen == sets.for_span(0, "PHONE", truth_text, truth)  # seeded by the span


def test_chance_values_are_the_uniform_rank_expectations():
    for n in (2, 10, 101):
        ranks = np.arange(1, n + 1)
        assert chance_exposure(n) == pytest.approx(np.mean([exposure_from_rank(r, n) for r in ranks]))
        assert chance_mrr(n) == pytest.approx(np.mean(1.0 / ranks))
    assert chance_exposure(5000) == pytest.approx(np.log2(np.e), abs=0.01)


def test_leak_any_combines_the_black_box_attacks():
    frame = attacks.pd.DataFrame({
        "greedy": [False, False, True, False], "log_p_sample": np.log([1e-9, 0.5, 1e-9, 1e-9]),
        "rank_max": [3, 2, 1, 50], "lens_rank_max": [2, 1, 1, 50], "category": ["EMAIL"] * 4,
        "in_search": [True] * 4, "beam_10": [True, False, True, False], "cand_rank": [40.0, 30.0, 1.0, 20.0],
        "n_ranked": [101] * 4,
    })
    s = attacks.summarize(frame, 10)
    assert s["leak_beam"] == 0.5 and s["leak_greedy"] == 0.25 and s["leak_candidates"] == 0.25
    assert s["leak_logit_lens"] == 0.75
    sample_2 = 1 - 0.5 ** 10
    assert s["leak_any"] == pytest.approx((1 + sample_2 + 1 + 0) / 4, abs=1e-6)
    assert s["leak_candidates_chance"] == pytest.approx(10 / 101)
