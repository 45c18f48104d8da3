"""What each round buys: average attack success, judged refusal under the strongest single ablation and
utility, round against round.

    python analyses/fig_rounds.py [--attacks K=DIR ...] [--report K=DIR ...] [--compare K=DIR ...]
                                  [--utility K=FILE ...] [--judge harm] [--out figures]

K is a round index; each DIR/FILE is that round's attack job ``--out``, analysis ``--out`` (``--report``: the
analysed model's entry is round K; ``--compare``: the report's compared model, ``analyze --compare``, is)
or utility JSON. Any of them may be left out for any round.
"""

from __future__ import annotations

import argparse

from mechrefusal.analysis.paper import rounds_summary
from mechrefusal.analysis.paper.inputs import model_entry, named_paths, read_attacks, read_report, read_utility
from mechrefusal.analysis.paper.output import figure_main
from mechrefusal.core.errors import SettingError


def by_round(pairs: list[str], what: str) -> dict:
    named = named_paths(pairs, what)
    bad = [name for name in named if not name.isdigit()]
    if bad:
        raise SettingError(f"Expected a round index before '=' for each {what}, got {', '.join(bad)}.")
    return {int(name): path for name, path in named.items()}


def build(args: argparse.Namespace):
    return rounds_summary(
        {r: read_attacks(path) for r, path in by_round(args.attacks, "attack run").items()},
        {
            **{r: model_entry(read_report(path), "compare") for r, path in by_round(args.compare, "report").items()},
            **{r: model_entry(read_report(path), "model") for r, path in by_round(args.report, "report").items()},
        },
        {r: read_utility(path) for r, path in by_round(args.utility, "utility file").items()},
        judge=args.judge,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attacks", nargs="*", default=[], metavar="K=DIR", help="round K's attack job --out")
    parser.add_argument("--report", nargs="*", default=[], metavar="K=DIR", help="round K's analysis --out")
    parser.add_argument(
        "--compare", nargs="*", default=[], metavar="K=DIR", help="an analysis --out whose compared model is round K"
    )
    parser.add_argument("--utility", nargs="*", default=[], metavar="K=FILE", help="round K's utility JSON")
    parser.add_argument("--judge", default="harm", help="the harm judge of the ASR")
    figure_main("rounds", parser, build, argv)


if __name__ == "__main__":
    main()
