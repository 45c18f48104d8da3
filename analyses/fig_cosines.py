"""Cosine matrix of the directions a training run found round after round.

python analyses/fig_cosines.py RUN [--out figures]
"""

from __future__ import annotations

import argparse

from mechrefusal.analysis.paper import direction_cosines
from mechrefusal.analysis.paper.inputs import read_directions, read_rounds
from mechrefusal.analysis.paper.output import figure_main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a python -m mechrefusal.train --out directory")
    figure_main(
        "cosines", parser, lambda args: direction_cosines(read_directions(args.run), read_rounds(args.run)), argv
    )


if __name__ == "__main__":
    main()
