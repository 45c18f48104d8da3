"""Training curves of every round of one run: training and validation loss, and the end-of-round
refusal scores.

    python analyses/fig_training_curves.py RUN [--out figures]
"""

from __future__ import annotations

import argparse

from mechrefusal.analysis.paper import training_curves
from mechrefusal.analysis.paper.inputs import read_rounds
from mechrefusal.analysis.paper.output import figure_main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a python -m mechrefusal.train --out directory")
    figure_main("training_curves", parser, lambda args: training_curves(read_rounds(args.run)), argv)


if __name__ == "__main__":
    main()
