"""Plain config presets: one `Profile` per scale (smoke for tests, default for a laptop CPU, paper for a GPU)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from privloc.method.families import COMPONENTS


@dataclass(frozen=True)
class DataConfig:
    n_subjects: int = 20  # the recurring cast: the memorisable part
    # How often each subject's PII recurs. Many distinct documents per subject (rather than many epochs
    # over few) let the model memorise the PII without memorising whole documents, which would hurt
    # validation perplexity.
    docs_per_subject: int = 20
    n_oneoff_docs: int = 40
    n_valid_subjects: int = 24  # validation cast, disjoint from training
    valid_docs_per_subject: int = 2
    vocab_size: int = 2048
    max_len: int = 256
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """The victim: a model trained from scratch of this shape and family, or a pretrained checkpoint."""

    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 256
    # GPT-2's tanh-approximated GELU as one fused kernel: the same function as GPT-2's "gelu_new" (within 3e-7)
    # without its chain of elementwise ops, which made a CPU training step ~16% slower. Pretrained models
    # keep the activation of their own config.
    activation: str = "gelu_pytorch_tanh"
    pretrained: str | None = None  # a hub name or local folder (paper profile); None trains from scratch
    # Keep only the first this many blocks of the pretrained model (None: all): a cheap slice of a real model for
    # runs whose numbers mean nothing (the smoke profile of notebook 10).
    pretrained_layers: int | None = None
    # The family of a from-scratch victim (privloc.method.families): gpt2, gpt_neo, gpt_neox or llama. A pretrained
    # checkpoint's family comes from its own config.
    architecture: str = "gpt2"
    # For pretrained checkpoints: "bfloat16"/"float16"/"float32" (None: as stored), and accelerate's device map
    # ("auto" spreads a model that does not fit one device over the GPUs, the CPU and disk).
    dtype: str | None = None
    device_map: str | None = None

    def cache_key(self) -> dict:
        """The fields that identify a victim; those added with the families are left out at their defaults,
        so that the GPT-2 victims cached before keep their keys."""
        later = {"architecture": "gpt2", "dtype": None, "device_map": None, "pretrained_layers": None}
        return {k: v for k, v in asdict(self).items() if k not in later or v != later[k]}


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 400
    batch_size: int = 16
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.0
    eval_every: int = 100  # each evaluation passes over the training corpus (~2 s on the default model)
    # CPU threads of one victim's training. With one, the weights do not depend on the machine's core count
    # (a BLAS sums in a different order with more threads), and pipeline.prepare_victims trains several
    # victims side by side: two one-thread trainings on two cores take ~10% less time than one after the
    # other with two threads each. None leaves torch's setting alone.
    threads: int | None = 1
    seed: int = 0
    # Mixed precision of the training steps: "bfloat16" runs each forward and backward under torch.autocast
    # (the weights, gradients and optimiser stay fp32; evaluations run in fp32). On a CPU with bf16 matrix
    # units a step of the 135M-parameter pretrained victim takes ~40% less time. None: plain fp32.
    autocast: str | None = None

    def cache_key(self) -> dict:
        """The fields that identify a training; autocast is left out at its default (None), so that the
        victims cached before it existed keep their keys."""
        later = {"autocast": None}
        return {k: v for k, v in asdict(self).items() if k not in later or v != later[k]}


@dataclass(frozen=True)
class LocalizeConfig:
    steps: int = 150
    category_steps: int = 100  # per-category localisations (notebook 05): five of them share one budget
    # 8 documents per step took half the time of 16 for a similar mask (exact match left after switching it
    # off: enron 0.35 vs 0.41, echr 0.18 vs 0.12, one seed each).
    batch_size: int = 8
    # Gates start at log α = 1 (P(closed) ≈ 0.07, so the sampled masks explore from the first step) and move
    # with lr 0.3. On the default victims (two seeds each) exact match left after switching the mask off:
    # enron 0.45 → 0.25, echr 0.13 → 0.09, yelp_health 0.36 → 0.17 against log α = 3 with lr 0.2; lr 0.3 alone
    # gave enron 0.37, log α = 1 alone 0.29, log α = 0 or 0.5 no better, 200 steps no better.
    lr: float = 0.3
    init_log_alpha: float = 1.0
    lambda_keep: float = 5.0
    lambda_0: float = 5.0  # weight of R, the expected share of closed gates
    penalty: str = "neuron"  # R weighs every neuron alike ("neuron") or every layer-component cell ("cell")
    # If set, the expected closed share is held at this value and the privacy neurons are the top
    # target_share·N by P(closed); if None, a fixed λ_0 and the gates whose deterministic value is 0.
    target_share: float | None = 0.05
    # How the target share is held: "projection" (after each step every log α is shifted by the one constant
    # that puts the expected closed share exactly at the target; localize.share_shift) or "lagrangian"
    # (multipliers by gradient ascent, CoFiPruning). The Lagrangian missed targets above 3% by up to a factor
    # of two (echr, 150 steps: 276 expected closed at a 4% target of 184), so the top-k selection then kept an
    # arbitrary part of what training closed; the projection holds every target of 1-8% (tests/test_localize.py).
    share_control: str = "projection"
    # The PII term (localize.pii_loss) and its targets: every token of each memorised span, or only the first
    # (the token recalled from the subject, the paper's choice). Chosen in notebook 09 by the attack suite at a
    # 5% budget (one seed, 100 spans per corpus): every-token margin had the lowest mean leak_any of six
    # variants (0.97, against 0.99 for every-token neg-CE, the previous default, and 1.00 for the paper's
    # first-token unlikelihood), and the lowest beam and sampling leakage, within +2.5% perplexity; notebook 09
    # reruns the comparison and says whether it still holds.
    loss: str = "margin"  # or "unlikelihood", "neg_ce", "entropy"
    margin_rank: int = 10  # the margin loss pushes each target below this many other tokens
    kinds: tuple[str, ...] = ("assoc",)  # PII targets to suppress
    first_token: bool = False
    keep_kinds: tuple[str, ...] = ()  # PII kinds whose targets join the keep term
    keep_other_categories: bool = True  # with a category filter, keep the other categories' targets
    components: tuple[str, ...] = COMPONENTS
    # Share of each data subject's documents kept out of the localisation (privloc.study.holdout): the attacks then
    # also run on those held-out contexts. 0 learns on every document.
    holdout: float = 0.0
    # Documents per step of a second keep corpus, when localize() is given one (the injection benchmark);
    # 0 ignores it. 4 recalled as much as 8 at half the cost.
    keep_batch_size: int = 4
    # Whether the PII batch's own keep targets (its non-PII text) join the keep term. The injection benchmark
    # turns this off: the planted neurons learned its facts documents whole, text and PII alike, so keeping
    # their text protects the very neurons to be found (recall 0.33-0.39 with it, 0.50-0.60 without, on three
    # injections); the victim's own corpus (the second keep corpus) is then the behaviour to keep.
    keep_batch: bool = True
    seed: int = 0
    # Mixed precision of the gates' forward passes ("bfloat16": torch.autocast; the gates, their gradients and
    # the losses stay fp32). None: fp32, as every from-scratch victim's mask was learned.
    autocast: str | None = None


@dataclass(frozen=True)
class AttackConfig:
    """The attack suite (privloc.method.attacks): the attacker's budget and how many spans each attack scores."""

    budget: int = 10  # B: beams, samples, or candidates the attacker may check
    sweep: tuple[int, ...] = (1, 2, 5, 10, 20)  # budgets of Fig. 7 / Table 4
    top_k: int = 40  # the sampler keeps the top k tokens (Lukas et al.)
    temperature: float = 1.0
    n_candidates: int = 100  # K: same-category, same-length alternatives ranked against the truth
    pool_size: int = 3000  # values generated per category, from which each span's K are drawn
    # Spans scored by the teacher-forced attacks (greedy, sample, logit lens), a seeded sample of the eligible assoc
    # spans (None: every one, ~2,100 per default corpus: 2.5 s of a state's ~7 s suite run, against 1.3 s). The first
    # `search_spans` of the sample are the same whatever its size, so beam, candidates and `any` do not change.
    pass_spans: int | None = 600
    search_spans: int = 100  # the first of those, also scored by beam search and candidates (and `any`)
    calibration_spans: int = 200  # spans ranked per case of Table 5 (candidates only)
    seed: int = 0
    # Precision of every forward pass of the suite (privloc.method.attacks): None is fp32, bit for bit as the figures of
    # the from-scratch victims were made; "bfloat16" (the pretrained victim) runs them under torch.autocast.
    autocast: str | None = None


