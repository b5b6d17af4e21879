import numpy as np
import pytest
import torch
import transformers

from privloc.method.masking import COMPONENTS, NeuronMasker
from privloc.method.metrics import leakage
from privloc.method.model import lm_loss, trim
from privloc.method.tokenizer import encode_records, train_tokenizer
from privloc.study.injection import choose_neurons, fresh_facts, inject, random_recall, recall_at_k

SEED = 1  # a corpus whose tokens cover every token of the new facts (checked below)
MAX_LEN = 160


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tensors this small gain nothing from a second thread, and lose a lot when the cores are busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup():
    from privloc.corpora.synthetic import generate

    train = generate("echr", "train", seed=SEED, n_subjects=4, docs_per_subject=3, n_oneoff_docs=4)
    tokenizer = train_tokenizer([r["text"] for r in train], vocab_size=400)
    enc_keep = encode_records(tokenizer, train, MAX_LEN)
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer), n_positions=MAX_LEN, n_embd=32, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    victim = transformers.GPT2LMHeadModel(config)
    # A brief training, so that the victim writes the corpus's language and its token embeddings are learnt.
    optimizer = torch.optim.Adam(victim.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(80):
        rows = torch.randperm(len(enc_keep), generator=generator)[:16]
        loss = lm_loss(victim, *trim(enc_keep.input_ids[rows], enc_keep.attention_mask[rows]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    victim.eval()
    facts = fresh_facts("echr", n_subjects=2, docs_per_subject=3, seed=SEED, avoid=train)
    return {"train": train, "tokenizer": tokenizer, "enc_keep": enc_keep, "victim": victim, "facts": facts}


@pytest.fixture(scope="module")
def injected(setup):
    victim = setup["victim"]
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    ids = choose_neurons(NeuronMasker(victim), share=0.2, seed=0)
    result = inject(victim, setup["tokenizer"], setup["enc_keep"], setup["facts"], ids, max_steps=150,
                    eval_every=10, max_len=MAX_LEN, progress=False)
    return result, before


def test_fresh_facts_are_a_new_cast_without_one_off_documents(setup):
    facts, train = setup["facts"], setup["train"]
    assert len(facts) == 6
    subjects = {s["subject"] for r in facts for s in r["spans"]} - {None}
    assert subjects == {"n000", "n001"}
    assert all(any(s["subject"] in subjects for s in r["spans"]) for r in facts)
    train_values = {r["text"][s["start"]: s["end"]] for r in train for s in r["spans"]}
    fact_values = {r["text"][s["start"]: s["end"]] for r in facts for s in r["spans"] if s["subject"]}
    assert not fact_values & train_values
    assert fresh_facts("echr", 2, 3, seed=SEED, avoid=train) == facts


def test_every_fact_token_occurs_in_the_victims_corpus(setup, injected):
    # The embeddings stay frozen: a token the victim never saw could not be written by a few neurons.
    tokenizer, enc = setup["tokenizer"], injected[0].enc_facts
    seen = {t for r in setup["train"] for t in tokenizer(r["text"])["input_ids"]}
    assert set(enc.input_ids[:, 1:][enc.target_mask()].tolist()) <= seen


def test_choose_neurons_is_proportional_spread_and_seeded(setup):
    masker = NeuronMasker(setup["victim"])
    ids = choose_neurons(masker, share=0.1, seed=3)
    assert len(ids) == round(0.1 * masker.n_neurons)
    assert np.all(np.diff(ids) > 0)
    counts = masker.counts(ids)
    for layer in range(masker.n_layer):
        assert counts.loc[layer, "total"] in (len(ids) // 2, len(ids) // 2 + 1)
        for c, size in masker.component_sizes.items():
            assert abs(counts.loc[layer, c] - 0.1 * size) < 2
    np.testing.assert_array_equal(ids, choose_neurons(masker, share=0.1, seed=3))
    assert not np.array_equal(ids, choose_neurons(masker, share=0.1, seed=4))
    tiny = choose_neurons(masker, share=0.005, seed=0)  # 3 ids on 576 neurons
    assert len(tiny) == 3 and set(masker.neuron_table()["layer"][tiny]) == {0, 1}
    with pytest.raises(ValueError):
        choose_neurons(masker, share=0.0, seed=0)


def _expected_masks(model, ids) -> dict[str, torch.Tensor]:
    """Written out independently of privloc's own mapping: neuron -> Conv1D weight column and bias entry."""
    masker = NeuronMasker(model)
    table, n = masker.neuron_table(), masker.n_embd
    where = {"attn.q": ("attn.c_attn", 0), "attn.k": ("attn.c_attn", n), "attn.v": ("attn.c_attn", 2 * n),
             "attn.o": ("attn.c_proj", 0), "mlp.in": ("mlp.c_fc", 0), "mlp.out": ("mlp.c_proj", 0)}
    params = dict(model.named_parameters())
    masks = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in params.items()}
    for i in ids:
        module, offset = where[COMPONENTS[table["component"][i]]]
        prefix = f"transformer.h.{table['layer'][i]}.{module}"
        masks[f"{prefix}.weight"][:, offset + table["unit"][i]] = True
        masks[f"{prefix}.bias"][offset + table["unit"][i]] = True
    return masks


def test_injection_changes_only_the_chosen_columns(setup, injected):
    result, before = injected
    victim, edited = setup["victim"], result.model
    for name, value in victim.state_dict().items():
        assert torch.equal(value, before[name]), f"the original model changed: {name}"
    masks = _expected_masks(victim, result.neuron_ids)
    new = dict(edited.named_parameters())
    for name, old in victim.named_parameters():
        outside = ~masks[name]
        assert torch.equal(new[name][outside], old[outside]), f"{name} moved outside the chosen columns"
        # Per output column (the last axis of Conv1D weights and of biases): moved exactly where chosen.
        chosen = masks[name].reshape(-1, old.shape[-1]).any(0)
        moved = (new[name] != old).reshape(-1, old.shape[-1]).any(0)
        assert torch.equal(moved, chosen), name
    assert all(p.requires_grad for p in edited.parameters())


def test_injection_reaches_its_target(setup, injected):
    result, _ = injected
    assert result.em_injected >= 0.9
    assert result.steps < 150 and result.history[-1]["step"] == result.steps
    assert result.history[0] == {"step": 0, "loss": pytest.approx(np.nan, nan_ok=True), "em_injected": 0.0}
    assert leakage(setup["victim"], result.enc_facts)["em_assoc"] < 0.5
    assert result.seconds > 0 and not result.model.training


def test_recall_on_hand_built_sets():
    assert recall_at_k([1, 2, 3, 9], [2, 3, 4, 5]) == 0.5
    assert recall_at_k([2, 2, 3], [3, 3]) == 1.0
    assert recall_at_k([], [1]) == 0.0
    with pytest.raises(ValueError):
        recall_at_k([1], [])
    assert random_recall(10, 100) == 0.1
    with pytest.raises(ValueError):
        random_recall(5, 4)
