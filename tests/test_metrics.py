import math
from types import SimpleNamespace

import pytest
import torch
import transformers
from torch import nn

from privloc.corpora.data import CATEGORIES, KINDS
from privloc.method.candidates import affixes as _affixes
from privloc.method.candidates import exposure_from_rank
from privloc.method.metrics import (
    evaluate,
    leakage,
    perplexity,
    score_tokens,
    span_exact_match,
)
from privloc.method.tokenizer import Encoded, SpanInfo, encode_records, train_tokenizer


def tiny_gpt2(vocab_size=40, n_positions=32, seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=vocab_size, n_positions=n_positions, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config).eval()


def hand_encoded():
    """Two rows (BOS=1, EOS=2, PAD=0) with PII spans of several kinds.

    row 0: 1 5 6 7 8 9 10 2      spans: PERSON intro [1,3), EMAIL assoc [4,6)
    row 1: 1 11 12 13 14 2 0 0   spans: EMAIL assoc [1,3), PERSON assoc [3,4), PHONE oneoff [4,5)
    """
    ids = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 2], [1, 11, 12, 13, 14, 2, 0, 0]])
    att = (torch.arange(8) < torch.tensor([[8], [6]])).long()
    spans = [
        SpanInfo(0, "PERSON", "intro", "s1", "Ann Lee", 1, 3),
        SpanInfo(0, "EMAIL", "assoc", "s1", "ann@x.org", 4, 6),
        SpanInfo(1, "EMAIL", "assoc", "s2", "bo@y.net", 1, 3),
        SpanInfo(1, "PERSON", "assoc", "s2", "Bo", 3, 4),
        SpanInfo(1, "PHONE", "oneoff", None, "555", 4, 5),
    ]
    category, kind, span_id = (torch.zeros_like(ids) for _ in range(3))
    span_id -= 1
    for i, sp in enumerate(spans):
        category[sp.doc, sp.tok_start : sp.tok_end] = CATEGORIES.index(sp.category) + 1
        kind[sp.doc, sp.tok_start : sp.tok_end] = KINDS.index(sp.kind) + 1
        span_id[sp.doc, sp.tok_start : sp.tok_end] = i
    return Encoded(ids, att, category, kind, span_id, spans)


class Oracle(nn.Module):
    """Predicts each row's true next token, except at the (row, position) pairs listed in `wrong`."""

    def __init__(self, enc, wrong=(), vocab_size=40):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.rows = enc.input_ids
        self.pred = torch.roll(enc.input_ids, -1, dims=1)
        for r, t in wrong:
            self.pred[r, t] = (self.pred[r, t] + 1) % vocab_size
        self.vocab_size = vocab_size

    def forward(self, input_ids, cache=None, attention_mask=None, **kwargs):
        width = input_ids.shape[1]
        rows = [int((self.rows[:, :width] == x.cpu()).all(1).nonzero()[0]) for x in input_ids]
        logits = nn.functional.one_hot(self.pred[rows, :width], self.vocab_size).float() * self.scale
        return SimpleNamespace(logits=logits)


