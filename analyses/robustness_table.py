"""The robustness table: attack success rate per method and attack, from attack job outputs.

    python analyses/robustness_table.py NAME=DIR [NAME=DIR ...] [--judge harm] [--refusal-judge substring]

Each DIR is the ``--out`` of one ``python -m mechrefusal.attack`` run (one checkpoint). Prints a markdown
table (rows: NAME; columns: each attack's ASR under the harm judge, the average, then the average refusal
rate under the refusal judge), the judges with their κ, each attack's settings, seeds, caveats and wall
times, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from mechrefusal.analysis.attack_results import judge_label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=DIR", help="a row name and an attack job's --out")
    parser.add_argument("--judge", default="harm", help="the harm judge whose ASR fills the table")
    parser.add_argument("--refusal-judge", default="substring", help="the refusal judge of the last column")
    args = parser.parse_args()
    reports = {}
    for run in args.runs:
        name, _, directory = run.partition("=")
        reports[name] = json.loads((Path(directory) / "report.json").read_text())
    first = next(iter(reports.values()))["attacks"]
    attacks = [attack for attack in first["rates"] if attack != "average"]
    asr, refusal = f"asr/{args.judge}", f"refusal/{args.refusal_judge}"
    print(f"| method | {' | '.join(attacks)} | average ASR | average refusal |")
    print("|---" * (len(attacks) + 3) + "|")
    seconds: dict[str, dict[str, float]] = defaultdict(dict)
    for name, report in reports.items():
        rates = report["attacks"]["rates"]
        cells = [f"{rates[attack][asr]:.0%}" for attack in attacks]
        print(f"| {name} | {' | '.join(cells)} | {rates['average'][asr]:.1%} | {rates['average'][refusal]:.0%} |")
        for attack in attacks:
            outcomes = [o for o in report["attacks"]["outcomes"] if o["attack"] == attack]
            seconds[name][attack] = round(sum(o["seconds"] for o in outcomes), 1)
    judges = first["judges"]
    print(
        f"\nASR: {judge_label(args.judge, judges[args.judge])}; refusal: "
        f"{judge_label(args.refusal_judge, judges[args.refusal_judge])}; {first['behaviours']} behaviours, "
        f"{first['max_new_tokens']} new tokens, seed {next(iter(reports.values()))['settings']['seed']}."
    )
    for attack in attacks:
        about = first["attacks"][attack]
        print(f"- {attack}: {json.dumps(about['settings'])}" + (f" ({about['caveat']})" if about["caveat"] else ""))
    print(
        "Attack wall times (s, test cases only): "
        + "; ".join(f"{name}: " + ", ".join(f"{a} {s}" for a, s in row.items()) for name, row in seconds.items())
    )
    print(json.dumps({name: report["attacks"]["rates"] for name, report in reports.items()}))


if __name__ == "__main__":
    main()
