import json
import re
import sys
import types

import pytest

from privloc.corpora.data import (
    CATEGORIES,
    DATASETS,
    KINDS,
    DataError,
    read_jsonl,
    regex_tag,
    span_kinds,
    span_table,
    validate_record,
    write_jsonl,
)
from privloc.corpora.sources import load_split
from privloc.corpora.synthetic import generate, sample_values

SMALL = {"n_subjects": 6, "docs_per_subject": 4, "n_oneoff_docs": 5}
PHONE_FORMAT = re.compile(r"[1-9]\d\d-[1-9]\d\d-\d{4}")
DATE_FORMAT = re.compile(
    r"([1-9]|[12]\d|3[01]) (January|February|March|April|May|June|July|August|September|October|November"
    r"|December) (19|20)\d\d"
)


def span(start, end, category="PERSON", subject="s001"):
    return {"start": start, "end": end, "category": category, "subject": subject}


def looks_like(category: str, value: str) -> bool:
    if value != value.strip() or "\n" in value:
        return False
    if category == "EMAIL":
        return re.fullmatch(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", value) is not None
    if category == "PHONE":
        return PHONE_FORMAT.fullmatch(value) is not None
    if category == "DATE":
        return DATE_FORMAT.fullmatch(value) is not None
    if category == "ADDRESS":
        return re.fullmatch(r"\d+ .+, .+", value) is not None
    if category == "PERSON":
        return len(value.split()) == 2 and all(part[0].isupper() for part in value.split())
    return category == "ORG" and len(value) > 2


@pytest.fixture(scope="module")
def corpora():
    splits = ("train", "valid")
    return {name: {split: generate(name, split, **SMALL) for split in splits} for name in DATASETS}


def test_generator_is_deterministic_and_seeded():
    first, again = generate("enron", **SMALL), generate("enron", **SMALL)
    assert json.dumps(first) == json.dumps(again)
    assert generate("enron", seed=1, **SMALL) != first


@pytest.mark.parametrize("name", DATASETS)
def test_spans_are_exact_plausible_values(corpora, name):
    for split, records in corpora[name].items():
        assert len(records) == SMALL["n_subjects"] * SMALL["docs_per_subject"] + SMALL["n_oneoff_docs"]
        for rec in records:
            assert validate_record(rec) == rec  # already sorted, nothing overlaps
            assert rec["style"] == name
            assert 200 <= len(rec["text"]) <= 900
            for s in rec["spans"]:
                value = rec["text"][s["start"]:s["end"]]
                assert looks_like(s["category"], value), (s["category"], value)
                if s["subject"] is not None:
                    assert s["subject"][0] == ("s" if split == "train" else "v")


@pytest.mark.parametrize("name", DATASETS)
def test_every_category_and_kind_present(corpora, name):
    table = span_table(corpora[name]["train"])
    assert list(table.columns) == list(CATEGORIES) and list(table.index) == list(KINDS)
    assert (table.sum(axis=0) > 0).all()
    assert (table.loc["assoc"] > 0).all()  # every category is memorisable, names through the contact person
    assert (table.sum(axis=1) > 0).all()


@pytest.mark.parametrize("name", DATASETS)
def test_subjects_have_fixed_attributes_introduced_by_name(corpora, name):
    values: dict[tuple[str, str], set[str]] = {}
    for rec in corpora[name]["train"]:
        kinds = span_kinds(rec)
        cast_spans = [(s, k) for s, k in zip(rec["spans"], kinds, strict=True) if s["subject"]]
        if cast_spans:
            assert cast_spans[0][0]["category"] == "PERSON" and cast_spans[0][1] == "intro"
        for s, _ in cast_spans:
            values.setdefault((s["subject"], s["category"]), set()).add(rec["text"][s["start"]:s["end"]])
    # PERSON holds two values per subject: the subject's own name and that of the contact (lawyer, doctor,
    # manager) who recurs with them; every other category one.
    assert all(len(v) == (2 if category == "PERSON" else 1) for (_, category), v in values.items())
    assert len(values) == SMALL["n_subjects"] * len(CATEGORIES)


@pytest.mark.parametrize("name", DATASETS)
def test_train_and_valid_casts_are_disjoint(corpora, name):
    def cast(records):
        spans = [(rec["text"], s) for rec in records for s in rec["spans"] if s["subject"]]
        return {text[s["start"]:s["end"]] for text, s in spans}, {s["subject"] for _, s in spans}

    train_values, train_ids = cast(corpora[name]["train"])
    valid_values, valid_ids = cast(corpora[name]["valid"])
    assert train_values and valid_values
    assert not train_values & valid_values
    assert not train_ids & valid_ids


def test_kinds_on_hand_built_document():
    text = "Dear Ann Lee, Ann Lee was born on 1 May 1960. Call Bob Ray at 555-1234. Ann Lee again."
    rec = validate_record({"text": text, "spans": [
        span(text.index("Ann Lee"), text.index("Ann Lee") + 7),  # first mention
        span(14, 21),  # the same string again
        span(text.index("1 May"), text.index("1 May") + 10, "DATE"),
        span(text.index("Bob"), text.index("Bob") + 7, subject=None),
        span(text.index("555"), text.index("555") + 8, "PHONE", "s002"),  # first of s002, not a name
        span(text.rindex("Ann Lee"), text.rindex("Ann Lee") + 7),
    ]})
    assert span_kinds(rec) == ["intro", "copy", "assoc", "oneoff", "intro", "copy"]


def test_copy_counts_earlier_text_that_is_not_a_span():
    text = "Reply to a@b.com. From: Jo Kim <a@b.com>"
    rec = {"text": text, "spans": [span(24, 30), span(32, 39, "EMAIL")]}
    assert span_kinds(rec) == ["intro", "copy"]


def test_kinds_follow_record_order_when_spans_are_unsorted():
    rec = {"text": "Jo Kim, 1 May 1960", "spans": [span(8, 18, "DATE"), span(0, 6)]}
    assert span_kinds(rec) == ["assoc", "intro"]
    assert [s["start"] for s in validate_record(rec)["spans"]] == [0, 8]


@pytest.mark.parametrize("bad_span, problem", [
    (span(0, 99), "outside the text"),
    (span(-1, 3), "outside the text"),
    (span(3, 3), "outside the text"),
    (span(0, 4, "SSN"), "unknown category"),
    (span(0, 4, subject=17), "subject"),
])
def test_invalid_span_is_named_with_its_line(tmp_path, bad_span, problem):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"text": "Jo Kim is here", "spans": [span(0, 6)]})
    path.write_text(good + "\n\n" + json.dumps({"text": "Jo Kim is here", "spans": [bad_span]}) + "\n")
    with pytest.raises(DataError, match=rf"line 3: .*{problem}"):
        read_jsonl(path)


