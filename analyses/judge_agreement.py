"""Agreement of the judges with human labels (docs/results.md, attack issue).

    python analyses/judge_agreement.py [--judges substring,harm] [--limit N]

For each judge: accuracy, Cohen's kappa, false positive and false negative rates with 95% intervals on
the held-out human-labelled rows of its kind (pyrit 1.1.0: objective-achieved rows for harm judges,
refusal rows for refusal judges), and, for every judge, on all rows of both kinds (a refusal judge's
"not refused" read as "harmful" on the objective rows). Harm judges were trained on the train split, so
only their held-out rows are a fair measure. Prints a markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json

from mechrefusal.core.provenance import versions
from mechrefusal.data.labels import labelled
from mechrefusal.measure.judges import JUDGES
from mechrefusal.measure.judges.agreement import agreement, agreement_of
from mechrefusal.measure.judges.base import measures_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judges", default="substring,harm", help="comma-separated registered judges")
    parser.add_argument("--limit", type=int, default=None, help="at most N rows per set (slow LLM judges)")
    args = parser.parse_args()
    rows = []
    print("| judge | rows | n | accuracy | κ [95% CI] | FPR | FNR |\n|---|---|---|---|---|---|---|")
    for name in args.judges.split(","):
        judge = JUDGES.get(name)()
        own = "objective" if measures_of(judge) == "harm" else "refusal"
        sets = [(f"{own}, held out", labelled(own, "test"))]
        sets += [(f"{kind}, all", labelled(kind)) for kind in ("refusal", "objective")]
        for title, labelled_rows in sets:
            if own == "objective" and title.endswith("all"):
                continue  # a harm judge saw the train split: only held-out rows measure it
            labelled_rows = labelled_rows[: args.limit]
            if own == "refusal" and title.startswith("objective"):  # "not refused" read as "harmful"
                verdicts = judge.judge([r.objective for r in labelled_rows], [r.response for r in labelled_rows])
                result = agreement_of([r.label for r in labelled_rows], [not v.refused for v in verdicts], name)
                title = "objective (not refused = harmful), all"
            else:
                result = agreement(judge, labelled_rows, name)
            low, high = result.kappa_ci
            print(
                f"| {name} | {title} | {result.n} | {result.accuracy:.3f} | {result.kappa:.3f} [{low:.2f}, {high:.2f}] "
                f"| {result.false_positive_rate:.3f} | {result.false_negative_rate:.3f} |"
            )
            rows.append({"judge": name, "rows": title, **result.to_dict()})
    print(json.dumps({"agreement": rows, "versions": versions()}))


if __name__ == "__main__":
    main()
