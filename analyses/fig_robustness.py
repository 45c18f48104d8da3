"""The robustness table as a figure: attack success rate per method and attack (GCG, AutoDAN, PAIR, human,
average) under one harm judge, with its kappa.

    python analyses/fig_robustness.py NAME=DIR [NAME=DIR ...] [--judge harm] [--out figures]

Each DIR is the ``--out`` of one ``python -m mechrefusal.attack`` run (one method's checkpoint).
"""

from __future__ import annotations

import argparse

from mechrefusal.analysis.paper import robustness
from mechrefusal.analysis.paper.inputs import named_paths, read_attacks
from mechrefusal.analysis.paper.output import figure_main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=DIR", help="a method name and its attack job's --out")
    parser.add_argument("--judge", default="harm", help="the harm judge whose ASR fills the table")
    figure_main(
        "robustness",
        parser,
        lambda args: robustness(
            {name: read_attacks(path) for name, path in named_paths(args.runs, "attack run").items()},
            judge=args.judge,
        ),
        argv,
    )


if __name__ == "__main__":
    main()
