"""The robustness table: attack success rate per method and attack, from attack job outputs.

    python analyses/robustness_table.py NAME=DIR [NAME=DIR ...] [--judge harm] [--refusal-judge substring]

Each DIR is the ``--out`` of one ``python -m mechrefusal.attack`` run (one checkpoint). Prints a markdown
table (rows: NAME; columns: each attack's ASR under the harm judge in the paper's order, their mean, then the
mean refusal rate under the refusal judge over the same attacks), the judges with their κ, each attack's
settings, seeds, caveats and wall times, and one JSON line. The table is `robustness`'s (the figure's).
"""

from __future__ import annotations

import argparse
import json

from mechrefusal.analysis.attack_results import judge_label
from mechrefusal.analysis.paper.inputs import named_paths, read_attacks
from mechrefusal.analysis.paper.tables import robustness, shown_rates
from mechrefusal.core.errors import MechrefusalError, SettingError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=DIR", help="a row name and an attack job's --out")
    parser.add_argument("--judge", default="harm", help="the harm judge whose ASR fills the table")
    parser.add_argument("--refusal-judge", default="substring", help="the refusal judge of the last column")
    args = parser.parse_args()
    try:
        campaigns = {name: read_attacks(path) for name, path in named_paths(args.runs, "attack job").items()}
        table = robustness(campaigns, judge=args.judge).numbers["asr"]
        first = next(iter(campaigns.values()))
        about = first["judges"].get(args.refusal_judge)
        if about is None or about["measures"] != "refusal":
            raise SettingError(f"No refusal judge {args.refusal_judge!r} in the attack results.")
        attacks = [attack for attack in next(iter(table.values())) if attack != "average"]
        refusal = {
            name: shown_rates(campaign, attacks, f"refusal/{args.refusal_judge}")["average"]
            for name, campaign in campaigns.items()
        }
    except (MechrefusalError, KeyError) as error:
        parser.error(str(error) if isinstance(error, MechrefusalError) else f"attack results lack {error}.")
    print(f"| method | {' | '.join(attacks)} | average ASR | average refusal |")
    print("|---" * (len(attacks) + 3) + "|")
    for name, row in table.items():
        cells = [f"{row[attack]:.0%}" for attack in attacks]
        print(f"| {name} | {' | '.join(cells)} | {row['average']:.1%} | {refusal[name]:.0%} |")
    print(
        f"\nASR: {judge_label(args.judge, first['judges'][args.judge])}; refusal: "
        f"{judge_label(args.refusal_judge, about)}; {first['behaviours']} behaviours, "
        f"{first['max_new_tokens']} new tokens, budget {first.get('budget')}, seeds "
        + ", ".join(f"{name} {campaign.get('seed')}" for name, campaign in campaigns.items())
        + "."
    )
    for attack in attacks:
        about_attack = first["attacks"][attack]
        caveat = f" ({about_attack['caveat']})" if about_attack["caveat"] else ""
        print(f"- {attack}: {json.dumps(about_attack['settings'])}{caveat}")
    seconds = {
        name: {a: round(sum(o["seconds"] for o in c["outcomes"] if o["attack"] == a), 1) for a in attacks}
        for name, c in campaigns.items()
    }
    print(
        "Attack wall times (s, test cases only): "
        + "; ".join(f"{name}: " + ", ".join(f"{a} {s}" for a, s in row.items()) for name, row in seconds.items())
    )
    print(json.dumps({name: {**row, "average_refusal": refusal[name]} for name, row in table.items()}))


if __name__ == "__main__":
    main()
