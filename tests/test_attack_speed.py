"""The attack suite's cheaper paths: the logit lens a block of layers at a time, and bf16 autocast.

fp32 must stay what the figures were made with, bit for bit; a block-wise lens must give the ranks of the
whole stack exactly; under autocast the cheaper paths must agree with the plain ones run in the same precision.
"""

import copy

import pytest
import torch
from helpers import tiny_corpus, tiny_model
from test_attacks import _span_corpus, sequence_logprobs

from privloc import devices
from privloc.config import AttackConfig
from privloc.method import attacks, metrics
from privloc.method.decoding import beam_finds, extend, extend_logprobs, prefix_state, rank_among
from privloc.method.lens import block_outputs, lens_parts, span_lens


def _span_hidden(model, ids, start, end):
    """Every block's output at the positions predicting ids[start:end] (one row), and those tokens."""
    t = torch.arange(start - 1, end - 1)
    hidden = block_outputs(model, ids.unsqueeze(0), torch.ones_like(ids).unsqueeze(0))
    return torch.stack([h[0, t] for h in hidden]), ids[t + 1]


def test_one_block_lens_is_the_stacked_formula_bit_for_bit():
    model = tiny_model(seed=2, n_layer=3)
    ids = torch.randint(0, 50, (12,), generator=torch.Generator().manual_seed(0))
    stacked, truth = _span_hidden(model, ids, 4, 10)
    _, _, norm, head = lens_parts(model)
    with torch.no_grad():
        per_layer = head(norm(stacked)).float()  # the suite's formula before the lens went block-wise
    want = 1 + (per_layer > per_layer.gather(-1, truth.expand(3, -1).unsqueeze(-1))).sum(-1)
    ranks, last = span_lens(stacked, truth, norm, head)
    assert torch.equal(ranks, want) and torch.equal(last, per_layer[-1])


@pytest.mark.parametrize("max_logits", [1, 50 * 6, 50 * 6 * 2])
def test_block_wise_lens_ranks_equal_the_full_computation(max_logits):
    model = tiny_model(seed=4, n_layer=4)
    ids = torch.randint(0, 50, (14,), generator=torch.Generator().manual_seed(1))
    stacked, truth = _span_hidden(model, ids, 5, 11)
    _, _, norm, head = lens_parts(model)
    full = attacks.lens_logits(model, ids.unsqueeze(0), torch.ones_like(ids).unsqueeze(0))
    logits = torch.stack([f[0, 4:10] for f in full])  # every layer's full logits at the span's positions
    want = 1 + (logits > logits.gather(-1, truth.expand(4, -1).unsqueeze(-1))).sum(-1)
    ranks, last = span_lens(stacked, truth, norm, head, max_logits=max_logits)
    assert torch.equal(ranks, want)
    torch.testing.assert_close(last, logits[-1], rtol=0, atol=1e-6)


def test_autocast_is_a_no_op_for_none_and_refuses_fp32():
    assert not torch.is_autocast_enabled("cpu")
    with devices.autocast(None, "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with devices.autocast("bfloat16", torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with pytest.raises(ValueError):
        devices.autocast("float32", "cpu")


def _bf16(fn, *args, **kwargs):
    with devices.autocast("bfloat16", "cpu"):
        return fn(*args, **kwargs)


def test_lean_candidate_log_probs_equal_the_full_log_softmax_under_autocast():
    model = tiny_model(seed=5)
    prefix = torch.tensor([3, 1, 4, 1, 5])
    seqs = torch.randint(1, 50, (7, 4), generator=torch.Generator().manual_seed(2))

    def both():
        logp, cache, mask, next_pos = prefix_state(model, [prefix])
        m = len(seqs)
        cache.batch_repeat_interleave(m)
        full, _, _ = extend(model, copy.deepcopy(cache), mask.expand(m, -1), next_pos.expand(m), seqs[:, :-1])
        lean = extend_logprobs(model, cache, mask.expand(m, -1), next_pos.expand(m), seqs[:, :-1], seqs[:, 1:], rows=5)
        return full.gather(-1, seqs[:, 1:].unsqueeze(-1)).squeeze(-1), lean

    full, lean = _bf16(both)
    assert lean.dtype == torch.float32
    torch.testing.assert_close(lean, full, rtol=0, atol=1e-5)
    # and the bf16 scores stay near fp32's
    want = sequence_logprobs(model, prefix, seqs) - sequence_logprobs(model, prefix, seqs[:, :1])
    torch.testing.assert_close(lean.sum(1), want, rtol=0, atol=0.15)


def test_ranking_and_token_attacks_under_autocast_stay_near_fp32():
    model = tiny_model(seed=3)
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(25)  # sharp distributions, as a model that memorised
    enc = _span_corpus(model)
    cfg = AttackConfig(top_k=40)
    fp32 = attacks.token_attacks(model, enc, [0, 1], cfg)
    bf16 = attacks.token_attacks(model, enc, [0, 1], cfg, autocast="bfloat16")
    assert fp32["greedy"].tolist() == bf16["greedy"].tolist() == [True, True]
    assert fp32["lens_rank_max"].tolist() == bf16["lens_rank_max"].tolist()
    assert (fp32["log_p_sample"] - bf16["log_p_sample"]).abs().max() < 0.1
    gen = torch.Generator().manual_seed(0)
    prefixes = [torch.tensor([1, 5, 9]), torch.tensor([4, 7, 2, 8])]
    truths = [enc.input_ids[0, 3:6], enc.input_ids[1, 4:7]]
    others = [torch.randint(1, 50, (20, 3), generator=gen).tolist() for _ in truths]
    assert _bf16(rank_among, model, prefixes, truths, others) == rank_among(model, prefixes, truths, others)
    # Beam search under autocast chunks prefixes by length: the same searches, the same finds.
    many = [torch.tensor([1, 5, 9]), torch.tensor([4, 7, 2, 8, 3, 3, 1]), torch.tensor([2]), torch.tensor([4, 7, 2, 8])]
    targets = [enc.input_ids[0, 3:6], torch.tensor([7, 7, 7]), torch.tensor([9, 1, 2]), enc.input_ids[1, 4:7]]
    want = beam_finds(model, many, targets, 3, chunk=2)
    assert want[0] and want[3]
    assert _bf16(beam_finds, model, many, targets, 3, chunk=2) == want


def test_projected_scores_under_autocast_match_fp32():
    model, enc = tiny_model(seed=1), tiny_corpus()
    fp32 = metrics.score_tokens(model, enc, batch_size=3)
    bf16 = metrics.score_tokens(model, enc, batch_size=3, autocast="bfloat16")
    assert torch.equal(fp32["valid"], bf16["valid"])
    torch.testing.assert_close(bf16["nll"], fp32["nll"], rtol=0, atol=0.1)
    assert (fp32["correct"] == bf16["correct"]).float().mean() > 0.9
    some = torch.zeros_like(fp32["valid"])
    some[:, 3:7] = True
    part = metrics.score_tokens(model, enc, batch_size=2, positions=some, autocast="bfloat16")
    torch.testing.assert_close(part["nll"][some & part["valid"]], bf16["nll"][some & bf16["valid"]], rtol=0,
                               atol=1e-5)