@dataclass(frozen=True)
class EditConfig:
    """Editing weights to forget the memorised PII (privloc.method.removal): the units' weights only, or all."""

    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    keep_weight: float = 5.0  # the non-PII cross-entropy's weight: the utility the edit must keep
    # On every token of each memorised span (localize.pii_loss); "overwrite": the plain cross-entropy of text
    # whose PII was substituted with fresh values (the removal study gives such text).
    loss: str = "unlikelihood"
    seed: int = 0
    autocast: str | None = None  # "bfloat16": forward and backward in bf16, the weights and Adam's state fp32


@dataclass(frozen=True)
class RankEditConfig:
    """Rank editing in vocabulary space (privloc.method.rank_edit, after REVS): which tokens, units and how far."""

    tokens_per_span: int = 2  # the rarest tokens of each memorised span are demoted
    layers: int = 2  # per target token: the layers whose residual stream ranks it highest
    candidates: int = 50  # per layer: the units most active at the target's position
    units_per_target: int = 5  # of those, the ones whose projection ranks the token highest are edited
    demote_rank: int = 500  # an edited unit's projection ranks the token at least this low (capped by the vocabulary)
    rounds: int = 8  # pseudo-inverse steps per unit at most
    batch_size: int = 8  # documents read per forward pass


@dataclass(frozen=True)
class RemovalConfig:
    """Notebook 11's removals: how strong each one is taken, for the trade-off curves."""

    shares: tuple[float, ...] = (0.02, 0.05, 0.1)  # deactivation: the top of our ranking, as shares of the units
    # An edit is judged after each of these step counts (one run; the last is the table's headline). On the echr
    # victim, 100 steps of 8 documents on our units took greedy extraction to 0.00-0.01 but left candidate
    # ranking at 0.95; on every weight, to 0.66 (+2.2% perplexity). Longer runs are the next thing to measure.
    edit_steps: tuple[int, ...] = (25, 50, 100)
    edit: EditConfig = field(default_factory=EditConfig)
    # Which re-training removals run (privloc.study.removal_study.EDITS): "edit" (unlikelihood on our units and
    # random ones), "edit-margin" (the margin loss instead: the truth pushed below 10 other tokens; not run by
    # default), "overwrite" (substituted values on the same units), "rank-edit" (vocabulary-space rank editing
    # on our units, random ones and its own choice), "unlearn" (unlikelihood on every weight), "npo" (NPO on
    # every weight).
    methods: tuple[str, ...] = ("edit", "overwrite", "rank-edit", "unlearn", "npo")
    unlearn_lr: float | None = None  # Adam's rate when every weight is trained (None: the edit's)
    # The every-weight removals ("unlearn", "npo") judged at these step counts (None: edit_steps): on the echr
    # victim unlearning had taken leak_any to 0.66 / 0.52 at 100 steps and was still falling.
    unlearn_steps: tuple[int, ...] | None = (25, 50, 100, 200, 400)
    npo_beta: float = 0.1  # NPO's inverse temperature (Zhang et al. 2024 use 0.1)
    rank_edit: RankEditConfig = field(default_factory=RankEditConfig)
    # The rank edit is judged at each of these aims (RankEditConfig.demote_rank), one edit each. On the echr
    # victim, with every MLP unit to choose from, rank 100 took the PII tokens' teacher-forced accuracy from 1.00
    # to 0.96 at +1% perplexity and rank 500 to 0.53 at +40%; among our units or random ones it stayed at 1.00.
    rank_demotions: tuple[int, ...] = (100, 500)
    overwrite_copies: int = 8  # substituted copies of each document, each with its own fresh values