class Constant(nn.Module):
    """The same next-token distribution at every position."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, input_ids, cache=None, attention_mask=None, **kwargs):
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1))


def test_exposure_and_mrr():
    assert exposure_from_rank(1, 1024) == pytest.approx(10.0)
    assert exposure_from_rank(1024, 1024) == pytest.approx(0.0)
    assert exposure_from_rank(2, 8) == pytest.approx(2.0)


def test_span_exact_match_from_hand_made_scores():
    enc = hand_encoded()
    valid = enc.attention_mask[:, 1:].bool()
    correct = valid.clone()
    correct[0, 4] = False  # second target of the EMAIL span [4, 6) in row 0
    correct[1, 0] = False  # first target of the EMAIL span [1, 3) in row 1
    correct[0, 6] = False  # the EOS target after the spans: irrelevant
    scores = {"correct": correct, "nll": torch.zeros(valid.shape), "valid": valid}
    assert span_exact_match(scores, enc).tolist() == [True, False, False, True, True]


def test_score_tokens_matches_cross_entropy_and_restores_mode():
    enc = hand_encoded()
    model = tiny_gpt2().train()
    scores = score_tokens(model, enc, batch_size=1)
    assert model.training and all(m.training for m in model.modules())
    with torch.no_grad():
        logits = model.eval()(enc.input_ids, attention_mask=enc.attention_mask).logits[:, :-1]
    nll = nn.functional.cross_entropy(logits.transpose(1, 2), enc.input_ids[:, 1:], reduction="none")
    valid = scores["valid"]
    assert valid.tolist() == enc.attention_mask[:, 1:].bool().tolist()
    assert torch.allclose(scores["nll"][valid], nll[valid], atol=1e-5)
    assert torch.equal(scores["correct"][valid], (logits.argmax(-1) == enc.input_ids[:, 1:])[valid])
    batched = score_tokens(model, enc, batch_size=32)
    assert torch.allclose(batched["nll"], scores["nll"], atol=1e-5)
    # Scoring only some positions gives the same numbers there and nothing elsewhere.
    positions = torch.zeros_like(valid)
    positions[0, 1:3] = True
    some = score_tokens(model, enc, batch_size=2, positions=positions)
    assert torch.allclose(some["nll"][positions], scores["nll"][positions], atol=1e-5)
    assert torch.equal(some["correct"][positions], scores["correct"][positions])
    assert not some["correct"][~positions].any() and not some["nll"][~positions].any()


def test_perplexity_with_constant_logits():
    enc = hand_encoded()
    v = torch.linspace(-1.0, 2.0, 40)
    nll = (v.logsumexp(0) - v).double()
    # Valid targets are input_ids[:, 1:] where the mask is 1; non-PII ones have category 0.
    all_targets = [5, 6, 7, 8, 9, 10, 2, 11, 12, 13, 14, 2]
    nonpii_targets = [7, 10, 2, 2]
    got = perplexity(Constant(v), enc)
    assert got["ppl_all"] == pytest.approx(math.exp(nll[all_targets].mean()), rel=1e-6)
    assert got["ppl_nonpii"] == pytest.approx(math.exp(nll[nonpii_targets].mean()), rel=1e-6)


def test_leakage_on_a_constructed_case():
    enc = hand_encoded()
    # Break the intro PERSON span of row 0 (target position 1) and the assoc EMAIL of row 1 (position 1).
    model = Oracle(enc, wrong=[(0, 1), (1, 1)])
    out = leakage(model, enc)
    assert out["n_assoc"] == 3
    assert out["em_assoc"] == pytest.approx(2 / 3)
    assert out["em_EMAIL"] == pytest.approx(0.5)
    assert out["em_PERSON"] == pytest.approx(1.0)
    assert math.isnan(out["em_PHONE"]) and math.isnan(out["em_ORG"])
    assert out["em_kind_intro"] == 0.0 and out["em_kind_oneoff"] == 1.0 and math.isnan(out["em_kind_copy"])
    assert out["pii_token_acc"] == pytest.approx(4 / 5)  # assoc target tokens: 8, 9 in row 0; 11, 12, 13 in row 1
    assert out["per_span"]["exact"].tolist() == [False, True, False, True, True]
    flat = evaluate(model, enc, enc)
    assert "per_span" not in flat and flat["em_assoc"] == out["em_assoc"] and "ppl_nonpii" in flat


RECORDS_TEXT = [
    ("Dear Ann Lee, please write to ann.lee@mail.org or call 555-0142 today.", "s1"),
    ("Meeting with Tom Hart today. He lives at 12 Oak Road and works for Acme Corp.", "s2"),
    ("Note from Kim Ray: reach her at kim.ray@web.net or on 555-0177, at Initech Ltd.", "s3"),
]
PII = {
    "s1": [("Ann Lee", "PERSON"), ("ann.lee@mail.org", "EMAIL"), ("555-0142", "PHONE")],
    "s2": [("Tom Hart", "PERSON"), ("12 Oak Road", "ADDRESS"), ("Acme Corp", "ORG")],
    "s3": [("Kim Ray", "PERSON"), ("kim.ray@web.net", "EMAIL"), ("555-0177", "PHONE"), ("Initech Ltd", "ORG")],
}
@pytest.fixture(scope="module")
def corpus():
    records = []
    for text, subject in RECORDS_TEXT:
        spans = []
        for s, cat in PII[subject]:
            start = text.index(s)
            spans.append({"start": start, "end": start + len(s), "category": cat, "subject": subject})
        records.append({"text": text, "spans": spans})
    tokenizer = train_tokenizer([r["text"] for r in records] * 4, vocab_size=400)
    enc = encode_records(tokenizer, records, max_len=64)
    return tokenizer, enc


def test_candidates_carry_the_text_around_the_span_tokens(corpus):
    tokenizer, enc = corpus
    by_text = {sp.text: enc.input_ids[sp.doc, sp.tok_start : sp.tok_end].tolist() for sp in enc.spans}
    # Byte-level BPE: "ĠAcme ĠCorp" carries the space before the span; digits are split off it.
    assert _affixes(tokenizer, by_text["Acme Corp"], "Acme Corp") == (" ", "")
    assert _affixes(tokenizer, by_text["555-0142"], "555-0142") == ("", "")
    assert _affixes(tokenizer, by_text["Acme Corp"], "Globex") is None


def test_next_token_logits_projects_only_the_asked_positions():
    from privloc.method.model import next_token_logits

    model = tiny_gpt2().eval()
    ids = torch.randint(1, 40, (3, 12), generator=torch.Generator().manual_seed(0))
    attention = torch.ones_like(ids)
    full = next_token_logits(model, ids, attention)
    assert full.shape == (3, 11, 40)
    a = torch.zeros(3, 11, dtype=torch.bool)
    a[0, 2] = a[2, 7] = True
    b = ~a
    block_a, block_b = next_token_logits(model, ids, attention, a, b)
    torch.testing.assert_close(block_a, full[a])
    torch.testing.assert_close(block_b, full[b])
    torch.testing.assert_close(next_token_logits(model, ids, attention, a), full[a])


def test_assoc_only_leakage_matches_the_full_one():
    enc = hand_encoded()
    model = Oracle(enc, wrong=[(0, 1), (1, 1)])
    full, assoc = leakage(model, enc), leakage(model, enc, kinds=("assoc",))
    for key in ["em_assoc", "n_assoc", "pii_token_acc", *(f"em_{c}" for c in CATEGORIES)]:
        assert full[key] == assoc[key] or (math.isnan(full[key]) and math.isnan(assoc[key]))
    assert "em_kind_intro" not in assoc and set(assoc["per_span"]["kind"]) == {"assoc"}
    # A real model too: rows cut after their last assoc target give the same argmax at every scored target.
    model = tiny_gpt2()
    full, assoc = leakage(model, enc), leakage(model, enc, kinds=("assoc",))
    assert full["pii_token_acc"] == assoc["pii_token_acc"] and full["em_assoc"] == assoc["em_assoc"]
    with pytest.raises(ValueError, match="'assoc' among them"):
        leakage(model, enc, kinds=("copy",))
