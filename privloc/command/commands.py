"""The bodies of the `privloc` subcommands: check every input, compute with the notebooks' functions, write.

Each command runs its checks (inputs.py) and claims its output folder (outputs.py) before any work, and writes
the output into a staging folder that takes the output's place only when complete, so a refused, failed or
interrupted command leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from pathlib import Path

from privloc import __version__
from privloc.command import inputs, outputs
from privloc.config import AttackConfig, LocalizeConfig, Profile, get_profile
from privloc.corpora.data import CATEGORIES, DATASETS

# Documents longer than this are cut when the model allows longer ones: attention memory grows with it.
MAX_LEN = 1024


def _max_len(model, source: str, profile: Profile) -> int:
    # A built-in corpus is encoded as its victim was trained; a user's data up to the model's context.
    limit = profile.data.max_len if source in DATASETS else MAX_LEN
    # Every known family's config answers max_position_embeddings (GPT-2's maps it onto n_positions).
    return min(model.config.max_position_embeddings, limit)


def _start(args) -> tuple[str, object]:
    """The checked model folder and device; the model itself is loaded once the other inputs are checked too."""
    return inputs.model_folder(args.model, args.allow_download), inputs.device(args.device)


def _attack_config(args) -> AttackConfig:
    cfg = replace(args.profile.attack, seed=args.seed)
    if getattr(args, "budget", None):
        cfg = replace(cfg, budget=args.budget)
    if getattr(args, "spans", None):
        cfg = replace(cfg, search_spans=args.spans)
    return cfg


def _weightsdone(out: Path, files: list[str]) -> None:
    print(f"wrote {out}: {', '.join(files)}")


def audit(args) -> int:
    from privloc.command import audit as auditing
    from privloc.command.redact import pii_strings, redact_examples

    path, dev = _start(args)
    source = inputs.data_source(args.data)
    claim = outputs.claim(args.out or f"audit-{Path(path).name}", args.overwrite, "audit",
                          {"model": path, "data": source})
    train, valid = inputs.checked_records(source, args.profile)
    with claim as tmp:
        _say(claim)
        model, tokenizer = inputs.load_model(path, dev)
        data = inputs.encode(source, train, valid, tokenizer, _max_len(model, source, args.profile))
        report, _ = auditing.run(model, tokenizer, data, _attack_config(args))
        if not args.show_pii:
            report["examples"] = redact_examples(report["examples"], pii_strings([*train, *valid]))
        report = {"model": path, "model_fingerprint": inputs.fingerprint(model), "privloc_version": __version__,
                  "pii_redacted": not args.show_pii, **report}
        auditing.write(report, tmp)
    print(auditing.summary_table(report))
    _weightsdone(claim.out, ["report.md", "report.json", "attacks.png", "categories.png", "budget.png"])
    return 0


def _say(claim) -> None:
    for note in claim.notes:
        print(f"note: {note}")


def _categories(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(c.strip().upper() for c in text.split(",") if c.strip())
    if not names:
        raise inputs.InputError(f"--categories {text!r} names no category: give some of {', '.join(CATEGORIES)}, "
                             "or leave it out for all")
    unknown = [c for c in names if c not in CATEGORIES]
    if unknown:
        raise inputs.InputError(f"unknown PII categories {', '.join(unknown)}: expected some of {', '.join(CATEGORIES)}")
    return names


def localize(args) -> int:
    from privloc.artifacts import atomic_write_text, write_json
    from privloc.method.localize import localize as algorithm_1
    from privloc.study.analysis import layer_component_counts

    path, dev = _start(args)
    source = inputs.data_source(args.data)
    categories = _categories(args.categories)
    claim = outputs.claim(args.out or f"mask-{Path(path).name}", args.overwrite, "localize",
                          {"model": path, "data": source})
    cfg = replace(args.profile.localize, seed=args.seed)
    if args.steps:
        cfg = replace(cfg, steps=args.steps)
    if args.share is not None:
        cfg = replace(cfg, target_share=args.share)
    train, valid = inputs.checked_records(source, args.profile)
    with claim as tmp:
        _say(claim)
        model, tokenizer = inputs.load_model(path, dev)
        n_gated = _n_gated(model)
        if cfg.target_share is not None and round(cfg.target_share * n_gated) < 1:
            raise inputs.InputError(f"--share {cfg.target_share:g} selects no neuron of this model's {n_gated} gated "
                                 f"units: give at least {1 / n_gated:.2g}")
        data = inputs.encode(source, train, valid, tokenizer, _max_len(model, source, args.profile))
        try:
            loc = algorithm_1(model, data.enc_train, cfg, categories, progress=True)
        except ValueError as error:  # e.g. no span of the requested categories
            raise inputs.InputError(str(error)) from None
        ids = loc.closed_ids()
        if len(ids) == 0:
            raise inputs.InputError("the localisation closed no gate: no privacy neuron to write (try more --steps "
                                 "or a --share)")
        counts = layer_component_counts(loc.masker, ids)
        meta = {"history": loc.history, "seconds": loc.seconds, "categories": categories, "config": asdict(cfg),
                "model": path, "model_fingerprint": inputs.fingerprint(model), "data": source, "profile": args.profile.name,
                "privloc_version": __version__}
        summary = {"model": path, "data": source, "n_neurons": len(ids), "n_gated": loc.masker.n_neurons,
                   "share": len(ids) / loc.masker.n_neurons, "seconds": loc.seconds, "steps": cfg.steps,
                   "categories": categories,
                   "per_layer": {int(k): int(v) for k, v in counts.groupby("layer")["count"].sum().items()},
                   "per_component": {k: int(v) for k, v in counts.groupby("component", sort=False)["count"].sum().items()},
                   "cells": counts.to_dict("records")}
        grid = loc.masker.counts(ids)
        loc.masker.save(tmp / "mask", meta=meta)
        write_json(tmp / "summary.json", summary)
        atomic_write_text(tmp / "summary.md", "\n".join([
            f"# Privacy neurons of {path}", "",
            f"Algorithm 1 on `{source}`: {len(ids)} of {loc.masker.n_neurons} gated units "
            f"({100 * summary['share']:.2f}%), {cfg.steps} steps, {loc.seconds:.1f} s"
            + (f", PII categories {', '.join(categories)}" if categories else "") + ".", "",
            "Privacy neurons per layer (rows) and component (columns):", "", grid.to_markdown(), "",
            "`mask.json` + `mask.safetensors` hold the learned gates; `privloc mitigate --mask` this folder removes "
            "them.", ""]))
    print(grid.to_string())
    print(f"{len(ids)} privacy neurons ({100 * summary['share']:.2f}% of {loc.masker.n_neurons}) in {loc.seconds:.1f} s")
    _weightsdone(claim.out, ["mask.json", "mask.safetensors", "summary.md", "summary.json"])
    return 0


def _n_gated(model) -> int:
    from privloc.method.masking import NeuronMasker

    return NeuronMasker(model).n_neurons  # building the masker attaches nothing to the model


def mitigate(args) -> int:
    from privloc.artifacts import atomic_write_text, write_json
    from privloc.command import audit as auditing
    from privloc.command.card import model_card
    from privloc.command.redact import public_report, source_label
    from privloc.method.localize import Localization
    from privloc.method.masking import NeuronMasker
    from privloc.method.mitigate import deactivate

    path, dev = _start(args)
    base = inputs.mask_base(args.mask)
    meta = inputs.mask_meta(base)
    if not (args.data or meta.get("data")):
        raise inputs.InputError(f"mask {args.mask} does not say which data it was learned on: pass --data")
    source = inputs.data_source(args.data) if args.data else inputs.data_source(meta["data"], f"the mask {args.mask}")
    claim = outputs.claim(args.out, args.overwrite, "mitigate", {"model": path, "mask": str(base.parent),
                                                                 "data": source})
    # A mask learned on a built-in corpus names the profile whose corpus it was: read back here, at the edge.
    profile = args.profile
    if not args.data and "profile" in meta:
        try:
            profile = get_profile(meta["profile"])
        except ValueError as error:
            raise inputs.InputError(f"mask {args.mask}: {error}") from None
    train, valid = inputs.checked_records(source, profile)
    with claim as tmp:
        _say(claim)
        model, tokenizer = inputs.load_model(path, dev)
        weights = inputs.fingerprint(model)
        if meta.get("model_fingerprint") not in (None, weights):
            raise inputs.InputError(f"mask {args.mask} was learned on another model ({meta.get('model')}, weights "
                                 f"{meta['model_fingerprint']}), not on {path} (weights {weights})")
        try:
            masker = NeuronMasker.from_file(model, base)
        except (ValueError, KeyError, TypeError) as error:
            raise inputs.InputError(str(error)) from None
        if args.top_k is not None and not 0 < args.top_k <= masker.n_neurons:
            raise inputs.InputError(f"--top-k {args.top_k}: expected 1 to {masker.n_neurons} (the gated units)")
        # Only the fields this version knows: a mask of another privloc version may carry more or fewer.
        known = {f.name for f in fields(LocalizeConfig)}
        cfg = LocalizeConfig(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in meta.get("config", {}).items() if k in known})
        loc = Localization(masker, [], 0.0, cfg, None)
        ids = masker.top_k(args.top_k) if args.top_k is not None else loc.closed_ids()
        if len(ids) == 0:
            raise inputs.InputError(f"mask {args.mask} selects no neuron: nothing to remove (use --top-k N)")
        data = inputs.encode(source, train, valid, tokenizer, _max_len(model, source, profile))
        attack_cfg = _attack_config(args)
        before, _ = auditing.run(model, tokenizer, data, attack_cfg)
        edited = deactivate(model, ids, masker.components).eval()
        after, _ = auditing.run(edited, tokenizer, data, attack_cfg)
        # The copy is meant to be shared: it names the original by folder name and fingerprint, holds numbers
        # only (no PII, no example, no local path) and its config forgets where the weights were loaded from.
        info = {"name": claim.out.name, "model": Path(path).name, "model_fingerprint": weights,
                "model_type": model.config.model_type, "n_removed": len(ids), "n_gated": masker.n_neurons,
                "top_k": args.top_k, "mask_data": source_label(meta.get("data", "unknown data")),
                "audit_data": source_label(source)}
        edited.config._name_or_path = claim.out.name
        edited.to("cpu").save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        atomic_write_text(tmp / "README.md", model_card(info, masker.counts(ids), before, after))
        write_json(tmp / "removed_neurons.json", {**info, "components": list(masker.components),
                                                  "ids": [int(i) for i in ids]})
        write_json(tmp / "audit.json", {"before": public_report(before), "after": public_report(after)})
    print(f"removed {len(ids)} of {masker.n_neurons} gated units")
    rows = dict(auditing.summary_rows(after))
    for name, value in auditing.summary_rows(before):
        print(f"  {name:<22} {value:>24}  ->  {rows.get(name, 'n/a')}")
    _weightsdone(claim.out, ["model weights and config", "tokenizer", "README.md (model card)",
                             "removed_neurons.json", "audit.json (numbers only)"])
    return 0


def _train_config(args, n_docs: int):
    """The TrainConfig of `privloc train`: a from-scratch GPT-2's defaults, or the pretrained profile's recipe
    (batch 8, lr 3e-4, bf16 autocast on a CPU, a number of epochs) when fine-tuning --base."""
    from privloc.config import PROFILES, TrainConfig

    if args.base is None:
        steps = args.steps or 600
        return TrainConfig(steps=steps, batch_size=args.batch_size or 16, lr=args.lr or 3e-3,
                           warmup=min(30, steps // 10 + 1), eval_every=steps, seed=args.seed)
    recipe = PROFILES["pretrained"].train
    batch = args.batch_size or recipe.batch_size
    steps = args.steps or (args.epochs or recipe.steps // recipe.eval_every) * -(-n_docs // batch)
    return replace(recipe, steps=steps, batch_size=batch, lr=args.lr or recipe.lr,
                   warmup=min(recipe.warmup, steps // 10 + 1), eval_every=steps, seed=args.seed, threads=None)


def train(args) -> int:
    import torch

    from privloc.artifacts import write_json
    from privloc.config import ModelConfig
    from privloc.corpora.data import non_pii_text
    from privloc.method.model import build_model, train_victim
    from privloc.method.tokenizer import train_tokenizer
    from privloc.study.pipeline import memorisation_metrics

    dev = inputs.device(args.device)
    base = inputs.model_folder(args.base, args.allow_download) if args.base else None
    source = inputs.data_source(args.data)
    claim = outputs.claim(args.out, args.overwrite, "train", {"data": source, "base model": base})
    train_records, valid_records = inputs.checked_records(source, args.profile)
    with claim as tmp:
        _say(claim)
        torch.manual_seed(args.seed)
        if base:
            model, tokenizer = inputs.load_model(base, dev)
            max_len = min(args.max_len, model.config.max_position_embeddings)
        else:
            # As for the victims: the tokenizer never sees the private strings (pipeline.tokenizer_texts).
            tokenizer = train_tokenizer(non_pii_text(train_records), vocab_size=args.vocab_size)
            max_len = args.max_len
            model = build_model(ModelConfig(n_layer=args.layers, n_embd=args.width, n_head=args.heads,
                                            n_positions=max_len), tokenizer)
        data = inputs.encode(source, train_records, valid_records, tokenizer, max_len)
        cfg = _train_config(args, len(train_records))
        def evaluate(m):
            return memorisation_metrics(m, data, valid_cast=True, autocast=cfg.autocast)

        history = train_victim(model, data.enc_train, cfg, evaluate, dev, progress=True)
        model.config._name_or_path = claim.out.name  # not the base model's local path
        model.to("cpu").save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / "training.json", {"data": source, "base": args.base, "history": history,
                                           "config": asdict(cfg), "privloc_version": __version__})
    last = history[-1]
    print(f"trained {cfg.steps} steps in {last['train_seconds']:.1f} s: memorised PII exact match "
          f"{last['em_assoc']:.3f} (validation cast, never seen: {last['em_assoc_valid']:.3f}), non-PII "
          f"perplexity {last['ppl_nonpii']:.2f}")
    if last["em_assoc"] < 0.5:
        print(f"note: the model reproduces only {last['em_assoc']:.0%} of its memorisable PII; an audit will find "
              "little to remove. Train longer (--steps, --epochs) for a model that memorises (README, 'Try it "
              "out').")
    _weightsdone(claim.out, ["model weights and config", "tokenizer", "training.json"])
    return 0


COMMANDS = {"audit": audit, "localize": localize, "mitigate": mitigate, "train": train}
