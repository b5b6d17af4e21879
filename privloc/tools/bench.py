"""How expensive is localisation? `python -m privloc.tools.bench [--out figures/bench.md] [--quick]`.

Measures, on the default profile's model shape with random weights (timing does not depend on what a
model has learned): the cost of one localisation step relative to one training step, the wall time of
the executed notebooks, the cost of a `make figures` that has nothing to do, the peak memory of a
localisation run, and how the step cost grows with depth and width.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from privloc.artifacts import atomic_write_text
from privloc.config import PROFILES, LocalizeConfig, ModelConfig
from privloc.corpora.data import KINDS
from privloc.method.localize import localize, pii_loss
from privloc.method.masking import NeuronMasker
from privloc.method.model import build_model, lm_loss, next_token_logits
from privloc.method.tokenizer import Encoded
from privloc.tools import bench_families, bench_notebooks, bench_pretrained
from privloc.tools.bench_attacks import attack_times, render_attack_times
from privloc.tools.bench_notebooks import SEPARATE

REPO = Path(__file__).resolve().parents[2]
PII_SHARE = 0.1  # share of next-token targets that are PII in the synthetic batch, roughly as in the corpora


@dataclass(frozen=True)
class Shape:
    """A model and batch to time: the default profile's model on a default-sized batch."""

    n_layer: int = PROFILES["default"].model.n_layer
    n_embd: int = PROFILES["default"].model.n_embd
    n_head: int = PROFILES["default"].model.n_head
    vocab: int = 1800  # what the default tokenizers end up with (fewer entries than the 2048 asked for)
    batch: int = PROFILES["default"].localize.batch_size
    seq: int = 200
    architecture: str = "gpt2"  # the family (privloc.method.families)


class _Vocab:
    """The little of a tokenizer that build_model reads."""

    bos_token_id = eos_token_id = pad_token_id = 0

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def _model(shape: Shape):
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=shape.n_layer, n_embd=shape.n_embd, n_head=shape.n_head,
                      n_positions=max(256, shape.seq), architecture=shape.architecture)
    return build_model(cfg, _Vocab(shape.vocab))


def _batch(shape: Shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, shape.vocab, (shape.batch, shape.seq), generator=generator)
    pii = torch.rand(shape.batch, shape.seq - 1, generator=generator) < PII_SHARE
    return ids, torch.ones_like(ids), pii


def _train_step(shape: Shape) -> Callable[[], None]:
    """One step of train_victim: every weight trained with AdamW and gradient clipping."""
    model, (ids, attention, _) = _model(shape).train(), _batch(shape)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))

    def step() -> None:
        loss = lm_loss(model, ids, attention)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return step