@dataclass(frozen=True)
class StudyConfig:
    """Sizes of the comparisons of notebooks 06 (mitigation) and 07 (injection benchmark)."""

    n_random_seeds: int = 3
    # Localisations and attacked model states the notebooks ask for at once run as one-thread processes side by
    # side (privloc.study.workers): about 8% faster than one two-thread process on the small victims. Off for the
    # 135M victim, whose matrices two threads share well and whose copies would double the memory.
    side_by_side: bool = True
    # Headline numbers (Table 1, Fig. 2, notebook 03's check) are means over this many localisation seeds.
    n_localization_seeds: int = 3
    ig_steps: int = 16  # Riemann steps of integrated gradients
    ig_rows: int = 64  # documents integrated gradients attributes over
    # assoc occurrences ranked for exposure / MRR, ~0.07 s each per row of Table 1. With 16, 14 of 16 rows of
    # the default Table 1 sat at the largest exposure the candidates allow, so 8 keep the comparison.
    exposure_spans: int = 8
    n_candidates: int = 128  # same-format alternatives per category
    n_injections: int = 3
    # 0.5% of the units (23 on the default model) could not hold even one new person's facts within the
    # step budget (exact match 0.39 after 200 steps); 2-3% stalled at 0.81 on two of three injections, the
    # new person's address never learned; 4% reached 0.92-0.96 in 70-140 steps. See notebook 07.
    injection_share: float = 0.04  # |S| as a fraction of the gated units
    injection_subjects: int = 1
    injection_docs: int = 6
    injection_max_steps: int = 200
    # Adam on the planted rows only, plus the LM loss on the original corpus with this weight. lr 3e-2 with
    # the corpus loss weighted 0.3 took the victim's own assoc exact match from 0.99 to about 0.62; with
    # weight 1, lr 1e-2-2e-2 keeps 0.80-0.90 of it.
    injection_lr: float = 1.5e-2
    injection_keep_weight: float = 1.0
    # With the victim's corpus as the keep term (LocalizeConfig.keep_batch off, keep_batch_size 4) the gates
    # need their steps: recall 0.04 after 120, 0.50 after 200 and 0.48 after 250 on one injection.
    injection_localize_steps: int = 200
    # Gates here start fully open and move slower than in notebook 03: on three injections recall@|S| was
    # 0.65 / 0.49 / 0.49 with log α = 3 and lr 0.2, and 0.51 / 0.21 / 0.41 with notebook 03's log α = 1 and
    # lr 0.3 (log α = 1 with lr 0.2: 0.58 / 0.32 / 0.40); why this task prefers the slower start is not known.
    injection_localize_lr: float = 0.2
    injection_localize_init_log_alpha: float = 3.0


