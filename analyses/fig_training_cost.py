"""Training cost per method, split into direction search and fine-tuning (from the rounds' wall times).

    python analyses/fig_training_cost.py NAME=RUN [NAME=RUN ...] [--out figures]

Each RUN is the ``--out`` of one ``python -m mechrefusal.train`` run.
"""

from __future__ import annotations

import argparse

from mechrefusal.analysis.paper import training_cost
from mechrefusal.analysis.paper.inputs import named_paths, read_rounds
from mechrefusal.analysis.paper.output import figure_main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN", help="a method name and its training run's --out")
    figure_main(
        "training_cost",
        parser,
        lambda args: training_cost({name: read_rounds(path) for name, path in named_paths(args.runs, "run").items()}),
        argv,
    )


if __name__ == "__main__":
    main()
