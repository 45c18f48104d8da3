"""Why the fresh direction wins (docs/results.md, adaptive-attack issue item 3), from an analysis report.

    python analyses/fresh_direction.py ANALYSIS_DIR [--ablate-parts N]

ANALYSIS_DIR is the ``--out`` of ``python -m mechrefusal.analyze``. For each analysed model
(`mechrefusal.analysis.fresh_direction`): a row per direction (the saved ones, then the fresh one) with its
layer and position, its cosine with the fresh direction, its single-ablation refusal and the harmful/harmless
separation (Cohen's d) of its projections; then the fresh direction's projection onto the saved directions'
span (its length is the cosine with that projection) and the angle to the span. Prints markdown and one JSON
line. Reads the report only, unless ``--ablate-parts N``: then it loads each model and judges refusal on its
first N harmful test prompts (the analysis's own, with its judge, dtype and tokens) with the fresh
direction's part inside the saved span ablated, and with its part outside ablated.
"""

from __future__ import annotations

import argparse
import json

import mechrefusal
from mechrefusal import data
from mechrefusal.analysis.fresh_direction import diagnose_report, fresh_parts
from mechrefusal.analysis.report import Report
from mechrefusal.core.directions import DirectionSet
from mechrefusal.core.errors import MechrefusalError, SettingError
from mechrefusal.interventions import Ablate
from mechrefusal.measure.evaluation import judged_completions
from mechrefusal.measure.judges import JUDGES


def part_refusals(out: str, role: str, spec: str, n: int) -> dict[str, float]:
    """Judged refusal on the first ``n`` harmful test prompts (the analysis's own: at most its ``n_test``) with
    each part of the fresh direction ablated."""
    settings = Report.load(out).data["settings"]
    if n > settings["n_test"]:
        raise SettingError(
            f"--ablate-parts {n} exceeds the {settings['n_test']} test prompts the analysis judged; pass at most that."
        )
    model = mechrefusal.load(spec)
    parts = fresh_parts(DirectionSet.load(f"{out}/{role}_directions.safetensors", d_model=model.d_model))
    judge = JUDGES.get(settings["judge"])()
    return {
        part: judged_completions(
            model,
            data.load("harmful", "test")[:n],
            intervention=Ablate(direction),
            judge=judge,
            max_new_tokens=settings["max_new_tokens"],
            dtype=settings["dtype"],
        ).rate
        for part, direction in parts.items()
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", metavar="ANALYSIS_DIR")
    parser.add_argument(
        "--ablate-parts",
        type=int,
        default=0,
        metavar="N",
        help="also judge N harmful test prompts with each part of the fresh direction (in, out of the span) ablated",
    )
    args = parser.parse_args()
    parts: dict[str, dict[str, float]] = {}
    try:
        diagnoses = diagnose_report(args.report)
        if args.ablate_parts:
            parts = {
                d.role: part_refusals(args.report, d.role, d.model, args.ablate_parts)
                for d in diagnoses
                if d.span_projection is not None
            }
    except MechrefusalError as error:
        parser.error(str(error))
    for diagnosis in diagnoses:
        print(
            f"\n{diagnosis.role} {diagnosis.model}: refusal {_percent(diagnosis.baseline_refusal)} plain, "
            + (
                "every saved direction ablated together not judged by the report\n"
                if diagnosis.saved_ablated_refusal is None
                else f"{diagnosis.saved_ablated_refusal:.0%} with every saved direction ablated\n"
            )
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
        if diagnosis.role in parts:
            print(
                f"Refusal on the first {args.ablate_parts} harmful test prompts with the fresh direction's part "
                + ", ".join(f"{part} ablated: {rate:.0%}" for part, rate in parts[diagnosis.role].items())
                + "."
            )
    models = [{**diagnosis.to_dict(), "part_refusals": parts.get(diagnosis.role)} for diagnosis in diagnoses]
    print(json.dumps({"report": args.report, "ablate_parts_n": args.ablate_parts or None, "models": models}))


if __name__ == "__main__":
    main()
