"""`privloc`: audit a language model for PII leakage, localise its privacy neurons, and remove them.

Only argparse is imported here, so `--help` answers at once; the work is in commands.py.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import warnings

from privloc import __version__

MIN_LEN = 16  # --max-len: BOS, EOS and a sentence that holds a PII value

EPILOG = """examples:
  privloc audit --model my-model --data my-corpus            # report folder audit-my-model/
  privloc localize --model my-model --data my-corpus         # mask folder mask-my-model/
  privloc mitigate --model my-model --mask mask-my-model --out my-model-mitigated

A dataset is a folder with train.jsonl and valid.jsonl (one {"text", "spans"} record per line; README,
"Your own data"), a built-in corpus (enron, echr, yelp_health) or hf:<name>."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage itself is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(kind):
    noun = "whole number" if kind is int else "number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {noun}, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {noun}, got {text!r}")
        return value
    return parse


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def _context(text: str) -> int:
    value = _positive(int)(text)
    if value < MIN_LEN:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_LEN} tokens (a document needs room for its PII), "
                                         f"got {text}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the model runs (auto: a GPU when there is one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it holds an earlier output of privloc (never another folder)")
    parser.add_argument("--allow-download", action="store_true",
                        help="allow downloads from the Hugging Face hub (hf: datasets, hub model names); "
                             "off by default, whatever HF_HUB_OFFLINE says")
    parser.add_argument("--profile", default="default", choices=("smoke", "default", "pretrained", "paper"),
                        help="the profile whose corpus (for a built-in one) and attack sizes to use; 'pretrained' "
                             "attacks in bf16 on fewer spans, sized for a ~100M-parameter model on a CPU")


def _model_and_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="model folder (saved with save_pretrained, "
                        "its tokenizer beside it)")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="dataset folder (train.jsonl + valid.jsonl), built-in corpus name or hf:<name>")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="privloc", description=__doc__.splitlines()[0].split(": ", 1)[1],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"privloc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{audit,localize,mitigate,train}",
                                parser_class=Parser)

    audit = sub.add_parser("audit", help="how much PII does the model leak? (the attack suite)",
                           description="Run the attack suite on every memorised PII span and write report.md, "
                                       "report.json (every number) and PNG plots to the output folder.")
    _model_and_data(audit)
    audit.add_argument("--budget", type=_positive(int), help="attacker budget B: tries per span (default: the profile's, 10)")
    audit.add_argument("--spans", type=_positive(int), help="spans for beam search and candidates (default: the profile's, 100)")
    audit.add_argument("--out", metavar="DIR", help="report folder (default audit-<model folder name>)")
    audit.add_argument("--show-pii", action="store_true",
                       help="print recovered PII in full in the report's examples (default: redacted, e.g. "
                            "j***.***@****.***)")
    _common(audit)

    localize = sub.add_parser("localize", help="which neurons hold the PII? (Algorithm 1)",
                              description="Learn HardConcrete gates that suppress memorised PII and keep "
                                          "ordinary text; write the mask and a summary of where the neurons are.")
    _model_and_data(localize)
    localize.add_argument("--share", type=_share, help="share of gated units to select (default: the profile's)")
    localize.add_argument("--steps", type=_positive(int), help="optimisation steps (default: the profile's)")
    localize.add_argument("--categories", metavar="LIST", help="only these PII categories, e.g. EMAIL,PHONE")
    localize.add_argument("--out", metavar="DIR", help="mask folder (default mask-<model folder name>)")
    _common(localize)

    mitigate = sub.add_parser("mitigate", help="a copy of the model with the privacy neurons removed",
                              description="Zero the mask's neurons in a standalone copy (loadable by plain "
                                          "transformers), with its tokenizer and a model card that gives the "
                                          "audit before and after.")
    mitigate.add_argument("--model", required=True, metavar="DIR", help="the model the mask was learned on")
    mitigate.add_argument("--mask", required=True, metavar="DIR", help="a folder written by privloc localize")
    mitigate.add_argument("--top-k", type=_positive(int), metavar="N",
                          help="remove the N highest-ranked neurons instead of the mask's selection")
    mitigate.add_argument("--data", metavar="DIR", help="data to audit on (default: the data of the mask)")
    mitigate.add_argument("--budget", type=_positive(int), help="attacker budget B of the audits (default: the "
                          "profile's, 10)")
    mitigate.add_argument("--spans", type=_positive(int), help="spans for beam search and candidates in the audits")
    mitigate.add_argument("--out", required=True, metavar="DIR", help="folder of the mitigated copy")
    _common(mitigate)

    train = sub.add_parser("train", help="fine-tune a pretrained model, or train a small GPT-2, on a dataset",
                           description="With --base: fine-tune that pretrained model (every weight, bf16 autocast "
                                       "on a CPU) on the training split. Without: train a tokenizer (on the non-PII "
                                       "text) and a small GPT-2 from scratch. Either way, save model and tokenizer "
                                       "with save_pretrained.")
    train.add_argument("--data", required=True, metavar="DIR", help="dataset folder or built-in corpus name")
    train.add_argument("--out", required=True, metavar="DIR", help="model folder to write")
    train.add_argument("--base", metavar="MODEL",
                       help="pretrained model to fine-tune: a built-in name (smollm2-135m) or a local folder of a "
                            "known family; --layers, --width, --heads and --vocab-size then do not apply")
    train.add_argument("--epochs", type=_positive(int),
                       help="passes over the training split with --base (default 4; --steps overrides it)")
    # On 120 documents of the echr corpus, 300 steps reproduced 2% of the memorisable PII and 600 steps 97%.
    train.add_argument("--steps", type=_positive(int), help="training steps (default 600; with --base, --epochs)")
    train.add_argument("--layers", type=_positive(int), default=2, help="transformer blocks (default 2)")
    train.add_argument("--width", type=_positive(int), default=64, help="model width (default 64)")
    train.add_argument("--heads", type=_positive(int), default=2, help="attention heads (default 2)")
    train.add_argument("--batch-size", type=_positive(int), help="documents per step (default 16; with --base 8)")
    train.add_argument("--lr", type=_positive(float), help="peak learning rate (default 3e-3; with --base 3e-4)")
    train.add_argument("--vocab-size", type=_positive(int), default=1024, help="BPE vocabulary (default 1024)")
    train.add_argument("--max-len", type=_context, default=256, help="tokens per document (default 256)")
    _common(train)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # a kill (SIGTERM) cleans up as Ctrl-C does


def resolve_profile(args):
    """The --profile name turned into its Profile, here, once: every command reads the object."""
    from privloc.config import get_profile

    args.profile = get_profile(args.profile)
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed in one line
        return done.code if isinstance(done.code, int) else 2
    # Before huggingface_hub is imported: it reads these once.
    offline = "0" if args.allow_download else "1"
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = offline
    # Library deprecation notices (e.g. transformers' about past_key_values) are for developers, not users.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from privloc.command import commands, inputs

    resolve_profile(args)
    if args.command == "train" and args.width % args.heads:
        return _fail(args.command, f"--width {args.width} is not a multiple of --heads {args.heads}")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return commands.COMMANDS[args.command](args)
    except inputs.InputError as error:
        return _fail(args.command, str(error))
    except KeyboardInterrupt:
        print(f"privloc {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(command: str, message: str) -> int:
    print(f"privloc {command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
