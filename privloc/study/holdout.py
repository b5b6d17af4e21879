"""Held-out contexts: documents of the same people that a mask never saw (issue: leakage as an attacker sees it).

A mask learned on some documents may only have learned those contexts. Splitting every data subject's
documents into a learned part and a held-out part keeps the PII the same on both sides, so leakage on the
held-out part says whether the mask removed the memory or only its cue in the documents it was shown.
"""

from __future__ import annotations

import numpy as np

from privloc.method.tokenizer import Encoded


def row_subjects(enc: Encoded) -> list[str | None]:
    """The data subject of each row: the subject of its first span that has one (None: a one-off document)."""
    subject: list[str | None] = [None] * len(enc)
    for s in enc.spans:
        if s.subject is not None and subject[s.doc] is None:
            subject[s.doc] = s.subject
    return subject


def holdout_rows(enc: Encoded, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(learned rows, held-out rows): `share` of each subject's documents held out, drawn with `seed`.

    Each subject keeps at least one document on each side when it has two or more; documents without a
    subject (one-off PII) are all learned, as they hold nothing to hold out.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"the held-out share must be strictly between 0 and 1, got {share}")
    rng = np.random.default_rng(seed)
    by_subject: dict[str, list[int]] = {}
    for row, subject in enumerate(row_subjects(enc)):
        if subject is not None:
            by_subject.setdefault(subject, []).append(row)
    held = []
    for subject in sorted(by_subject):
        docs = by_subject[subject]
        if len(docs) < 2:
            continue
        n = min(len(docs) - 1, max(1, round(share * len(docs))))
        held += rng.choice(docs, n, replace=False).tolist()
    held_out = np.sort(np.asarray(held, dtype=np.int64))
    learned = np.setdiff1d(np.arange(len(enc)), held_out)
    return learned, held_out
