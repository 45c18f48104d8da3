"""Over-refusal and utility per method: compliance on harmless and on safe-but-edgy prompts, and mean
zero-shot accuracy.

    python analyses/fig_overrefusal_utility.py NAME=FILE [NAME=FILE ...] [--out figures]

Each FILE is one method's utility JSON (tasks with accuracy, harmless and over-refusal compliance).
"""

from __future__ import annotations

import argparse

from mechrefusal.analysis.paper import overrefusal_utility
from mechrefusal.analysis.paper.inputs import named_paths, read_utility
from mechrefusal.analysis.paper.output import figure_main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("methods", nargs="+", metavar="NAME=FILE", help="a method name and its utility JSON")
    figure_main(
        "overrefusal_utility",
        parser,
        lambda args: overrefusal_utility(
            {name: read_utility(path) for name, path in named_paths(args.methods, "utility file").items()}
        ),
        argv,
    )


if __name__ == "__main__":
    main()
