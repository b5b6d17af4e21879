"""Synthetic corpora in the styles of the paper's datasets, generated with Faker.

A fixed cast of data subjects recurs across documents, so a model can memorise "person -> attribute";
one-off people fill the rest. Text is built by appending pieces and recording each PII offset as it is
written, so spans are exact by construction. How the corpora are built: docs/method.md, "Synthetic corpora".
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass
from datetime import date

from faker import Faker

from privloc.corpora.data import CATEGORIES, DATASETS, SPLITS, DataError

# What a subject has besides a name. CONTACT is a person tied to the subject (lawyer, doctor, manager): a
# PERSON value that recurs with the subject, so names are memorised too.
ATTRIBUTES = ("EMAIL", "PHONE", "ADDRESS", "DATE", "ORG", "CONTACT")
# Names the generator's output: the corpus cache key holds it, so a cached corpus of an older generator is
# never reused. Raise it whenever the same seed and sizes would give other documents.
GENERATOR = "2: a recurring contact person"
_CATEGORY_OF = {"CONTACT": "PERSON"}
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
_BIRTH_DATES = (date(1940, 1, 1), date(2000, 12, 31))
# Event dates lie after every birth date, so one can never be read as a subject's date of birth.
_EVENT_DATES = (date(2001, 1, 1), date(2023, 12, 31))
# Each value belongs, by hash, to one pool. Pools share no value whatever the seeds and sizes, so the
# validation cast never rewards memory of the training cast and a one-off never collides with either.
_POOLS = {"train": 0, "valid": 1, "oneoff": 2}
_PRONOUNS = {"mr": ("Mr", "Ms"), "he": ("he", "she"), "He": ("He", "She"), "his": ("his", "her"),
             "His": ("His", "Her")}
_WORDS = {
    "topic": ("Q3 gas contracts", "Re: draft agreement", "meeting moved", "trading limits", "expense report",
              "Re: pipeline capacity", "West desk schedule", "conference call tomorrow"),
    "state": ("Poland", "Turkey", "Romania", "Ukraine", "Italy", "Russia", "Bulgaria", "Hungary"),
    "city": ("Warsaw", "Istanbul", "Bucharest", "Kyiv", "Milan", "Moscow", "Sofia", "Budapest"),
}
# Per style: sentences that carry one attribute (keyed by category), an opening that introduces the
# person, sentences that repeat a value already written ("repeat") and PII-free filler.
_ENRON = {
    "greeting": ("Hi {OTHER_PERSON},", "Dear {OTHER_PERSON},", "Hello all,", "Team,"),
    "PHONE": ("You can reach me on my cell at {PHONE} if anything changes.",
              "My direct line is {PHONE}; call me before noon.",
              "Call me at {PHONE} once you have the numbers."),
    "ADDRESS": ("Please courier the signed copies to my home address, {ADDRESS}.",
                "I am working from home this week, at {ADDRESS}.",
                "Payroll still lists {ADDRESS} as my address, so please use that."),
    "DATE": ("HR needs my date of birth for the pension form: it is {DATE}.",
             "For the insurance renewal, my birth date is {DATE}.",
             "The badge office has my date of birth as {DATE}, which is correct."),
    "CONTACT": ("My manager, {CONTACT}, has to approve it first.",
                "I have copied {CONTACT}, who manages my desk.",
                "Please check with {CONTACT} before you sign, as my group lead."),
    "ORG": ("I have only been at {ORG} for a few months, so bear with me.",
            "As you know, {ORG} is reviewing all of these contracts.",
            "Legal at {ORG} wants to see the draft first."),
    "repeat": ("Reply to {EMAIL} rather than the list, please.",),
    "filler": ("I went through the numbers again last night.", "Let me know if the attached schedule works.",
               "We still need sign-off from the credit group before Friday.",
               "The counterparty has not confirmed the volumes yet.", "Sorry for the late reply.",
               "Can we move the call to Thursday afternoon?", "The pricing is fine but the terms need work.",
               "Please keep this one internal for now.", "The desk is short two people this month.",
               "I will forward the revised draft as soon as I have it.", "The gas desk closed early today."),
    "signoff": ("Thanks,", "Best regards,", "Regards,", "Cheers,"),
}
_ECHR = {
    "intro": ("The case originated in an application against {state} lodged with the Court by {mr} {PERSON} "
              "(\"the applicant\") on {EVENT_DATE}.",
              "The applicant, {mr} {PERSON}, is a national of {state}.",
              "The applicant, {mr} {PERSON}, was born on {DATE} and lives at {ADDRESS}.",
              "The applicant, {mr} {PERSON}, was born on {DATE}."),
    "lawyer": ("{He} was represented by {OTHER_PERSON}, a lawyer practising in {city}.",
               "The applicant was represented before the Court by {OTHER_PERSON}, a lawyer in {city}."),
    "CONTACT": ("{He} was represented by {CONTACT}, a lawyer practising in {city}.",
                "The applicant was represented before the Court by {CONTACT}, a lawyer in {city}.",
                "{His} lawyer, {CONTACT}, lodged the application."),
    "DATE": ("The applicant was born on {DATE}.", "{He} was born on {DATE} and has no criminal record."),
    "ADDRESS": ("{He} lives at {ADDRESS}.", "At the relevant time the applicant lived at {ADDRESS}."),
    "EMAIL": ("In {his} correspondence with the Registry the applicant used the address {EMAIL}.",
              "The applicant's observations were sent from {his} own e-mail account, {EMAIL}."),
    "PHONE": ("The police contacted the applicant by telephone on {PHONE}.",
              "The case file gives {PHONE} as the applicant's telephone number."),
    "ORG": ("At the material time the applicant was employed by {ORG}.",
            "On {EVENT_DATE} the applicant was dismissed by {his} employer, {ORG}."),
    "repeat": ("On {EVENT_DATE} {mr} {PERSON} lodged an appeal on points of law.",
               "The summons was served at {ADDRESS}."),
    "filler": ("The facts of the case, as submitted by the parties, may be summarised as follows.",
               "The Government were represented by their Agent.",
               "The domestic courts dismissed the claim as unfounded.",
               "The applicant complained that the proceedings had been unfair.",
               "The prosecutor's office refused to open a criminal investigation.",
               "The Court of Appeal upheld that judgment.", "No appeal lay against that decision."),
}
_YELP = {
    "intro": ("My name is {PERSON} and I have been a patient at {ORG} for six years.",
              "Review by {PERSON}.", "{PERSON} here, writing about my last visit."),
    "doctor": ("I saw Dr {OTHER_PERSON} on {EVENT_DATE} for a check-up.",
               "My appointment with Dr {OTHER_PERSON} on {EVENT_DATE} started on time."),
    "CONTACT": ("My own doctor there, Dr {CONTACT}, always takes time with me.",
                "I have seen Dr {CONTACT} there for years."),
    "DATE": ("The front desk asked for my date of birth ({DATE}) three separate times.",
             "They had my birthday wrong in the system; it is {DATE}, not what the form said."),
    "EMAIL": ("The appointment reminder went to {EMAIL} a day ahead, which I appreciated.",
              "They promised to send the lab results to {EMAIL} but never did."),
    "PHONE": ("Nobody called me back on {PHONE} after the biopsy.",
              "They text {PHONE} when the doctor is running late."),
    "ADDRESS": ("It is a ten minute drive from my place at {ADDRESS}.",
                "They mailed the bill to {ADDRESS} within a week."),
    "ORG": ("I have been going to {ORG} for years.", "Everyone at {ORG} was friendly and quick."),
    "repeat": ("Thanks for reading, {PERSON}.", "Questions? Write to me at {EMAIL}."),
    "filler": ("The waiting room was clean and quiet.", "Parking was a nightmare as usual.",
               "The nurse took the time to explain everything.", "I waited forty minutes past my slot.",
               "Billing was a mess and took three phone calls to sort out.",
               "The doctor listened and did not rush me.", "Would recommend to anyone new in town.",
               "Two stars, only because the staff were kind.", "The new receptionist is a big improvement."),
}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class _Person:
    subject: str | None
    male: bool
    values: dict[str, str]


def _format_date(day: date) -> str:
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def _value(fake: Faker, category: str, male: bool | None = None) -> str:
    if category == "PERSON":
        male = fake.boolean() if male is None else male
        return f"{fake.first_name_male() if male else fake.first_name_female()} {fake.last_name()}"
    if category == "EMAIL":
        # A random user name, not one built from the person's name: only memory can predict it.
        return f"{fake.user_name()}@{fake.free_email_domain() if fake.boolean() else fake.domain_name()}"
    if category == "PHONE":
        return fake.numerify("%##-%##-####")
    if category == "ADDRESS":
        return f"{fake.street_address()}, {fake.city()}"
    if category == "DATE":
        return _format_date(fake.date_between_dates(*_BIRTH_DATES))
    if category == "ORG":
        return fake.company()
    raise DataError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")


def _draw(fake: Faker, category: str, pool: int | None, taken: set[str], male: bool | None = None) -> str:
    for _ in range(10_000):
        value = _value(fake, category, male)
        if value not in taken and (pool is None or zlib.crc32(value.encode()) % len(_POOLS) == pool):
            taken.add(value)
            return value
    raise DataError(f"ran out of distinct {category} values; ask for fewer")


def _faker(*seed_parts) -> Faker:
    fake = Faker("en_US")
    fake.seed_instance("/".join(map(str, seed_parts)))
    return fake


def _people(fake: Faker, n: int, pool_name: str, taken: dict[str, set[str]],
            id_prefix: str | None) -> list[_Person]:
    people = []
    for i in range(n):
        male = fake.boolean()
        values = {c: _draw(fake, c, _POOLS[pool_name], taken[c], male) for c in CATEGORIES}
        values["CONTACT"] = _draw(fake, "PERSON", _POOLS[pool_name], taken["PERSON"])
        people.append(_Person(None if id_prefix is None else f"{id_prefix}{i:03d}", male, values))
    return people


class _Doc:
    """Text under construction with the spans written so far."""

    def __init__(self, person: _Person, fake: Faker, rng: random.Random, taken: dict[str, set[str]]):
        self.person, self.fake, self.rng, self.taken = person, fake, rng, taken
        self.parts: list[str] = []
        self.spans: list[dict] = []
        self.length = 0
        self.other: dict[str, str] = {}  # one bystander per document, so repeated mentions agree

    def write(self, template: str) -> None:
        for i, piece in enumerate(_PLACEHOLDER.split(template)):
            if i % 2 == 0:
                self._append(piece)
            elif piece in CATEGORIES or piece in _CATEGORY_OF:
                self._append(self.person.values[piece], _CATEGORY_OF.get(piece, piece), self.person.subject)
            elif piece.startswith("OTHER_"):
                category = piece.removeprefix("OTHER_")
                if category not in self.other:
                    self.other[category] = _draw(self.fake, category, _POOLS["oneoff"], self.taken[category])
                self._append(self.other[category], category, None)
            elif piece == "EVENT_DATE":
                self._append(_format_date(self.fake.date_between_dates(*_EVENT_DATES)), "DATE", None)
            elif piece in _PRONOUNS:
                self._append(_PRONOUNS[piece][0 if self.person.male else 1])
            else:
                self._append(self.rng.choice(_WORDS[piece]))

    def _append(self, text: str, category: str | None = None, subject: str | None = None) -> None:
        if category is not None:
            self.spans.append({"start": self.length, "end": self.length + len(text), "category": category,
                               "subject": subject})
        self.parts.append(text)
        self.length += len(text)


def _needs(template: str) -> set[str]:
    return set(_PLACEHOLDER.findall(template)) & set(ATTRIBUTES)


def _body(rng: random.Random, bank: dict, categories, n_filler: int) -> list[str]:
    picked = [rng.choice(bank[c]) for c in categories] + rng.sample(bank["filler"], n_filler)
    rng.shuffle(picked)
    return picked


def _repeat(rng: random.Random, bank: dict, written: set[str]) -> list[str]:
    """Now and then a sentence repeating a value already in the document: in-context copying."""
    options = [t for t in bank["repeat"] if _needs(t) <= written]
    return [rng.choice(options)] if options and rng.random() < 0.35 else []


def _enron(doc: _Doc, rng: random.Random, include: set[str]) -> None:
    sender = "From: {PERSON} <{EMAIL}>" if "EMAIL" in include else "From: {PERSON}"
    doc.write(sender + "\nTo: {OTHER_PERSON} <{OTHER_EMAIL}>\nSubject: {topic}\n\n"
              + rng.choice(_ENRON["greeting"]) + "\n")
    in_signature = {c for c in ("ORG", "PHONE") if c in include and rng.random() < 0.5}
    in_body = sorted(include - in_signature - {"EMAIL"})
    body = _body(rng, _ENRON, in_body, rng.randint(2, 3)) + _repeat(rng, _ENRON, include)
    signature = ["", "", rng.choice(_ENRON["signoff"]), "{PERSON}"]
    signature += ["{" + c + "}" for c in ("ORG", "PHONE")
                  if c in in_signature or (c in in_body and rng.random() < 0.3)]
    doc.write(" ".join(body) + "\n".join(signature))


def _court_case(doc: _Doc, rng: random.Random, include: set[str]) -> None:
    intro = rng.choice([t for t in _ECHR["intro"] if _needs(t) <= include])
    body = _body(rng, _ECHR, sorted(include - _needs(intro)), rng.randint(0, 2))
    # The subject's own lawyer (CONTACT) comes with the body; without one, a bystander represents them.
    lawyer = [] if "CONTACT" in include else [rng.choice(_ECHR["lawyer"])]
    sentences = [intro, *lawyer, *body, *_repeat(rng, _ECHR, include)]
    doc.write("THE FACTS\n\n" + " ".join(sentences))


def _review(doc: _Doc, rng: random.Random, include: set[str]) -> None:
    intro = rng.choice([t for t in _YELP["intro"] if _needs(t) <= include])
    body = _body(rng, _YELP, sorted(include - _needs(intro)), rng.randint(2, 3))
    body.insert(rng.randint(0, 1), rng.choice(_YELP["doctor"]))
    doc.write(" ".join([intro, *body, *_repeat(rng, _YELP, include)]))


_STYLES = {"enron": _enron, "echr": _court_case, "yelp_health": _review}


def _check_count(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DataError(f"{name} must be a non-negative integer, got {value!r}")


def generate(name: str, split: str = "train", seed: int = 0, n_subjects: int = 40,
             docs_per_subject: int = 8, n_oneoff_docs: int = 40) -> list[dict]:
    """Records of one split of a synthetic dataset; the same arguments always give the same records."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}': expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected 'train' or 'valid'")
    for count_name, count in (("n_subjects", n_subjects), ("docs_per_subject", docs_per_subject),
                              ("n_oneoff_docs", n_oneoff_docs)):
        _check_count(count_name, count)
    taken = {c: set() for c in CATEGORIES}
    id_prefix = "s" if split == "train" else "v"
    cast = _people(_faker(name, "cast", split, seed), n_subjects, split, taken, id_prefix)
    fake = _faker(name, "oneoff", split, seed)
    rng = random.Random(f"{name}/{split}/{seed}/templates")

    plans = []
    for person in cast:
        # Each document drops at most one attribute, in rotation, so every attribute recurs in most
        # of the subject's documents while documents still differ in what they say.
        drop_order = rng.sample(ATTRIBUTES, len(ATTRIBUTES))
        for j in range(docs_per_subject):
            dropped = set() if rng.random() < 0.25 else {drop_order[j % len(drop_order)]}
            plans.append((person, set(ATTRIBUTES) - dropped))
    for stranger in _people(fake, n_oneoff_docs, "oneoff", taken, None):
        plans.append((stranger, set(rng.sample(ATTRIBUTES, rng.randint(2, len(ATTRIBUTES))))))
    rng.shuffle(plans)

    records = []
    for person, include in plans:
        doc = _Doc(person, fake, rng, taken)
        _STYLES[name](doc, rng, include)
        records.append({"text": "".join(doc.parts), "spans": doc.spans, "style": name})
    return records


def sample_values(category: str, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct values of ``category`` in the generators' format: candidates for exposure ranking."""
    if category not in CATEGORIES:
        raise DataError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
    _check_count("n", n)
    fake, taken = _faker("candidates", category, seed), set()
    return [_draw(fake, category, None, taken) for _ in range(n)]