def test_overlap_missing_text_and_broken_json_are_errors(tmp_path):
    with pytest.raises(DataError, match="line 7: .*overlap"):
        validate_record({"text": "Jo Kim is here", "spans": [span(0, 6), span(3, 9)]}, line=7)
    with pytest.raises(DataError, match="missing 'text'"):
        validate_record({"spans": []})
    with pytest.raises(DataError, match="'text' must be a string"):
        validate_record({"text": 3})
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine", "spans": []}\n{"text": \n')
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        read_jsonl(path)


def test_jsonl_round_trip_and_folder_loading(tmp_path):
    train, valid = generate("yelp_health", "train", **SMALL), generate("yelp_health", "valid", **SMALL)
    write_jsonl(train, tmp_path / "train.jsonl")
    write_jsonl(valid, tmp_path / "valid.jsonl")
    assert read_jsonl(tmp_path / "train.jsonl") == train
    assert load_split(str(tmp_path), "valid") == valid
    assert load_split("echr", "valid", **SMALL) == generate("echr", "valid", **SMALL)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl([{"text": "old", "spans": []}], path)
    with pytest.raises(DataError, match="line 2"):
        write_jsonl([{"text": "new", "spans": []}, {"text": "x", "spans": [span(0, 5)]}], path)
    assert read_jsonl(path) == [{"text": "old", "spans": []}]


def test_unknown_sources_and_splits(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'nope': expected one of enron, echr, yelp_health"):
        load_split("nope", "train")
    with pytest.raises(DataError, match="unknown split"):
        load_split("enron", "test")
    with pytest.raises(DataError, match="no valid.jsonl"):
        load_split(str(tmp_path), "valid")
    with pytest.raises(DataError, match="unknown dataset"):
        generate("imdb")


def test_hf_source_is_regex_tagged(monkeypatch):
    class Table:
        column_names = ["text", "label"]

        def __getitem__(self, column):
            return ["Mail me at jo@kim.org", "", "nothing here"]

    requests = []

    def load_dataset(name, config):
        requests.append((name, config))
        return {"train": Table(), "test": Table()}

    # A stand-in module: the test must not reach the hub.
    fake_datasets = types.ModuleType("datasets")
    fake_datasets.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets)
    records = load_split("hf:someone/reviews", "valid")
    load_split("hf:someone/reviews:health", "train")
    assert requests == [("someone/reviews", None), ("someone/reviews", "health")]
    assert [r["text"] for r in records] == ["Mail me at jo@kim.org", "nothing here"]
    assert records[0]["spans"] == [{"start": 11, "end": 21, "category": "EMAIL", "subject": None}]


def test_regex_tag():
    text = "Write to jo.kim+x@mail.example.org. or call (713) 555-0142, 713-555-0199; ref 12-3456 ends."
    found = [(text[s["start"]:s["end"]], s["category"]) for s in regex_tag(text)]
    assert found == [
        ("jo.kim+x@mail.example.org", "EMAIL"), ("(713) 555-0142", "PHONE"), ("713-555-0199", "PHONE")
    ]
    assert all(s["subject"] is None for s in regex_tag(text))
    # a phone-like local part stays inside its e-mail rather than producing an overlapping span
    assert [s["category"] for s in regex_tag("7135550142@x.com or 713 555 0142")] == ["EMAIL", "PHONE"]


def test_regex_tag_recovers_generated_emails_and_phones(corpora):
    for rec in corpora["enron"]["train"]:
        expected = [s for s in rec["spans"] if s["category"] in ("EMAIL", "PHONE")]
        assert [(s["start"], s["end"], s["category"]) for s in regex_tag(rec["text"])] == [
            (s["start"], s["end"], s["category"]) for s in expected
        ]


@pytest.mark.parametrize("category", CATEGORIES)
def test_sample_values_are_distinct_and_formatted(category):
    values = sample_values(category, 60, seed=3)
    assert len(values) == 60 == len(set(values))
    assert all(looks_like(category, v) for v in values)
    assert values == sample_values(category, 60, seed=3) != sample_values(category, 60, seed=4)