def _localization_step(shape: Shape, stack: contextlib.ExitStack) -> tuple[Callable[[], None], int]:
    """One step of localize(): sampled gates on a frozen model, gradients into log α only.

    The gates stay attached until `stack` closes, so the timed steps do not pay for hook registration.
    """
    model, (ids, attention, pii) = _model(shape).eval(), _batch(shape)
    masker = NeuronMasker(model)
    stack.enter_context(masker.applied(mode="sample"))
    optimizer = torch.optim.Adam([masker.gates.log_alpha], lr=0.1)
    targets, keep = ids[:, 1:], ~pii

    def step() -> None:
        # As localize() does: the PII and the kept positions are projected onto the vocabulary separately.
        pii_logits, keep_logits = next_token_logits(model, ids, attention, pii, keep)
        loss = (pii_loss(pii_logits, targets[pii]) + F.cross_entropy(keep_logits, targets[keep])
                + masker.gates.p_closed().mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step, masker.n_neurons


def _seconds(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def step_ratio(shape: Shape = Shape(), repeats: int = 15, warmup: int = 3, progress: bool = True) -> dict:
    """Median milliseconds of a training step and of a localisation step, timed alternately on one batch.

    Alternating (and swapping which goes first) spreads the load of other processes over both.
    """
    train_times, loc_times = [], []
    with contextlib.ExitStack() as stack:
        steps = {"train": _train_step(shape), "localize": _localization_step(shape, stack)[0]}
        for i in tqdm(range(warmup + repeats), desc="step ratio", disable=not progress, leave=False):
            order = ("train", "localize") if i % 2 == 0 else ("localize", "train")
            times = {name: _seconds(steps[name]) for name in order}
            if i >= warmup:
                train_times.append(times["train"])
                loc_times.append(times["localize"])
    train, loc = statistics.median(train_times), statistics.median(loc_times)
    return {"shape": shape, "repeats": repeats, "train_ms": 1000 * train, "localize_ms": 1000 * loc,
            "train_range_ms": (1000 * min(train_times), 1000 * max(train_times)),
            "localize_range_ms": (1000 * min(loc_times), 1000 * max(loc_times)), "ratio": loc / train}


def scaling(layers=(2, 4, 8), widths=(128, 256), shape: Shape = Shape(), repeats: int = 5, warmup: int = 2,
            progress: bool = True) -> pd.DataFrame:
    """Median localisation step time per model size, per step and per gated neuron."""
    rows = []
    grid = [(n_layer, width) for n_layer in layers for width in widths]
    for n_layer, width in tqdm(grid, desc="scaling", disable=not progress, leave=False):
        with contextlib.ExitStack() as stack:
            step, n_neurons = _localization_step(replace(shape, n_layer=n_layer, n_embd=width), stack)
            times = [_seconds(step) for _ in range(warmup + repeats)][warmup:]
        ms = 1000 * statistics.median(times)
        rows.append({"layers": n_layer, "width": width, "neurons": n_neurons, "ms_per_step": ms,
                     "us_per_neuron_step": 1000 * ms / n_neurons})
    table = pd.DataFrame(rows)
    table.attrs.update(shape=shape, repeats=repeats)
    return table


def _peak_rss_mib() -> float:
    """This process's peak resident set size in MiB."""
    # Linux carries ru_maxrss over fork and exec, so a child started by a large parent would report the
    # parent's peak; VmHWM belongs to the process's own address space.
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1) / 1024


def _synthetic_corpus(shape: Shape, n_docs: int = 440) -> Encoded:
    """Random documents the size of a default corpus, a tenth of their targets labelled assoc PII (one-token spans)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, shape.vocab, (n_docs, shape.seq), generator=generator)
    pii = torch.rand(n_docs, shape.seq, generator=generator) < PII_SHARE
    label = pii.long()
    span_id = torch.where(pii, pii.flatten().cumsum(0).reshape(pii.shape) - 1, -1)
    return Encoded(ids, torch.ones_like(ids), category=label, kind=label * (KINDS.index("assoc") + 1),
                   span_id=span_id)


def _peak_memory_child(steps: int) -> dict:
    shape = Shape()
    model, corpus = _model(shape), _synthetic_corpus(shape)
    before = _peak_rss_mib()
    localize(model, corpus, LocalizeConfig(steps=steps, batch_size=shape.batch), progress=False)
    return {"steps": steps, "before_mib": before, "peak_mib": _peak_rss_mib()}


def peak_memory(steps: int = 20) -> dict:
    """Max RSS of a fresh process that runs localize() on the default shape, and what it held before."""
    # A fresh process: our own peak already includes every model timed so far.
    out = subprocess.run([sys.executable, "-m", "privloc.tools.bench", "--peak-memory-child", str(steps)],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict:
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def render(info: dict, ratio: dict | None = None, memory: dict | None = None, table: pd.DataFrame | None = None,
           quick: bool = False, attacks: dict | None = None, notebooks: list[str] | None = None) -> str:
    """The Markdown report; a section whose measurement is None says it was not measured."""
    lines = ["# privloc benchmark", "",
             f"- date: {info['date']}{' (quick run: few repeats, rough numbers)' if quick else ''}",
             f"- machine: {info['platform']}, {info['processor']}, {info['cpus']} CPUs, "
             f"{info['torch_threads']} torch threads",
             f"- torch {info['torch']}, Python {info['python']}", ""]
    lines += notebooks or []

    lines += ["## Localisation step vs. training step", ""]
    if ratio is None:
        lines += ["Not measured.", ""]
    else:
        s = ratio["shape"]
        lines += [f"Model {s.n_layer} layers × {s.n_embd} (vocabulary {s.vocab}, random weights), batch "
                  f"{s.batch} × {s.seq} tokens; median of {ratio['repeats']} alternating repeats after warm-up.",
                  "A training step trains every weight (AdamW, clipping); a localisation step samples the gates, "
                  "keeps the weights frozen and trains log α only (Adam).", "",
                  "| step | median ms | min–max ms |", "|---|---|---|",
                  f"| train | {ratio['train_ms']:.1f} | {ratio['train_range_ms'][0]:.1f}–{ratio['train_range_ms'][1]:.1f} |",
                  f"| localise | {ratio['localize_ms']:.1f} | "
                  f"{ratio['localize_range_ms'][0]:.1f}–{ratio['localize_range_ms'][1]:.1f} |", "",
                  f"localization_step_over_train_step = {ratio['ratio']:.2f}", ""]

    lines += render_attack_times(attacks)

    lines += ["## Peak memory of a localisation run", ""]
    if memory is None:
        lines += ["Not measured.", ""]
    else:
        lines += [f"Peak resident set size (VmHWM) of a fresh Python process that builds the default-shape "
                  f"model and a default-sized synthetic corpus, then runs `localize()` for {memory['steps']} steps: "
                  f"**{memory['peak_mib']:.0f} MiB**, of which {memory['before_mib']:.0f} MiB were held before "
                  f"localising (interpreter, torch, model, corpus) and "
                  f"{memory['peak_mib'] - memory['before_mib']:.0f} MiB are the localisation's own.", ""]

    lines += ["## Scaling with model size", ""]
    if table is None:
        lines += ["Not measured.", ""]
    else:
        s = table.attrs["shape"]
        lines += [f"Median localisation step per model size ({s.n_head} heads, all six components gated, batch "
                  f"{s.batch} × {s.seq} tokens, median of {table.attrs['repeats']} steps after warm-up).", "",
                  "| " + " | ".join(table.columns) + " |", "|---" * len(table.columns) + "|"]
        lines += [f"| {r.layers} | {r.width} | {r.neurons} | {r.ms_per_step:.1f} | {r.us_per_neuron_step:.3f} |"
                  for r in table.itertuples()]
        lines += [""]
    return "\n".join(lines)


def run(out="figures/bench.md", quick: bool = False, build_dir="build/default", repo=REPO) -> str:
    """Take every measurement, printing each as it completes, and write the report to `out`."""
    info = machine()
    print(f"{info['platform']}, {info['cpus']} CPUs, {info['torch_threads']} torch threads", flush=True)
    ratio = step_ratio(repeats=3 if quick else 15, warmup=1 if quick else 3)
    print(f"train step {ratio['train_ms']:.1f} ms, localisation step {ratio['localize_ms']:.1f} ms: "
          f"ratio {ratio['ratio']:.2f}", flush=True)
    per_family = bench_families.family_ratios(step_ratio, Shape(), repeats=3 if quick else 15,
                                              warmup=1 if quick else 3)
    print({name: round(r["ratio"], 2) for name, r in per_family.items()}, flush=True)
    stems = [p.stem for p in sorted((Path(repo) / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    figures = [stem for stem in stems if stem not in SEPARATE]
    make = bench_notebooks.noop_make(repo)
    print(f"no-op make figures: {make}", flush=True)
    notebooks = bench_notebooks.render(bench_notebooks.records(build_dir, stems), figures,
                                       {stem: SEPARATE[stem] for stem in stems if stem in SEPARATE}, str(build_dir), make)
    memory = peak_memory(steps=3 if quick else 20)
    print(f"peak memory: {memory['peak_mib']:.0f} MiB", flush=True)
    table = scaling(repeats=2 if quick else 5, warmup=1 if quick else 2)
    print(table.to_string(index=False), flush=True)
    attacks = attack_times()
    print(f"attack suite per state: {attacks}", flush=True)
    text = render(info, ratio, memory, table, quick, attacks, notebooks)
    text += "\n" + "\n".join(bench_families.render(per_family))
    text += "\n" + "\n".join(bench_pretrained.report(build_dir))
    atomic_write_text(out, text)
    print(f"wrote {out}", flush=True)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m privloc.tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="figures/bench.md")
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run, not a measurement")
    parser.add_argument("--build", default="build/default",
                        help="folder of the executed default notebooks (e.g. that of a run from a fresh cache)")
    parser.add_argument("--peak-memory-child", type=int, metavar="STEPS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak_memory_child is not None:
        print(json.dumps(_peak_memory_child(args.peak_memory_child)))
        return 0
    run(args.out, args.quick, args.build)
    return 0


if __name__ == "__main__":
    sys.exit(main())
