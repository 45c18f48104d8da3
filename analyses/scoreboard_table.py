"""The robustness scoreboard of each checkpoint, from attack job outputs.

    python analyses/scoreboard_table.py NAME=DIR[,DIR ...] [NAME=DIR ...] [--judge harm] [--refusal-judge substring]

Each NAME is one checkpoint and each DIR the ``--out`` of one ``python -m mechrefusal.attack`` run on it
(prompt and white-box attacks may be separate campaigns, joined with commas). Prints per checkpoint a
markdown table (rows: each attack, and each variant such as the directions attack's d0, d1, all; columns:
ASR under the harm judge, refusal under the refusal judge, harmless KL, budget, seed, behaviours), the
weakest attack, the judges with their κ and the caveats, then one JSON line of every scoreboard.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mechrefusal.analysis.scoreboard import scoreboard
from mechrefusal.core.errors import MechrefusalError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=DIR[,DIR]", help="a checkpoint's name and its attack dirs")
    parser.add_argument("--judge", default=None, help="the harm judge of the ASR (default: the first one)")
    parser.add_argument("--refusal-judge", default=None, help="the refusal judge (default: the first one)")
    args = parser.parse_args(argv)
    boards = {}
    for run in args.runs:
        name, _, directories = run.partition("=")
        dirs = [Path(d) for d in directories.split(",") if d]
        if not name or not dirs:
            parser.error(f"{run!r} is not NAME=DIR[,DIR]; name a checkpoint and its attack directories.")
        try:
            boards[name] = scoreboard(dirs, harm_judge=args.judge, refusal_judge=args.refusal_judge)
        except MechrefusalError as error:
            parser.error(f"{name}: {error}")
    for name, board in boards.items():
        print(f"### {name}\n\n{board.to_markdown()}\n")
    print(json.dumps({name: board.to_dict() for name, board in boards.items()}))


if __name__ == "__main__":
    main()
