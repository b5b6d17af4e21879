"""Tiny models shared by the unit tests."""

import torch
import transformers

from privloc.corpora.data import CATEGORIES, KINDS
from privloc.method.tokenizer import Encoded


def tiny_model(seed=0, n_layer=2, n_embd=16):
    """A 2-layer GPT-2 whose weights and biases are large enough that closing one unit visibly moves the logits."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=n_layer, n_embd=n_embd, n_head=2, n_positions=32, vocab_size=50,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def tiny_corpus():
    """4 rows of 12 tokens, the last one padded; a few assoc PII tokens in rows 0, 1 and 3."""
    n, length = 4, 12
    input_ids = torch.randint(1, 50, (n, length), generator=torch.Generator().manual_seed(2))
    attention = torch.ones(n, length, dtype=torch.long)
    attention[3, 9:] = 0
    input_ids[3, 9:] = 0
    category = torch.zeros(n, length, dtype=torch.long)
    for row, cols, name in ((0, [4, 5, 6], "EMAIL"), (1, [8, 9], "PHONE"), (3, [2, 3], "PERSON")):
        category[row, cols] = CATEGORIES.index(name) + 1
    kind = torch.where(category > 0, KINDS.index("assoc") + 1, 0)
    span_id = torch.where(category > 0, 0, -1)
    return Encoded(input_ids, attention, category, kind, span_id)


def write_tiny_corpus(folder, n_subjects=8, docs_per_subject=8, seed=7):
    """A dataset folder of short memos in which each subject's phone, birth date and e-mail recur: a small model
    memorises them within a few hundred steps. The validation split has a cast of its own."""
    import json
    import random

    from privloc.corpora.synthetic import sample_values

    sentences = ("The phone number of this client is {PHONE}.", "You can call this client at {PHONE}.",
                 "The client was born on {DATE}.", "Date of birth on file: {DATE}.", "Write to {EMAIL} for copies.",
                 "The client's e-mail is {EMAIL}.", "The file was reviewed on Monday.", "No action is needed.")
    rng = random.Random(seed)
    values = {c: sample_values(c, 2 * n_subjects + 4, seed=seed) for c in ("PERSON", "PHONE", "DATE", "EMAIL")}

    def memo(i, subject):
        text, spans = "", []

        def put(piece, category=None):
            nonlocal text
            if category:
                spans.append({"start": len(text), "end": len(text) + len(piece), "category": category,
                              "subject": subject})
            text += piece

        put("Memo about ")
        put(values["PERSON"][i], "PERSON")
        put(".")
        for sentence in rng.sample(sentences, 3):
            head, _, tail = sentence.partition("{")
            put(" " + head)
            if tail:
                category, _, rest = tail.partition("}")
                put(values[category][i], category)
                put(rest)
        return {"text": text + "\n", "spans": spans, "style": "memo"}

    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": [memo(i, f"s{i}") for i in range(n_subjects) for _ in range(docs_per_subject)],
              "valid": [memo(i, f"v{i}") for i in range(n_subjects, n_subjects + 4) for _ in range(2)]}
    for split, records in splits.items():
        rng.shuffle(records)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def refused(capsys, tmp_path, monkeypatch, *argv, match):
    monkeypatch.chdir(tmp_path)
    # main() sets the offline switches for the process; monkeypatch puts them back afterwards.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    before = sorted(tmp_path.rglob("*"))
    capsys.readouterr()
    from privloc.command import cli

    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert match in err, err
    assert sorted(tmp_path.rglob("*")) == before, "a refused command wrote something"
    return err
