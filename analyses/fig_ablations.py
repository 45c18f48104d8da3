"""Refusal under no, each single, each pair, cumulative and all ablations, round 0 against the last round.

python -m mechrefusal.analyze RUN/round-LAST --compare RUN/round-0 --out DIR
python analyses/fig_ablations.py DIR [--out figures]
"""

from __future__ import annotations

import argparse

from mechrefusal.analysis.paper import ablation_comparison
from mechrefusal.analysis.paper.inputs import model_entry, read_report
from mechrefusal.analysis.paper.output import figure_main


def build(args: argparse.Namespace):
    report = read_report(args.report)
    return ablation_comparison(model_entry(report, "compare"), model_entry(report, "model"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="analysis of the last round with --compare round 0 (mechrefusal.analyze --out)")
    figure_main("ablations", parser, build, argv)


if __name__ == "__main__":
    main()
