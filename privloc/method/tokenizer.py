"""A byte-level BPE tokenizer and the projection of PII spans onto tokens (docs/method.md, "Tokenizer")."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from privloc.corpora.data import CATEGORIES, KINDS, span_kinds

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE whose digits are single tokens, so phone numbers and dates are spelled out."""
    bpe = Tokenizer(models.BPE())
    # Digits first: a number becomes one token per digit, whatever BPE would have merged.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    # trim_offsets keeps a token's leading space out of its character span, so labels stay on the PII.
    bpe.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    path = Path(path)
    if not (path / "tokenizer.json").exists():
        raise FileNotFoundError(f"no tokenizer at {path} (expected {path / 'tokenizer.json'})")
    return AutoTokenizer.from_pretrained(str(path))


@dataclass
class SpanInfo:
    doc: int
    category: str
    kind: str
    subject: str | None
    text: str
    tok_start: int  # position in the row; the row starts with BOS, so >= 1
    tok_end: int  # exclusive


@dataclass
class Encoded:
    """One row per document (BOS + tokens + EOS, right-padded) with a PII label on every token."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    category: torch.Tensor  # 0 = not PII, i + 1 = CATEGORIES[i]
    kind: torch.Tensor  # 0 = not PII, k + 1 = KINDS[k]
    span_id: torch.Tensor  # -1 = not PII, else an index into spans
    spans: list[SpanInfo] = field(default_factory=list)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, rows: Sequence[int]) -> Encoded:
        rows = list(rows)
        new_doc = {old: new for new, old in enumerate(rows)}
        old_to_new: dict[int, int] = {}
        spans = []
        for index, span in enumerate(self.spans):
            if span.doc in new_doc:
                old_to_new[index] = len(spans)
                spans.append(SpanInfo(**{**span.__dict__, "doc": new_doc[span.doc]}))
        span_id = self.span_id[rows].clone()
        remap = torch.full((len(self.spans) + 1,), -1, dtype=torch.long)
        for old, new in old_to_new.items():
            remap[old] = new
        span_id = torch.where(span_id >= 0, remap[span_id.clamp(min=0)], span_id)
        return Encoded(
            self.input_ids[rows], self.attention_mask[rows], self.category[rows], self.kind[rows], span_id, spans
        )

    def target_mask(self, kinds: Sequence[str] = ("assoc",), categories: Sequence[str] | None = None,
                    first_token: bool = False) -> torch.Tensor:
        """[N, L-1] bool: next-token targets that are PII of the given kinds (and categories).

        `first_token` keeps only the first token of each span: the one predicted from the context alone.
        """
        kind_ids = torch.tensor([KINDS.index(k) + 1 for k in kinds])
        mask = torch.isin(self.kind[:, 1:], kind_ids)
        if categories is not None:
            unknown = set(categories) - set(CATEGORIES)
            if unknown:
                raise ValueError(f"unknown PII categories {sorted(unknown)}; expected some of {CATEGORIES}")
            mask &= torch.isin(self.category[:, 1:], torch.tensor([CATEGORIES.index(c) + 1 for c in categories]))
        if first_token:
            mask &= self.span_id[:, 1:] != self.span_id[:, :-1]
        return mask & self.attention_mask[:, 1:].bool()

    def nonpii_mask(self) -> torch.Tensor:
        """[N, L-1] bool: next-token targets that are ordinary (non-PII) tokens."""
        return (self.category[:, 1:] == 0) & self.attention_mask[:, 1:].bool()


def _token_range(offsets: list[tuple[int, int]], ends: list[int], start: int, end: int) -> range:
    """Indices of the tokens whose characters overlap [start, end), for offsets whose starts and ends both
    never decrease: the overlapping tokens are then one run, found by two binary searches."""
    first = bisect.bisect_right(ends, start)  # the first token that ends after the span starts
    last = first
    while last < len(offsets) and offsets[last][0] < end:
        last += 1
    return range(first, last)


def encode_records(tokenizer, records: Sequence[dict], max_len: int = 256, progress: bool = False) -> Encoded:
    """Tokenise documents and label each token with the category and kind of the PII span it lies in.

    Documents longer than max_len are truncated; spans that no longer fit are dropped. Finding a span's tokens
    takes time linear in the span's length (not in the document's), so a long document with thousands of
    spans encodes in seconds; `progress` shows a bar over the documents.
    """
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    rows, spans = [], []
    for doc, record in enumerate(tqdm(records, desc="encode", unit="doc", disable=not progress, leave=False)):
        enc = tokenizer(record["text"], add_special_tokens=False, return_offsets_mapping=True)
        ids = [bos, *enc["input_ids"]][: max_len - 1] + [eos]
        category = [0] * len(ids)
        kind = [0] * len(ids)
        span_id = [-1] * len(ids)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        ends = [e for _, e in offsets]
        ordered = all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(offsets, offsets[1:], strict=False))
        for span, span_kind in zip(record["spans"], span_kinds(record), strict=True):
            if ordered:
                covered = [i + 1 for i in _token_range(offsets, ends, span["start"], span["end"])
                           if offsets[i][0] < span["end"] and span["start"] < offsets[i][1]]
            else:  # offsets out of order (no tokenizer privloc knows does this): scan every token
                covered = [i + 1 for i, (s, e) in enumerate(offsets) if s < span["end"] and span["start"] < e]
            positions = [p for p in covered if p < len(ids) - 1]
            if not positions or len(positions) != len(covered):
                continue  # truncated away
            index = len(spans)
            spans.append(
                SpanInfo(
                    doc, span["category"], span_kind, span.get("subject"),
                    record["text"][span["start"]: span["end"]], positions[0], positions[-1] + 1,
                )
            )
            for p in positions:
                category[p] = CATEGORIES.index(span["category"]) + 1
                kind[p] = KINDS.index(span_kind) + 1
                span_id[p] = index
        rows.append((ids, category, kind, span_id))
    width = max(len(r[0]) for r in rows)

    def padded(column: int, fill: int) -> torch.Tensor:
        return torch.tensor([r[column] + [fill] * (width - len(r[column])) for r in rows], dtype=torch.long)

    input_ids = padded(0, pad)
    attention_mask = torch.tensor([[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows], dtype=torch.long)
    return Encoded(input_ids, attention_mask, padded(1, 0), padded(2, 0), padded(3, -1), spans)
