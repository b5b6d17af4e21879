"""The candidate attack and a calibrated exposure (Carlini et al.; Lukas et al.'s PII inference).

The attacker holds a list of plausible values and ranks them by the model's likelihood in the true context.
The ranking means something only if the truth and its candidates compete on equal terms: the same format,
the same number of tokens, and a tokenizer that never saw either (pipeline.tokenizer_texts). Then a model
that never saw the PII ranks the truth uniformly, and its expected exposure is the chance value below.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from privloc.corpora.synthetic import sample_values


def exposure_from_rank(rank: float, n_ranked: int) -> float:
    """Exposure (Carlini et al.): log2 n − log2 rank, with a 1-based rank among n ranked strings."""
    return math.log2(n_ranked) - math.log2(rank)


@cache
def chance_exposure(n_ranked: int) -> float:
    """Expected exposure of a uniformly random rank among n: log2 n − log2(n!)/n (→ log2 e ≈ 1.44 for large n)."""
    return math.log2(n_ranked) - math.lgamma(n_ranked + 1) / math.log(2) / n_ranked


@cache
def chance_mrr(n_ranked: int) -> float:
    """Expected reciprocal rank of a uniformly random rank among n: H_n / n."""
    return sum(1.0 / r for r in range(1, n_ranked + 1)) / n_ranked


def candidate_pool(categories, size: int, seed: int = 0) -> dict[str, list[str]]:
    """`size` same-format values per category, generated apart from every cast (synthetic.sample_values)."""
    return {c: sample_values(c, size, seed=seed + 1) for c in categories}


def affixes(tokenizer, truth_ids: list[int], text: str) -> tuple[str, str] | None:
    """Text the span's tokens carry around the PII itself (typically the leading space of byte-level BPE)."""
    decoded = tokenizer.decode(truth_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    at = decoded.find(text)
    return None if at < 0 else (decoded[:at], decoded[at + len(text):])


class CandidateSets:
    """Per span, K candidates of the truth's category with exactly the truth's number of tokens.

    Candidates are tokenized with the text the truth's tokens carry around it, so " Ann" competes with
    " Bob" and not with "Bob". Which K of the equal-length pool a span gets is seeded by the span's index,
    so every model state is attacked with the same candidates.
    """

    def __init__(self, tokenizer, pool: dict[str, list[str]], k: int, seed: int = 0):
        self.tokenizer, self.pool, self.k, self.seed = tokenizer, pool, k, seed
        self._encoded: dict[tuple, list[tuple[str, tuple[int, ...]]]] = {}

    def _tokenized(self, category: str, around: tuple[str, str]):
        key = (category, around)
        if key not in self._encoded:
            texts = list(dict.fromkeys(self.pool.get(category, ())))
            ids = self.tokenizer([around[0] + t + around[1] for t in texts], add_special_tokens=False)["input_ids"]
            self._encoded[key] = list(zip(texts, map(tuple, ids), strict=True))
        return self._encoded[key]

    def for_span(self, span_index: int, category: str, text: str, truth: list[int]) -> list[list[int]]:
        """Up to K distinct token sequences, none equal to the truth, each as long as the truth."""
        around = affixes(self.tokenizer, truth, text) or ("", "")
        same = {ids: None for t, ids in self._tokenized(category, around)
                if t != text and len(ids) == len(truth) and list(ids) != truth}
        options = list(same)
        if len(options) > self.k:
            rng = np.random.default_rng([self.seed, span_index])
            options = [options[j] for j in sorted(rng.choice(len(options), self.k, replace=False))]
        return [list(o) for o in options]
