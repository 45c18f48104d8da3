"""The representational-independence matrix of one analysed model's directions.

python analyses/fig_independence.py DIR [--role model|compare] [--out figures]
"""

from __future__ import annotations

import argparse

from mechrefusal.analysis.paper import independence
from mechrefusal.analysis.paper.inputs import model_entry, read_report
from mechrefusal.analysis.paper.output import figure_main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="a python -m mechrefusal.analyze --out directory")
    parser.add_argument("--role", choices=("model", "compare"), default="model", help="which analysed model")
    figure_main(
        "independence", parser, lambda args: independence(model_entry(read_report(args.report), args.role)), argv
    )


if __name__ == "__main__":
    main()
