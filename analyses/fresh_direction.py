"""Why the fresh direction wins (docs/results.md, adaptive-attack issue item 3), from an analysis report.

    python analyses/fresh_direction.py ANALYSIS_DIR

ANALYSIS_DIR is the ``--out`` of ``python -m mechrefusal.analyze``. For each analysed model
(`mechrefusal.analysis.fresh_direction`): a row per direction (the saved ones, then the fresh one) with its
layer and position, its cosine with the fresh direction, its single-ablation refusal and the harmful/harmless
separation (Cohen's d) of its projections; then the fresh direction's projection onto the saved directions'
span (its length is the cosine with that projection) and the angle to the span. Prints markdown and one JSON
line. Reads the report only: nothing is generated again.
"""

from __future__ import annotations

import argparse
import json

from mechrefusal.analysis.fresh_direction import diagnose_report
from mechrefusal.core.errors import MechrefusalError


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", metavar="ANALYSIS_DIR")
    args = parser.parse_args()
    try:
        diagnoses = diagnose_report(args.report)
    except MechrefusalError as error:
        parser.error(str(error))
    for diagnosis in diagnoses:
        print(
            f"\n{diagnosis.role} {diagnosis.model}: refusal {_percent(diagnosis.baseline_refusal)} plain, "
            f"{_percent(diagnosis.saved_ablated_refusal)} with every saved direction ablated\n"
        )
        print("| direction | layer, position | cosine with fresh | refusal, ablated alone | separation (Cohen's d) |")
        print("|---|---|---|---|---|")
        for row in (*diagnosis.saved, diagnosis.fresh):
            print(
                f"| {row.label} | {row.layer}, {row.position} | {row.cosine_with_fresh:.2f} | "
                f"{_percent(row.single_refusal)} | {row.separation:.2f} |"
            )
        if diagnosis.span_projection is None:
            print("\nNo saved directions: the fresh direction has no span to be compared with.")
        else:
            print(
                f"\nFresh direction's projection onto the span of the {len(diagnosis.saved)} saved direction(s): "
                f"length {diagnosis.span_projection:.3f} (= its cosine with the projection), "
                f"{diagnosis.angle_to_span:.1f}° from the span."
            )
    print(json.dumps({"report": args.report, "models": [diagnosis.to_dict() for diagnosis in diagnoses]}))


if __name__ == "__main__":
    main()