@dataclass(frozen=True)
class Profile:
    """Everything a run depends on; resolved once at the edge (notebook_profile, cli.resolve_profile) and
    passed down as this object."""

    name: str
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    removal: RemovalConfig = field(default_factory=RemovalConfig)
    datasets: tuple[str, ...] = ("enron", "echr", "yelp_health")
    device: str = "cpu"

    def to_dict(self) -> dict:
        return asdict(self)

    def with_seed(self, seed: int) -> Profile:
        """The same profile with every seed (data, training, localisation) set to `seed`."""
        return replace(self, data=replace(self.data, seed=seed), train=replace(self.train, seed=seed),
                       localize=replace(self.localize, seed=seed))


# SmolLM2-135M (privloc.method.pretrained, installed by `make setup`) fine-tuned on the default corpora, offline on a
# CPU. The corpora are the default profile's (440 training documents each), so an epoch is ceil(440 / 8) = 55
# steps. Sizes are chosen so that `make pretrained` fits an hour on two cores (figures/bench.md has each stage's
# time); every count below is what the notebook's numbers rest on.
PRETRAINED_BATCH = 8
PRETRAINED_EPOCH = -(-(DataConfig().n_subjects * DataConfig().docs_per_subject + DataConfig().n_oneoff_docs)
                     // PRETRAINED_BATCH)
# On echr, a 4-epoch run (lr 3e-4, warm-up 20, cosine) reached assoc greedy exact match 0.37 / 0.97 / 1.00 / 1.00
# after each epoch, the validation cast 0.00 throughout: three epochs memorise, at three quarters of the cost.
PRETRAINED_EPOCHS = 3
PRETRAINED = Profile(
    name="pretrained",
    model=ModelConfig(pretrained="smollm2-135m"),
    # bf16 autocast for the steps and the evaluation after each epoch (a training step: ~6.5 s, an evaluation
    # of the training and validation casts ~1 min, against ~2 min in fp32).
    train=TrainConfig(steps=PRETRAINED_EPOCHS * PRETRAINED_EPOCH, batch_size=PRETRAINED_BATCH, lr=3e-4, warmup=20,
                      eval_every=PRETRAINED_EPOCH, threads=2, autocast="bfloat16"),
    # A step of the gates takes ~3.5 s on this model (bf16 forwards): 60 steps of 8 documents is one pass over
    # the PII-bearing documents, against 150 steps of the small victims.
    localize=LocalizeConfig(steps=60, autocast="bfloat16"),
    # One localisation seed (the small victims have three): a second costs a mask and six attacked states more.
    # Integrated gradients over 16 documents with 8 Riemann steps (64 and 16 on the small victims).
    study=StudyConfig(n_localization_seeds=1, ig_steps=8, ig_rows=16, side_by_side=False),
    # The suite in bf16 on 200 assoc spans (the teacher-forced attacks), the first 80 of them also attacked by beam
    # search and candidate ranking: ~80 s per model state. With 400 / 100 spans it took 118 s (pass 47 s, beam 36 s,
    # candidates 34 s); all ~2,100 spans, as the small victims' suite runs, would take minutes per state.
    attack=AttackConfig(autocast="bfloat16", pass_spans=200, search_spans=80),
    # One strength per unit edit and no overwrite: each attacked state costs ~5 minutes here, an edit step ~6 s
    # (NPO ~7 s). On the learned echr documents, 30 steps on our 5% of units took the PII tokens' teacher-forced
    # accuracy from 1.00 to 0.99 at lr 1e-4 and to 0.10 at 1e-3; on every weight, 1e-4 took it to 0.03 (non-PII
    # loss 0.238 → 0.241). Unlearning every weight is taken to 90 steps: at 30 it left leak_any at 0.28 / 0.20.
    removal=RemovalConfig(shares=(0.05,), edit_steps=(30,), methods=("edit", "rank-edit", "unlearn", "npo"),
                          unlearn_lr=1e-4, unlearn_steps=(30, 90), rank_demotions=(500,),
                          edit=EditConfig(batch_size=8, lr=1e-3, autocast="bfloat16")),
)

PROFILES: dict[str, Profile] = {
    # Seconds per notebook: every code path runs, the numbers mean nothing.
    "smoke": Profile(
        name="smoke",
        data=DataConfig(n_subjects=6, docs_per_subject=2, n_oneoff_docs=3, n_valid_subjects=3,
                        valid_docs_per_subject=1, vocab_size=400, max_len=160),
        model=ModelConfig(n_layer=2, n_embd=32, n_head=2, n_positions=160),
        train=TrainConfig(steps=6, batch_size=4, eval_every=3, warmup=2),
        localize=LocalizeConfig(steps=4, category_steps=3, batch_size=4),
        study=StudyConfig(n_random_seeds=2, n_localization_seeds=2, ig_steps=2, ig_rows=4, exposure_spans=4, n_candidates=10, n_injections=1,
                          injection_share=0.05, injection_subjects=1, injection_docs=2, injection_max_steps=3,
                          injection_localize_steps=3),
        attack=AttackConfig(sweep=(1, 10), n_candidates=10, pool_size=60, pass_spans=12, search_spans=6),
        removal=RemovalConfig(shares=(0.05, 0.1), edit_steps=(2, 4), edit=EditConfig(batch_size=2),
                              methods=("edit", "overwrite", "rank-edit", "unlearn", "npo"), unlearn_steps=None,
                              rank_demotions=(20,)),
    ),
    "default": Profile(name="default"),
    "pretrained": PRETRAINED,
    # Pretrained GPT-2 fine-tuned on each corpus: needs the hub (or a local copy) and a GPU.
    "paper": Profile(
        name="paper",
        data=DataConfig(n_subjects=200, docs_per_subject=10, n_oneoff_docs=400, n_valid_subjects=100,
                        max_len=512),
        model=ModelConfig(n_layer=12, n_embd=768, n_head=12, n_positions=1024, pretrained="gpt2"),
        train=TrainConfig(steps=3000, batch_size=16, lr=5e-5, warmup=100, eval_every=250),
        localize=LocalizeConfig(steps=600, batch_size=16),
        device="auto",
    ),
}


# Notebook 10 in seconds: the real base model's first two blocks, two fine-tuning steps, a handful of spans (the
# numbers mean nothing).
PROFILES["pretrained-smoke"] = replace(
    PRETRAINED, name="pretrained-smoke", data=PROFILES["smoke"].data,
    model=replace(PRETRAINED.model, pretrained_layers=2),
    train=replace(PRETRAINED.train, steps=2, eval_every=1, warmup=1, batch_size=4),
    localize=replace(PROFILES["smoke"].localize, steps=2, autocast="bfloat16"),
    study=replace(PROFILES["smoke"].study, n_localization_seeds=1, n_random_seeds=1),
    attack=replace(PROFILES["smoke"].attack, pass_spans=6, search_spans=3, calibration_spans=6, autocast="bfloat16"),
    removal=replace(PRETRAINED.removal, edit_steps=(2,), unlearn_steps=None,
                    edit=replace(PRETRAINED.removal.edit, batch_size=2)))


def pretrained_profile(name: str) -> str:
    """The profile of the pretrained study (notebook 10) that stands for `name`: the smoke profile's is a
    seconds-long run of every step, any other name's the full `pretrained` profile."""
    return "pretrained-smoke" if name == "smoke" else "pretrained"


def get_profile(name: str | Profile, **overrides) -> Profile:
    """The named preset; `overrides` replace whole sub-configs, e.g. train=TrainConfig(steps=10)."""
    if isinstance(name, Profile):
        profile = name
    elif name in PROFILES:
        profile = PROFILES[name]
    else:
        raise ValueError(f"unknown profile {name!r}: expected one of {', '.join(PROFILES)}")
    return replace(profile, **overrides) if overrides else profile


def notebook_profile(name: str | Profile, seed: int = 0, **study) -> Profile:
    """The profile a notebook runs, resolved once from its parameters cell: `name`'s profile with every seed set
    to `seed` and each StudyConfig field passed here replaced, unless its value is None (None keeps the
    profile's value; 0 and False are values)."""
    profile = get_profile(name).with_seed(seed)
    unknown = sorted(set(study) - {f.name for f in fields(StudyConfig)})
    if unknown:
        raise ValueError(f"not a StudyConfig field: {', '.join(unknown)}")
    chosen = {k: v for k, v in study.items() if v is not None}
    return replace(profile, study=replace(profile.study, **chosen)) if chosen else profile
