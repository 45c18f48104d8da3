"""Refusal table of training checkpoints on the held-out test splits (docs/results.md, trainer issue).

    python analyses/trainer_table.py CKPT [CKPT ...] [--n 64] [--max-new-tokens 32] [--fresh [dim|rdo]]

Each checkpoint is judged with its own saved directions: harmful refusal plain, with each direction
ablated alone and with all ablated; harmless and over-refusal refusal; first-token KL on harmless
prompts with all directions ablated. ``--fresh [dim|rdo]`` also plays the white-box attacker: it finds
a new direction on the checkpoint as it is now (the trainer's search and filters, no earlier direction
ablated) and reports harmful refusal with it ablated. Prints a markdown table and one JSON line per checkpoint.
"""

from __future__ import annotations

import argparse
import json

import mechrefusal
from mechrefusal import Ablate, data
from mechrefusal.core.provenance import versions
from mechrefusal.directions import FINDERS, Direction, DirectionSet, SelectionFilters
from mechrefusal.measure.evaluation import refusal_rate, refusal_rates
from mechrefusal.train.checkpoint import read_metadata
from mechrefusal.train.search import next_direction
from mechrefusal.train.settings import saved_settings


def fresh_direction(model: mechrefusal.Model, checkpoint: str, finder: str) -> Direction:
    """The direction the checkpoint uses now, found as the trainer searches (its filters) with ``finder``."""
    settings = saved_settings(read_metadata(checkpoint)["settings"])
    filters = SelectionFilters(max_kl=settings["search.max_kl"], min_induce=settings["search.min_induce"])
    return next_direction(model, DirectionSet(), finder=finder, filters=filters, dtype=settings["dtype"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--fresh",
        nargs="?",
        const="dim",
        choices=FINDERS.names(),
        default=None,
        metavar="FINDER",
        help="also ablate a direction found anew on each checkpoint (finder: dim (default) or rdo)",
    )
    args = parser.parse_args()
    print(
        "| checkpoint | harmful | single ablations (min) | all ablated | fresh direction ablated | harmless | "
        "over-refusal | KL all ablated |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        model = mechrefusal.load(checkpoint)
        rates = refusal_rates(model, model.directions, n=args.n, max_new_tokens=args.max_new_tokens)
        singles = [value for key, value in rates.items() if key.startswith("harmful, d")]
        single_text = f"{', '.join(f'{v:.0%}' for v in singles)} ({min(singles):.0%})" if singles else "-"
        every = rates.get("harmful, all ablated", singles[0] if singles else None)
        kl = rates.get("kl_harmless_all_ablated")
        fresh_text, fresh = "-", None
        if args.fresh:
            fresh = fresh_direction(model, checkpoint, args.fresh)
            rates["harmful, fresh ablated"] = refusal_rate(
                model,
                data.load("harmful", "test")[: args.n],
                intervention=Ablate(fresh),
                max_new_tokens=args.max_new_tokens,
                dtype="bfloat16",
            )
            fresh_text = (
                f"{rates['harmful, fresh ablated']:.0%} (layer {fresh.layer}, KL {fresh.provenance['kl']:.2f}"
                f"{'' if fresh.provenance['passed_filters'] else ', failed filters'})"
            )
        print(
            f"| {checkpoint} | {rates['harmful']:.0%} | {single_text} | {'-' if every is None else f'{every:.0%}'} | "
            f"{fresh_text} | {rates['harmless']:.0%} | {rates['overrefusal']:.0%} | "
            f"{'-' if kl is None else f'{kl:.3f}'} |"
        )
        fresh_summary = (
            None
            if fresh is None
            else {key: fresh.provenance[key] for key in ("bypass", "induce", "kl", "passed_filters")}
        )
        print(
            json.dumps(
                {
                    "checkpoint": checkpoint,
                    "rates": rates,
                    "fresh_direction": fresh_summary
                    and {"layer": fresh.layer, "position": fresh.position, **fresh_summary},
                    "n": args.n,
                    "max_new_tokens": args.max_new_tokens,
                    "versions": versions(),
                }
            )
        )


if __name__ == "__main__":
    main()
