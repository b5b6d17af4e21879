"""Held-out contexts: the documents of each data subject split into a learned and a held-out part."""

import numpy as np
import pytest
import torch

from privloc.method.tokenizer import Encoded, SpanInfo
from privloc.study.holdout import holdout_rows, row_subjects


def _corpus(docs_per_subject=(4, 3, 1), oneoff=2):
    spans, row = [], 0
    for s, n in enumerate(docs_per_subject):
        for _ in range(n):
            spans.append(SpanInfo(row, "PERSON", "intro", f"s{s}", "x", 1, 2))
            spans.append(SpanInfo(row, "EMAIL", "assoc", f"s{s}", "y", 3, 4))
            row += 1
    for _ in range(oneoff):
        spans.append(SpanInfo(row, "PHONE", "oneoff", None, "z", 1, 2))
        row += 1
    ids = torch.zeros(row, 6, dtype=torch.long)
    return Encoded(ids, torch.ones_like(ids), torch.zeros_like(ids), torch.zeros_like(ids),
                   torch.full_like(ids, -1), spans)


def test_every_subject_keeps_documents_on_both_sides():
    enc = _corpus()
    learned, held = holdout_rows(enc, 0.5, seed=0)
    assert np.array_equal(np.sort(np.concatenate([learned, held])), np.arange(len(enc)))
    subjects = row_subjects(enc)
    assert subjects[-1] is None and subjects[0] == "s0"
    for s, n in (("s0", 4), ("s1", 3)):
        rows = [r for r, x in enumerate(subjects) if x == s]
        assert 1 <= len(set(rows) & set(held.tolist())) <= n - 1
    # A single-document subject and one-off documents are never held out.
    assert not {7, 8, 9} & set(held.tolist())
    assert np.array_equal(held, holdout_rows(enc, 0.5, seed=0)[1])


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1])
def test_a_share_outside_the_open_interval_is_refused(share):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        holdout_rows(_corpus(), share)
