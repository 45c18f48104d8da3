"""RDO against DIM on one model (docs/results.md, RDO issue): both found as the trainer searches.

    python analyses/finder_comparison.py CKPT [--n 32] [--max-new-tokens 32] [--rdo-variant lr=3e-3 ...]

DIM runs the trainer's search (64+64 train prompts, 16+16 val prompts, the checkpoint's selection
filters); RDO is anchored on that DIM direction (its layer and norm) with the default `RDOSettings`.
For each: layer, position, bypass and induce scores and first-token KL on harmless val prompts (the
selection's scores), wall time, and the judged harmful refusal on ``--n`` test prompts with it
ablated. Each ``--rdo-variant FIELD=VALUE[,FIELD=VALUE]`` adds a row: RDO from the same anchor with
those `RDOSettings` fields changed. For a timing that includes RDO's target generation, run with an empty cache:
``MECHREFUSAL_HOME=$(mktemp -d)`` (a checkpoint directory loads without the cache).
Prints a markdown table and one JSON line with the configuration and versions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import mechrefusal
from mechrefusal import Ablate, data
from mechrefusal.core.checkpoint_record import read_metadata
from mechrefusal.core.provenance import versions
from mechrefusal.directions import DirectionSet, RDOSettings, SelectionFilters
from mechrefusal.measure.evaluation import refusal_rate
from mechrefusal.train.search import N_SCORE, N_SEARCH, next_direction
from mechrefusal.train.settings import saved_settings


def rdo_variant(text: str) -> tuple[str, RDOSettings]:
    """``"lr=3e-3,retain_weight=4"`` -> ("rdo lr=3e-3,retain_weight=4", RDOSettings(lr=0.003, retain_weight=4.0))."""
    fields = {field.name: field.type for field in dataclasses.fields(RDOSettings)}
    changes = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in fields or not value:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not FIELD=VALUE for an RDOSettings field ({', '.join(fields)})."
            )
        changes[name] = value if fields[name] == "str" else float(value) if fields[name] == "float" else int(value)
    return f"rdo {text}", RDOSettings(**changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a trainer checkpoint (its selection filters are used)")
    parser.add_argument("--n", type=int, default=32, help="harmful test prompts judged with each direction ablated")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--rdo-variant",
        action="append",
        default=[],
        type=rdo_variant,
        metavar="FIELD=VALUE,...",
        help="also run RDO with these RDOSettings fields changed (repeatable)",
    )
    args = parser.parse_args()
    settings = saved_settings(read_metadata(args.checkpoint)["settings"])
    filters = SelectionFilters(max_kl=settings["search.max_kl"], min_induce=settings["search.min_induce"])
    model = mechrefusal.load(args.checkpoint)
    harmful_test = data.load("harmful", "test")[: args.n]
    plain = refusal_rate(model, harmful_test, max_new_tokens=args.max_new_tokens, dtype="bfloat16")
    started = time.perf_counter()
    anchor = next_direction(model, DirectionSet(), finder="dim", filters=filters, dtype=settings["dtype"])
    found_by = {"dim": (anchor, time.perf_counter() - started)}
    for name, rdo_settings in [("rdo", RDOSettings()), *args.rdo_variant]:
        started = time.perf_counter()
        found = next_direction(
            model,
            DirectionSet(),
            finder="rdo",
            filters=filters,
            dtype=settings["dtype"],
            dim=anchor,
            rdo_settings=rdo_settings,
            fallback=False,
        )
        found_by[name] = (found, time.perf_counter() - started)
    rows = {}
    for finder, (found, wall) in found_by.items():
        rate = refusal_rate(
            model, harmful_test, intervention=Ablate(found), max_new_tokens=args.max_new_tokens, dtype="bfloat16"
        )
        rdo = found.provenance.get("rdo", {})
        rows[finder] = {
            "layer": found.layer,
            "position": found.position,
            "wall_s": round(wall, 1),
            **{key: found.provenance[key] for key in ("bypass", "induce", "kl", "passed_filters")},
            "harmful_refusal_ablated": rate,
            "targets_s": rdo.get("targets_s"),
            "optimisation_s": rdo.get("search_s"),
            "best_step": rdo.get("best_step"),
            "cos_with_dim": float(found.unit @ anchor.unit),
            "rdo_settings": rdo.get("settings"),
        }
    print(f"Harmful refusal without ablation: {plain:.0%} ({args.n} test prompts)\n")
    print(
        "| finder | layer, position | bypass | induce | KL (harmless) | passed filters | harmful refusal, ablated | "
        "wall time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for finder, row in rows.items():
        extra = (
            ""
            if row["targets_s"] is None
            else f" (targets {row['targets_s']:.0f}, optimisation {row['optimisation_s']:.0f})"
        )
        print(
            f"| {finder} | {row['layer']}, {row['position']} | {row['bypass']:.2f} | {row['induce']:.2f} | "
            f"{row['kl']:.3f} | {row['passed_filters']} | {row['harmful_refusal_ablated']:.0%} | "
            f"{row['wall_s']:.0f}{extra} |"
        )
    print(
        json.dumps(
            {
                "checkpoint": args.checkpoint,
                "harmful_refusal": plain,
                "finders": rows,
                "n": args.n,
                "n_search": N_SEARCH,
                "n_score": N_SCORE,
                "filters": vars(filters),
                "max_new_tokens": args.max_new_tokens,
                "versions": versions(),
            }
        )
    )


if __name__ == "__main__":
    main()
