"""The fail-open motivation: per-layer projection of plain harmful, jailbreak-wrapped harmful (the human
attack's prompts) and harmless prompts on a model's refusal direction, beside its judged harmful refusal
with nothing and with that direction ablated.

    python -m mechrefusal.analyze RUN/round-0 --out REPORT
    python -m mechrefusal.attack RUN/round-0 --attacks human --out ATTACKS
    python analyses/fig_fail_open.py REPORT ATTACKS [--direction d0] [--n-harmless 32] [--out figures]

The model, the direction (``REPORT/<role>_directions.safetensors``) and the refusal rates come from the
analysis report; the harmful prompts are the attacked behaviours and the jailbreaks their human-template
test cases.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mechrefusal import data
from mechrefusal.analysis.paper import fail_open
from mechrefusal.analysis.paper.inputs import attack_prompts, model_entry, read_attacks, read_report
from mechrefusal.analysis.paper.output import add_compute_arguments, figure_main
from mechrefusal.core.directions import DirectionSet
from mechrefusal.core.errors import MissingFileError, SettingError
from mechrefusal.models import load


def build(args: argparse.Namespace):
    entry = model_entry(read_report(args.report), args.role)
    prompts = attack_prompts(read_attacks(args.attacks))
    if "human" not in prompts:
        raise SettingError(f"{args.attacks} has no human attack; rerun mechrefusal.attack with --attacks human.")
    labels = entry["independence"]["labels"]
    label = args.direction or labels[0]
    if label not in labels:
        raise SettingError(f"No direction {label!r} in the report; it has {', '.join(labels)}.")
    path = Path(args.report) / f"{args.role}_directions.safetensors"
    if not path.is_file():
        raise MissingFileError(f"No direction file at {path}.")
    index = labels.index(label)
    model = load(entry["model"], device=args.device)
    rates = entry["independence"]
    return fail_open(
        model,
        DirectionSet.load(path, d_model=model.d_model)[index],
        prompts["plain"],
        prompts["human"],
        data.load("harmless", "test")[: args.n_harmless],
        {"none": rates["baseline_rate"], "ablated": rates["single_rates"][index]},
        dtype=args.dtype,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="a python -m mechrefusal.analyze --out directory (the round-0 model)")
    parser.add_argument("attacks", help="a python -m mechrefusal.attack --out directory with the human attack")
    parser.add_argument("--role", choices=("model", "compare"), default="model", help="which analysed model")
    parser.add_argument("--direction", default=None, help="the direction's label in the report (default: the first)")
    parser.add_argument("--n-harmless", type=int, default=32, help="harmless test prompts")
    add_compute_arguments(parser)
    figure_main("fail_open", parser, build, argv)


if __name__ == "__main__":
    main()
